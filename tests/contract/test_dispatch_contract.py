"""The store's dispatch operations: claims, leases, fenced results. One contract, every backend."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from msgspec.structs import replace

from opentasks.domain.attempt import after_attempt
from opentasks.domain.lease import lease_expiry
from opentasks.domain.limits import LATEST_TIME, Limits
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import Queue, RetryConfig, resolve_queue
from opentasks.domain.task import AppEngineHttpRequest, AttemptOutcome, HttpRequest, Task, TaskDraft, new_task
from opentasks.errors import AlreadyExists, NotFound
from opentasks.storage.base import AttemptResult, Store, Windows
from opentasks.storage.memory import MemoryStore
from tests.contract.conftest import StoreFactory, shares_database

T0 = datetime(2030, 1, 1, tzinfo=UTC)
Q = QueueName("p", "l", "q")
WINDOWS = Windows(task_tombstone_until=T0 + timedelta(hours=1), queue_tombstone_until=T0 + timedelta(days=7))
RETRY = RetryConfig(
    max_attempts=5,
    max_retry_duration=timedelta(0),
    min_backoff=timedelta(seconds=10),
    max_backoff=timedelta(seconds=100),
    max_doublings=3,
)


# With the tasks' 30 s dispatch deadline, a claim's lease ends a minute after it.
DEADLINE = timedelta(seconds=30)
GRACE = timedelta(seconds=30)


async def add(store: Store, task_id: str, at: timedelta = timedelta(0), *, named: bool = True) -> Task:
    draft = TaskDraft(
        name=f"{Q}/tasks/{task_id}" if named else "",
        http_request=HttpRequest(url="https://example.com/x", body=b"b"),
        dispatch_deadline=DEADLINE,
        schedule_time=T0 + at,
    )
    return await store.create_task(new_task(draft, Q, T0, task_id, Limits()), T0)


@pytest.fixture
async def queue(store: Store) -> Queue:
    return await store.create_queue(resolve_queue(Queue(Q), Limits()), T0)


async def test_claims_due_tasks_in_schedule_then_creation_order(store: Store, queue: Queue) -> None:
    await add(store, "later", timedelta(seconds=5))
    await add(store, "first-a")
    await add(store, "first-b")
    await add(store, "future", timedelta(hours=1))
    claim = await store.claim_due_tasks(Q, T0 + timedelta(seconds=5), 10, GRACE)
    assert [t.name.task_id for t in claim.tasks] == ["first-a", "first-b", "later"]
    assert claim.next_due == T0 + timedelta(seconds=5, minutes=1)  # the leases end before "future"
    task = claim.tasks[0]
    assert task.dispatch_count == 1
    assert task.first_attempt is not None and task.first_attempt.dispatch_time == T0 + timedelta(seconds=5)
    assert task.last_attempt is not None and task.last_attempt.schedule_time == T0
    stored = await store.get_task(task.name, T0)
    assert stored.dispatch_count == 1 and stored.schedule_time == T0
    assert stored.http_request is not None and stored.http_request.body == b"b"


async def test_claim_respects_limit_and_hides_claimed_tasks_until_lease_ends(
    store: Store, queue: Queue
) -> None:
    for i in range(3):
        await add(store, f"t{i}")
    first = await store.claim_due_tasks(Q, T0, 2, GRACE)
    assert [t.name.task_id for t in first.tasks] == ["t0", "t1"]
    assert first.next_due == T0
    second = await store.claim_due_tasks(Q, T0, 10, GRACE)
    assert [t.name.task_id for t in second.tasks] == ["t2"]
    assert (await store.claim_due_tasks(Q, T0 + timedelta(seconds=59), 10, GRACE)).tasks == []
    again = await store.claim_due_tasks(Q, T0 + timedelta(minutes=1), 10, GRACE)
    assert sorted(t.name.task_id for t in again.tasks) == ["t0", "t1", "t2"]
    assert all(t.dispatch_count == 2 for t in again.tasks)


async def test_each_lease_follows_its_tasks_own_deadline(store: Store, queue: Queue) -> None:
    """The visibility timeout is a rule of the task's row: claim time + dispatch deadline + grace,
    10 minutes for an App Engine task without a deadline, clamped to the latest time."""
    await add(store, "http")  # 30 s deadline
    engine = TaskDraft(name=f"{Q}/tasks/engine", app_engine_http_request=AppEngineHttpRequest())
    await store.create_task(new_task(engine, Q, T0, "engine", Limits()), T0)
    claimed = {t.name.task_id: t for t in (await store.claim_due_tasks(Q, T0, 10, GRACE)).tasks}
    assert claimed["engine"].dispatch_deadline is None
    assert lease_expiry(claimed["engine"], T0, GRACE) == T0 + timedelta(minutes=10, seconds=30)
    assert [
        t.name.task_id for t in (await store.claim_due_tasks(Q, T0 + timedelta(minutes=1), 10, GRACE)).tasks
    ] == ["http"]
    just_before = T0 + timedelta(minutes=10, seconds=30) - timedelta(microseconds=1)
    assert (await store.claim_due_tasks(Q, just_before, 10, GRACE)).next_due == T0 + timedelta(
        minutes=10, seconds=30
    )
    again = await store.claim_due_tasks(Q, T0 + timedelta(minutes=10, seconds=30), 10, GRACE)
    assert [t.name.task_id for t in again.tasks] == ["engine"]
    last = await store.claim_task(TaskName(Q, "engine"), LATEST_TIME - timedelta(minutes=1), GRACE)
    assert lease_expiry(last, LATEST_TIME - timedelta(minutes=1), GRACE) == LATEST_TIME


async def test_empty_or_missing_queue(store: Store, queue: Queue) -> None:
    assert await store.claim_due_tasks(Q, T0, 10, GRACE) == type(
        await store.claim_due_tasks(Q, T0, 1, GRACE)
    )([], None)
    missing = await store.claim_due_tasks(QueueName("p", "l", "none"), T0, 10, GRACE)
    assert (missing.tasks, missing.next_due) == ([], None)


async def test_success_deletes_and_reserves_the_name(store: Store, queue: Queue) -> None:
    await add(store, "ok")
    claimed = (await store.claim_due_tasks(Q, T0, 1, GRACE)).tasks[0]
    await store.finish_attempts([AttemptResult(claimed.name, claimed.dispatch_count, None)], WINDOWS)
    with pytest.raises(NotFound, match="existed recently"):
        await store.get_task(claimed.name, T0)
    with pytest.raises(AlreadyExists):
        await add(store, "ok")


async def test_failure_reschedules_and_the_task_falls_due_again(store: Store, queue: Queue) -> None:
    await add(store, "flaky")
    claimed = (await store.claim_due_tasks(Q, T0, 1, GRACE)).tasks[0]
    failed_at = T0 + timedelta(seconds=2)
    after = after_attempt(claimed, AttemptOutcome(http_status=503), failed_at, RETRY)
    assert after is not None
    await store.finish_attempts([AttemptResult(claimed.name, 1, after)], WINDOWS)
    stored = await store.get_task(claimed.name, failed_at)
    assert stored.schedule_time == failed_at + timedelta(seconds=10)
    assert (stored.dispatch_count, stored.response_count) == (1, 1)
    assert stored.previous_outcome == AttemptOutcome(http_status=503)
    assert stored.last_attempt is not None and stored.last_attempt.response_status is not None
    assert (await store.claim_due_tasks(Q, failed_at + timedelta(seconds=9), 5, GRACE)).tasks == []
    retried = (await store.claim_due_tasks(Q, failed_at + timedelta(seconds=10), 5, GRACE)).tasks
    assert [(t.name.task_id, t.dispatch_count) for t in retried] == [("flaky", 2)]


async def test_results_of_stale_claims_are_dropped(store: Store, queue: Queue) -> None:
    await add(store, "t")
    first = (await store.claim_due_tasks(Q, T0, 1, GRACE)).tasks[0]
    second = await store.claim_task(first.name, T0 + timedelta(seconds=1), GRACE)  # RunTask
    assert second.dispatch_count == 2
    await store.finish_attempts([AttemptResult(first.name, 1, None)], WINDOWS)  # the older claim reports
    assert (await store.get_task(first.name, T0)).dispatch_count == 2  # still there
    await store.finish_attempts([AttemptResult(first.name, 2, None)], WINDOWS)
    with pytest.raises(NotFound):
        await store.get_task(first.name, T0)


async def test_results_for_deleted_tasks_are_dropped(store: Store, queue: Queue) -> None:
    await add(store, "t", named=False)
    claimed = (await store.claim_due_tasks(Q, T0, 1, GRACE)).tasks[0]
    await store.delete_task(claimed.name, T0, WINDOWS)
    rescheduled = replace(claimed, schedule_time=T0 + timedelta(seconds=1))
    await store.finish_attempts([AttemptResult(claimed.name, 1, rescheduled)], WINDOWS)
    assert (await store.list_tasks(Q, after=0, limit=10)).tasks == []


async def test_claim_task_ignores_schedule_and_lease(store: Store, queue: Queue) -> None:
    future = await add(store, "future", timedelta(hours=2))
    claimed = await store.claim_task(future.name, T0, GRACE)
    assert claimed.dispatch_count == 1
    with pytest.raises(NotFound, match="Requested entity was not found"):
        await store.claim_task(TaskName(Q, "missing"), T0, GRACE)


async def test_release_leases_makes_claimed_tasks_due_again(store: Store, queue: Queue) -> None:
    if shares_database(store):
        pytest.skip("a shared database releases no lease (test_postgres_contract.py checks that)")
    await add(store, "a")
    await add(store, "b", timedelta(hours=1))
    await store.claim_due_tasks(Q, T0, 10, GRACE)
    assert await store.release_leases() == 1
    again = await store.claim_due_tasks(Q, T0, 10, GRACE)
    assert [(t.name.task_id, t.dispatch_count) for t in again.tasks] == [("a", 2)]


async def test_all_queues(store: Store, queue: Queue) -> None:
    assert [q.name for q in await store.all_queues()] == [Q]


async def test_progress_survives_reopening(store_factory: StoreFactory) -> None:
    first = store_factory()
    if isinstance(first, MemoryStore):
        pytest.skip("the memory store keeps nothing by design")
    await first.open()
    await first.create_queue(resolve_queue(Queue(Q), Limits()), T0)
    await add(first, "t")
    claimed = (await first.claim_due_tasks(Q, T0, 1, GRACE)).tasks[0]
    after = after_attempt(claimed, AttemptOutcome(http_status=500), T0, RETRY)
    await first.finish_attempts([AttemptResult(claimed.name, 1, after)], WINDOWS)
    await first.close()
    second = store_factory()
    await second.open()
    try:
        assert await second.get_task(claimed.name, T0) == after
    finally:
        await second.close()


async def test_concurrent_claimers_never_take_the_same_task(
    store_factory: StoreFactory, store: Store
) -> None:
    """Two claimers at once (two nodes on a shared database; one store stands in for both on
    the exclusive backends): every task is claimed exactly once."""
    await store.create_queue(resolve_queue(Queue(Q), Limits()), T0)
    for index in range(120):
        await add(store, f"t{index:03}", named=index % 2 == 0)
    other = store_factory() if shares_database(store) else store
    if other is not store:
        await other.open()
    try:
        seen: list[str] = []
        for _ in range(4):
            first, second = await asyncio.gather(
                store.claim_due_tasks(Q, T0, 25, GRACE), other.claim_due_tasks(Q, T0, 25, GRACE)
            )
            mine = [t.name.task_id for t in first.tasks]
            theirs = [t.name.task_id for t in second.tasks]
            assert not set(mine) & set(theirs)
            seen += mine + theirs
        rest = await store.claim_due_tasks(Q, T0, 200, GRACE)
        seen += [t.name.task_id for t in rest.tasks]
    finally:
        if other is not store:
            await other.close()
    assert sorted(seen) == [f"t{index:03}" for index in range(120)]
    assert all(t.dispatch_count == 1 for t in rest.tasks)


async def test_a_retry_from_an_expired_lease_is_dropped(store: Store, queue: Queue) -> None:
    """The lease ended and the task was claimed again: the first attempt's late failure must
    neither reschedule the task nor overwrite the second attempt's progress."""
    await add(store, "t")
    first = (await store.claim_due_tasks(Q, T0, 1, GRACE)).tasks[0]
    lease_end = T0 + DEADLINE + GRACE
    second = (await store.claim_due_tasks(Q, lease_end, 1, GRACE)).tasks[0]
    assert (first.dispatch_count, second.dispatch_count) == (1, 2)
    late = after_attempt(first, AttemptOutcome(http_status=500), lease_end + timedelta(seconds=1), RETRY)
    assert late is not None
    await store.finish_attempts([AttemptResult(first.name, first.dispatch_count, late)], WINDOWS)
    stored = await store.get_task(first.name, lease_end)
    assert (stored.dispatch_count, stored.response_count, stored.schedule_time) == (2, 0, T0)
    assert (await store.claim_due_tasks(Q, late.schedule_time, 1, GRACE)).tasks == []  # still leased
    done = after_attempt(second, AttemptOutcome(http_status=500), lease_end, RETRY)
    await store.finish_attempts([AttemptResult(second.name, second.dispatch_count, done)], WINDOWS)
    assert (await store.get_task(first.name, lease_end)).response_count == 1
