"""One contract, every backend: each storage rule is written once here."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from msgspec.structs import replace

from opentasks.domain.limits import Limits
from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.queue import Queue, QueueState, RateLimits, resolve_queue
from opentasks.domain.task import HttpRequest, Task, TaskDraft, new_task
from opentasks.errors import AlreadyExists, FailedPrecondition, NotFound
from opentasks.storage.base import AttemptResult, Store, Windows
from opentasks.storage.memory import MemoryStore
from tests.contract.conftest import StoreFactory

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LOCATION = LocationName("p", "us-central1")
Q = QueueName("p", "us-central1", "q")
WINDOWS = Windows(task_tombstone_until=T0 + timedelta(hours=1), queue_tombstone_until=T0 + timedelta(days=7))


def queue(name: QueueName = Q, **fields: object) -> Queue:
    return resolve_queue(Queue(name, **fields), Limits())  # type: ignore[arg-type]


def task(task_id: str, *, named: bool = True, at: datetime = T0, body: bytes = b"", q: QueueName = Q) -> Task:
    draft = TaskDraft(
        name=f"{q}/tasks/{task_id}" if named else "",
        http_request=HttpRequest(url="https://example.com/h", body=body),
    )
    return new_task(draft, q, at, task_id, Limits())


async def test_queue_create_get_and_duplicate(store: Store) -> None:
    created = await store.create_queue(queue(), T0)
    assert await store.get_queue(Q) == created
    with pytest.raises(AlreadyExists, match="Queue already exists"):
        await store.create_queue(queue(), T0)
    with pytest.raises(NotFound, match="Queue does not exist"):
        await store.get_queue(QueueName("p", "us-central1", "other"))


async def test_list_queues_pages_in_id_order_and_filters_state(store: Store) -> None:
    for queue_id in ("c", "a", "b", "d"):
        await store.create_queue(queue(QueueName("p", "us-central1", queue_id)), T0)
    await store.create_queue(queue(QueueName("p", "europe-west1", "x")), T0)
    await store.update_queue(
        QueueName("p", "us-central1", "b"), lambda q: replace(q, state=QueueState.PAUSED), T0
    )  # type: ignore[arg-type]
    names = [q.name.queue_id for q in await store.list_queues(LOCATION, state=None, after="", limit=10)]
    assert names == ["a", "b", "c", "d"]
    page = await store.list_queues(LOCATION, state=None, after="b", limit=1)
    assert [q.name.queue_id for q in page] == ["c"]
    paused = await store.list_queues(LOCATION, state=QueueState.PAUSED, after="", limit=10)
    assert [q.name.queue_id for q in paused] == ["b"]


async def test_update_queue_is_an_upsert(store: Store) -> None:
    seen: list[Queue | None] = []

    def change(current: Queue | None) -> Queue:
        seen.append(current)
        return queue(rate_limits=RateLimits(max_dispatches_per_second=7))

    first = await store.update_queue(Q, change, T0)
    assert seen == [None]
    assert (await store.get_queue(Q)) == first
    await store.update_queue(Q, change, T0)
    assert seen[1] == first


async def test_failed_change_changes_nothing(store: Store) -> None:
    await store.create_queue(queue(), T0)

    def broken(current: Queue | None) -> Queue:
        raise NotFound("nope")

    with pytest.raises(NotFound, match="nope"):
        await store.update_queue(Q, broken, T0)
    assert await store.get_queue(Q) == queue()


async def test_deleted_queue_name_is_reserved_for_the_window(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await store.create_task(task("t1"), T0)
    await store.delete_queue(Q, T0, WINDOWS)
    with pytest.raises(NotFound, match="Queue does not exist"):
        await store.get_queue(Q)
    with pytest.raises(NotFound, match="Requested entity was not found"):
        await store.delete_queue(Q, T0, WINDOWS)
    message = "existed too recently"
    with pytest.raises(FailedPrecondition, match=message):
        await store.create_queue(queue(), T0 + timedelta(days=6))
    with pytest.raises(FailedPrecondition, match=message):
        await store.update_queue(Q, lambda _: queue(), T0 + timedelta(days=6))
    await store.create_queue(queue(), T0 + timedelta(days=7, seconds=1))
    page = await store.list_tasks(Q, after=0, limit=10)
    assert page.tasks == []  # the old queue's tasks went with it


async def test_pause_of_missing_queue_is_not_found_even_inside_window(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await store.delete_queue(Q, T0, WINDOWS)

    def pause(current: Queue | None) -> Queue:
        if current is None:
            raise NotFound("Queue does not exist.")
        return current

    with pytest.raises(NotFound):
        await store.update_queue(Q, pause, T0)


async def test_task_create_get_and_body_round_trip(store: Store) -> None:
    await store.create_queue(queue(), T0)
    created = await store.create_task(task("t1", body=b"\x00payload\xff"), T0)
    got = await store.get_task(created.name, T0)
    assert got == created
    assert got.http_request is not None and got.http_request.body == b"\x00payload\xff"


async def test_task_in_missing_queue(store: Store) -> None:
    with pytest.raises(NotFound, match="Queue does not exist"):
        await store.create_task(task("t1"), T0)


async def test_named_task_deduplicates_live_and_tombstoned(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await store.create_task(task("t1"), T0)
    with pytest.raises(AlreadyExists, match="Requested entity already exists"):
        await store.create_task(task("t1"), T0)
    await store.delete_task(TaskName(Q, "t1"), T0, WINDOWS)
    with pytest.raises(NotFound, match="existed recently"):
        await store.get_task(TaskName(Q, "t1"), T0 + timedelta(minutes=59))
    with pytest.raises(AlreadyExists):
        await store.create_task(task("t1"), T0 + timedelta(minutes=59))
    later = T0 + timedelta(hours=1, seconds=1)
    with pytest.raises(NotFound, match="Requested entity was not found"):
        await store.get_task(TaskName(Q, "t1"), later)
    await store.create_task(task("t1", at=later), later)


async def test_generated_names_leave_no_tombstone(store: Store) -> None:
    await store.create_queue(queue(), T0)
    created = await store.create_task(task("123", named=False), T0)
    await store.delete_task(created.name, T0, WINDOWS)
    with pytest.raises(NotFound, match="Requested entity was not found"):
        await store.get_task(created.name, T0)


async def test_same_task_id_in_two_queues(store: Store) -> None:
    other = QueueName("p", "us-central1", "other")
    await store.create_queue(queue(), T0)
    await store.create_queue(queue(other), T0)
    await store.create_task(task("t1"), T0)
    await store.create_task(task("t1", q=other), T0)


async def test_list_tasks_pages_in_creation_order(store: Store) -> None:
    await store.create_queue(queue(), T0)
    ids = [f"t{i}" for i in range(5)]
    for task_id in ids:
        await store.create_task(task(task_id), T0)
    await store.delete_task(TaskName(Q, "t2"), T0, WINDOWS)
    first = await store.list_tasks(Q, after=0, limit=2)
    assert [t.name.task_id for t in first.tasks] == ["t0", "t1"]
    assert first.next_cursor is not None
    second = await store.list_tasks(Q, after=first.next_cursor, limit=2)
    assert [t.name.task_id for t in second.tasks] == ["t3", "t4"]
    assert second.next_cursor is None


async def test_purge_removes_tasks_accepted_before_it_and_reserves_names(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await store.create_task(task("old"), T0)
    await store.create_task(task("old-generated", named=False), T0 + timedelta(microseconds=10))
    purge_at = T0 + timedelta(microseconds=20)
    purged = await store.purge_queue(Q, purge_at, WINDOWS)
    assert purged.purge_time == purge_at
    assert (await store.get_queue(Q)).purge_time == purge_at
    await store.create_task(task("new", at=purge_at), purge_at)  # same instant: not before the purge
    assert [t.name.task_id for t in (await store.list_tasks(Q, after=0, limit=10)).tasks] == ["new"]
    with pytest.raises(AlreadyExists):
        await store.create_task(task("old", at=purge_at), purge_at)


async def test_concurrent_creates_each_get_their_own_outcome(store: Store) -> None:
    """Group commit must not let one failing write undo or fail its neighbours."""
    await store.create_queue(queue(), T0)
    names = [f"t{i % 50}" for i in range(200)]  # every name four times
    results = await asyncio.gather(*(store.create_task(task(n), T0) for n in names), return_exceptions=True)
    created = [r for r in results if isinstance(r, Task)]
    duplicates = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(created) == 50 and len(duplicates) == 150
    page = await store.list_tasks(Q, after=0, limit=1000)
    assert sorted(t.name.task_id for t in page.tasks) == sorted({*names})


async def test_state_survives_reopening(store_factory: StoreFactory) -> None:
    first = store_factory()
    if isinstance(first, MemoryStore):
        pytest.skip("the memory store keeps nothing by design")
    await first.open()
    await first.create_queue(queue(), T0)
    await first.create_task(task("kept", body=b"b"), T0)
    await first.delete_task(TaskName(Q, "kept"), T0, WINDOWS)
    await first.create_task(task("live"), T0)
    await first.close()
    second = store_factory()
    await second.open()
    try:
        assert (await second.get_task(TaskName(Q, "live"), T0)).name.task_id == "live"
        with pytest.raises(NotFound, match="existed recently"):
            await second.get_task(TaskName(Q, "kept"), T0)
    finally:
        await second.close()


async def test_list_locations_of_a_project(store: Store) -> None:
    for project, location in (("p", "us-central1"), ("p", "europe-west1"), ("p2", "asia-east1")):
        await store.create_queue(queue(QueueName(project, location, "q")), T0)
    assert await store.list_locations("p") == ["europe-west1", "us-central1"]
    assert await store.list_locations("nobody") == []


async def test_queue_yaml_queues_reserve_task_names_for_their_own_window(store: Store) -> None:
    """Deleted, purged and finished names: each path picks the window by the queue's origin."""
    await store.create_queue(queue(from_queue_yaml=True), T0)
    windows = Windows(T0 + timedelta(hours=1), T0 + timedelta(days=7), T0 + timedelta(days=9))
    later = T0 + timedelta(days=2)  # past the ordinary window, inside the queue.yaml one
    await store.create_task(task("deleted"), T0)
    await store.delete_task(TaskName(Q, "deleted"), T0, windows)
    await store.create_task(task("purged"), T0)
    await store.purge_queue(Q, T0 + timedelta(seconds=1), windows)
    await store.create_task(task("finished", at=T0 + timedelta(seconds=2)), T0 + timedelta(seconds=2))
    [claimed] = (await store.claim_due_tasks(Q, T0 + timedelta(seconds=2), 10, timedelta(seconds=30))).tasks
    await store.finish_attempts([AttemptResult(claimed.name, claimed.dispatch_count, None, True)], windows)
    for task_id in ("deleted", "purged", "finished"):
        with pytest.raises(AlreadyExists):
            await store.create_task(task(task_id, at=later), later)


