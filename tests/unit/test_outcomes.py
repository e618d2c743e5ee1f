"""The outcome counter: ended attempts per queue and minute, added to the store every 10 s of the
clock and at stop, kept (bounded) when the store fails, never in the dispatcher's way."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from opentasks.clock import FakeClock
from opentasks.domain.browse import OutcomeMinute
from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.task import AttemptFailure, AttemptOutcome, HttpRequest, Task, TaskDraft, new_task
from opentasks.errors import Unavailable
from opentasks.service.observers import AttemptFinished, Observers
from opentasks.service.outcomes import OutcomeCounter, succeeded
from opentasks.storage.memory import MemoryStore

START = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
Q = QueueName("p", "us-central1", "q")
Q2 = QueueName("p", "us-central1", "q2")


class RecordingStore(MemoryStore):
    """Records each add_outcomes call; fails the next ``failures`` calls; waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: asyncio.Queue[tuple[str, list[OutcomeMinute]]] = asyncio.Queue()
        self.failures = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def add_outcomes(self, node_id: str, minutes: list[OutcomeMinute]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.calls.put_nowait((node_id, minutes))
        if self.failures:
            self.failures -= 1
            raise Unavailable("The database could not add attempt outcomes: connection refused.")
        await super().add_outcomes(node_id, minutes)


def task(queue: QueueName = Q) -> Task:
    draft = TaskDraft(name=f"{queue}/tasks/t", http_request=HttpRequest(url="https://example.com/h"))
    return new_task(draft, queue, START, "t", Limits())


def ended(
    status: int, queue: QueueName = Q, failure: AttemptFailure = AttemptFailure.NONE
) -> AttemptFinished:
    return AttemptFinished(task(queue), AttemptOutcome(http_status=status, failure=failure), 0.01, 0.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


async def test_2xx_succeeds_and_everything_else_fails() -> None:
    assert succeeded(AttemptOutcome(http_status=200))
    assert succeeded(AttemptOutcome(http_status=204))
    for outcome in (
        AttemptOutcome(http_status=302),
        AttemptOutcome(http_status=404),
        AttemptOutcome(http_status=503),
        AttemptOutcome(failure=AttemptFailure.TIMEOUT),
        AttemptOutcome(failure=AttemptFailure.UNREACHABLE),
        AttemptOutcome(http_status=200, failure=AttemptFailure.REFUSED),
    ):
        assert not succeeded(outcome)


async def test_counts_per_queue_and_minute_are_added_every_ten_seconds(clock: FakeClock) -> None:
    store = RecordingStore()
    counter = OutcomeCounter(store, clock, "node-a")
    observers = Observers([counter], monotonic=clock.monotonic)
    await counter.start()
    await clock.sleeping()
    for status in (200, 201, 500):
        observers.attempt_finished(ended(status))
    observers.attempt_finished(ended(404, Q2))
    clock.advance(9)
    observers.attempt_finished(ended(204))
    clock.advance(1)  # 10 s since the start: the first flush
    node, minutes = await asyncio.wait_for(store.calls.get(), 5)
    minute = START.replace(second=0)
    assert node == "node-a"
    assert minutes == [OutcomeMinute(Q, minute, 3, 1), OutcomeMinute(Q2, minute, 0, 1)]
    assert counter.pending == 0
    await clock.sleeping()  # waits for the next flush
    observers.attempt_finished(ended(200))  # at 12:00:40
    clock.advance(25)  # the flush at 12:00:50 takes it
    _, minutes = await asyncio.wait_for(store.calls.get(), 5)
    assert minutes == [OutcomeMinute(Q, minute, 1, 0)]
    await clock.sleeping()
    observers.attempt_finished(ended(503))  # 12:01:05, the next minute
    await counter.stop()  # stores what is left without waiting for the clock
    _, minutes = await asyncio.wait_for(store.calls.get(), 5)
    assert minutes == [OutcomeMinute(Q, minute + timedelta(minutes=1), 0, 1)]
    assert await store.outcomes(minute) == [
        OutcomeMinute(Q, minute, 4, 1),
        OutcomeMinute(Q2, minute, 0, 1),
        OutcomeMinute(Q, minute + timedelta(minutes=1), 0, 1),
    ]


async def test_nothing_counted_stores_nothing(clock: FakeClock) -> None:
    store = RecordingStore()
    counter = OutcomeCounter(store, clock, "node-a")
    await counter.start()
    await clock.sleeping()
    clock.advance(10)
    await clock.sleeping()  # went round without a store call
    await counter.stop()
    assert store.calls.empty()


async def test_a_store_failure_is_logged_and_the_counts_wait_for_the_next_flush(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    store.failures = 1
    counter = OutcomeCounter(store, clock, "node-a")
    counter.attempt_finished(ended(200))
    with caplog.at_level(logging.WARNING, logger="opentasks.service.outcomes"):
        assert not await counter.flush()
    assert "could not store attempt outcomes (kept for the next try)" in caplog.text
    assert "connection refused" in caplog.text
    counter.attempt_finished(ended(500))
    assert await counter.flush()
    assert [m for _, m in [store.calls.get_nowait(), store.calls.get_nowait()]][1] == [
        OutcomeMinute(Q, START.replace(second=0), 1, 1)
    ]


async def test_counts_kept_for_a_failing_store_are_bounded(clock: FakeClock) -> None:
    store = RecordingStore()
    store.failures = 100
    counter = OutcomeCounter(store, clock, "node-a", max_pending=3)
    for queue_id in "abcde":  # five queue-minutes, three kept: the newest
        counter.attempt_finished(ended(200, QueueName("p", "l", queue_id)))
    assert counter.pending == 3
    assert not await counter.flush()
    assert counter.pending == 3
    clock.advance(3660)  # over an hour on: the old minutes are dropped at the next failure
    counter.attempt_finished(ended(200))
    assert not await counter.flush()
    assert counter.pending == 1
    store.failures = 0
    assert await counter.flush()
    assert await store.outcomes(START) == [
        OutcomeMinute(Q, (START + timedelta(minutes=61)).replace(second=0), 1, 0)
    ]


async def test_attempts_ending_during_a_slow_flush_go_to_the_next(clock: FakeClock) -> None:
    store = RecordingStore()
    store.gate = asyncio.Event()
    counter = OutcomeCounter(store, clock, "node-a")
    counter.attempt_finished(ended(200))
    flushing = asyncio.ensure_future(counter.flush())
    await asyncio.wait_for(store.entered.wait(), 5)  # the store call hangs
    counter.attempt_finished(ended(500))  # counted at once: the dispatcher never waits
    assert counter.pending == 1
    store.gate.set()
    assert await asyncio.wait_for(flushing, 5)
    assert await counter.flush()
    minute = START.replace(second=0)
    assert await store.outcomes(minute) == [OutcomeMinute(Q, minute, 1, 1)]
