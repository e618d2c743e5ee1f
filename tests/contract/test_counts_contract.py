"""The store's task counts (insights): kept as tasks come and go, never by scanning. Every backend."""

from datetime import UTC, datetime, timedelta

from msgspec.structs import replace

from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue, resolve_queue
from opentasks.domain.task import HttpRequest, Task, TaskDraft, new_task
from opentasks.storage.base import AttemptResult, Store, TaskCounts, Windows
from tests.contract.conftest import StoreFactory

T0 = datetime(2030, 1, 1, tzinfo=UTC)
Q = QueueName("p", "l", "q")
EMPTY = QueueName("p", "l", "empty")
WINDOWS = Windows(task_tombstone_until=T0 + timedelta(hours=1), queue_tombstone_until=T0 + timedelta(days=7))
SECOND = timedelta(seconds=1)


# With the tasks' 30 s dispatch deadline, a claim's lease ends a minute after it.
DEADLINE = timedelta(seconds=30)
GRACE = timedelta(seconds=30)


async def add(store: Store, task_id: str, at: timedelta, *, queue: QueueName = Q) -> Task:
    draft = TaskDraft(
        name=f"{queue}/tasks/{task_id}",
        http_request=HttpRequest(url="https://example.com/x"),
        dispatch_deadline=DEADLINE,
        schedule_time=T0 + at,
    )
    return await store.create_task(new_task(draft, queue, T0, task_id, Limits()), T0)


async def make_queues(store: Store) -> None:
    for name in (Q, EMPTY):
        await store.create_queue(resolve_queue(Queue(name), Limits()), T0)


async def test_counts_follow_creates_claims_retries_deletes_and_purges(store: Store) -> None:
    await make_queues(store)
    for task_id, at in (("a", 0), ("b", 10), ("c", 3600), ("d", 0)):
        await add(store, task_id, at * SECOND)
    assert await store.task_counts(T0) == {Q: TaskCounts(4, 2, T0), EMPTY: TaskCounts()}
    assert (await store.task_counts(T0 + 20 * SECOND))[Q] == TaskCounts(4, 1, T0)

    claim = await store.claim_due_tasks(Q, T0 + 20 * SECOND, 10, GRACE)
    assert sorted(t.name.task_id for t in claim.tasks) == ["a", "b", "d"]
    assert (await store.task_counts(T0 + 20 * SECOND))[Q] == TaskCounts(4, 1, T0)  # claimed tasks are due

    by_id = {t.name.task_id: t for t in claim.tasks}
    retried = replace(by_id["b"], schedule_time=T0 + timedelta(hours=2))
    await store.finish_attempts(
        [AttemptResult(by_id["a"].name, 1, None), AttemptResult(by_id["b"].name, 1, retried)], WINDOWS
    )
    assert (await store.task_counts(T0 + 20 * SECOND))[Q] == TaskCounts(3, 2, T0)

    await store.delete_task(by_id["d"].name, T0, WINDOWS)
    assert (await store.task_counts(T0 + 20 * SECOND))[Q] == TaskCounts(2, 2, T0 + timedelta(hours=1))
    assert (await store.task_counts(T0 + timedelta(hours=3)))[Q] == TaskCounts(2, 0, T0 + timedelta(hours=1))

    await store.purge_queue(Q, T0 + timedelta(hours=3), WINDOWS)
    assert await store.task_counts(T0 + timedelta(hours=3)) == {Q: TaskCounts(), EMPTY: TaskCounts()}


async def test_counts_of_one_queue_and_of_deleted_queues(store: Store) -> None:
    await make_queues(store)
    await add(store, "x", 5 * SECOND)
    await add(store, "y", 0 * SECOND, queue=EMPTY)
    assert await store.task_counts(T0, Q) == {Q: TaskCounts(1, 1, T0 + 5 * SECOND)}
    assert await store.task_counts(T0, QueueName("p", "l", "missing")) == {}
    await store.delete_queue(EMPTY, T0, WINDOWS)
    assert await store.task_counts(T0) == {Q: TaskCounts(1, 1, T0 + 5 * SECOND)}


async def test_counts_of_a_time_asked_before_the_last_one_stay_sane(store: Store) -> None:
    """A backend may answer from a horizon that only moves forward: never a negative count."""
    await make_queues(store)
    await add(store, "x", 5 * SECOND)
    await store.task_counts(T0 + 10 * SECOND)
    counts = (await store.task_counts(T0))[Q]
    assert counts.tasks == 1 and 0 <= counts.scheduled <= 1


async def test_counts_survive_reopening(store_factory: StoreFactory) -> None:
    store = store_factory()
    await store.open()
    await make_queues(store)
    for index in range(5):
        await add(store, f"t{index}", index * SECOND)
    before = await store.task_counts(T0 + 2 * SECOND)
    await store.close()
    reopened = store_factory()
    await reopened.open()
    try:
        after = await reopened.task_counts(T0 + 2 * SECOND)
        if before[Q].tasks and after.get(Q, TaskCounts()).tasks:  # persistent backends keep them
            assert after == before == {Q: TaskCounts(5, 2, T0), EMPTY: TaskCounts()}
    finally:
        await reopened.close()


async def test_many_tasks_in_one_batch(store: Store) -> None:
    await make_queues(store)
    created = [await add(store, f"t{index}", index * SECOND) for index in range(50)]
    claim = await store.claim_due_tasks(Q, T0 + 100 * SECOND, 100, GRACE)
    assert len(claim.tasks) == 50
    await store.finish_attempts([AttemptResult(t.name, 1, None) for t in created[:30]], WINDOWS)
    assert (await store.task_counts(T0 + 100 * SECOND))[Q] == TaskCounts(20, 0, T0 + 30 * SECOND)