async def test_opening_again_migrates_nothing_and_keeps_everything(store_factory: StoreFactory) -> None:
    """Migrations are idempotent: a store opened twice (and a third time) over the same data."""
    for attempt in range(3):
        opened = store_factory()
        await opened.open()
        try:
            if attempt == 0 or isinstance(opened, MemoryStore):
                await opened.create_queue(queue(), T0)
                await opened.create_task(task("kept"), T0)
            assert [q.name for q in await opened.all_queues()] == [Q]
            assert (await opened.get_task(TaskName(Q, "kept"), T0)).name.task_id == "kept"
        finally:
            await opened.close()


async def test_concurrent_creates_in_missing_queues_and_of_reserved_names(store: Store) -> None:
    """Creates stored together (group commit) still answer one by one: a missing queue, a
    reserved name and a repeated one fail alone, and their neighbours are stored."""
    await store.create_queue(queue(), T0)
    await store.create_task(task("reserved"), T0)
    await store.delete_task(TaskName(Q, "reserved"), T0, WINDOWS)
    missing = QueueName("p", "us-central1", "missing")
    creates = [
        task("a"),
        task("x", q=missing),
        task("reserved"),
        task("b"),
        task("x", q=missing),
        task("a"),
        task("c", named=False),
    ]
    results = await asyncio.gather(*(store.create_task(t, T0) for t in creates), return_exceptions=True)
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Task", "NotFound", "AlreadyExists", "Task", "NotFound", "AlreadyExists", "Task"]
    page = await store.list_tasks(Q, after=0, limit=10)
    assert [t.name.task_id for t in page.tasks] == ["a", "b", "c"]  # in the order they were sent
