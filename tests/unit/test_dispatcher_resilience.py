"""The dispatcher survives any value the API accepts and any error in one of its steps: it logs
the error and keeps delivering. In-process, on a fake clock, with injected failures."""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from msgspec.structs import replace

from opentasks.clock import FakeClock
from opentasks.domain.attempt import after_attempt
from opentasks.domain.limits import LATEST_TIME, MAX_RETRY_DELAY, Limits
from opentasks.domain.names import QueueName
from opentasks.domain.outbound import OutboundRequest
from opentasks.domain.queue import Queue, QueueState, RateLimits, RetryConfig, resolve_queue
from opentasks.domain.task import AttemptFailure, AttemptOutcome, HttpRequest, TaskDraft, TaskView, new_task
from opentasks.service.attempts import ResultWriter
from opentasks.service.dispatcher import ALERT_INTERVAL_S, DispatchSettings
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.base import AttemptResult, Claim, Fence, Windows
from opentasks.storage.memory import MemoryStore
from tests.unit.test_dispatcher import Q, ScriptedPusher, World

YEARS_10K = timedelta(seconds=315_576_000_000)
MICROSECOND = timedelta(microseconds=1)


async def until(condition: Callable[[], bool], rounds: int = 500) -> None:
    """Let the event loop run until ``condition`` holds (bounded: fails rather than hangs)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def looping_world(store: MemoryStore | None = None, pusher: ScriptedPusher | None = None) -> World:
    world = World(pusher, store=store)
    await world.dispatcher.start(loop=True)
    return world


class FlakyClaims(MemoryStore):
    """Its next ``failures`` claims raise."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def claim_due_tasks(
        self, queue: QueueName, now: datetime, limit: int, lease_grace: timedelta, fence: Fence | None = None
    ) -> Claim:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("disk on fire")
        return await super().claim_due_tasks(queue, now, limit, lease_grace, fence)


async def test_a_claim_that_raises_is_logged_and_retried_after_a_pause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyClaims()
    world = await looping_world(store)
    await world.queue()
    await world.dispatcher.settle()
    store.failures = 1
    await world.task("https://h/a")
    await until(lambda: "disk on fire" in caplog.text)
    assert "dispatching queue projects/p/locations/l/queues/q failed; trying again in 1 s" in caplog.text
    assert world.pusher.sent == []
    world.clock.advance(1)
    await until(lambda: len(world.pusher.sent) == 1)
    await world.task("https://h/b")  # and it goes on as before
    await until(lambda: len(world.pusher.sent) == 2)
    await world.dispatcher.stop()


async def test_repeated_errors_back_off_up_to_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyClaims()
    world = await looping_world(store)
    await world.queue()
    store.failures = 10
    await world.task()
    for pause in (1, 2, 4, 8, 16, 32, 60, 60, 60, 60):
        await until(lambda p=pause: f"trying again in {p} s" in caplog.text)  # type: ignore[misc]
        caplog.clear()
        world.clock.advance(pause)
    await until(lambda: len(world.pusher.sent) == 1)
    await world.dispatcher.stop()


async def test_a_pusher_that_raises_fails_that_attempt_only() -> None:
    class Picky(ScriptedPusher):
        async def push(self, request: OutboundRequest) -> AttemptOutcome:
            if request.url.endswith("/bad"):
                raise OverflowError("pusher bug")
            return await super().push(request)

    world = await looping_world(pusher=Picky())
    await world.queue(retry_config=RetryConfig(min_backoff=timedelta(seconds=5)))
    bad = await world.task("https://h/bad")
    for i in range(5):
        await world.task(f"https://h/ok{i}")
    await until(lambda: len(world.pusher.sent) == 5)
    await world.dispatcher.settle()
    stored = await world.tasks.get_task(bad.name, TaskView.BASIC)
    assert stored.dispatch_count == 1 and stored.schedule_time == world.clock.now() + timedelta(seconds=5)
    await world.dispatcher.stop()


async def test_an_attempt_that_raises_does_not_stop_the_other_pending_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(settings=DispatchSettings(claim_batch=50))
    await world.dispatcher.start(loop=False)
    await world.queue()
    real = world.dispatcher._runner.attempt
    calls = 0

    async def first_one_breaks(*args: object, **kwargs: object) -> datetime | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("attempt bug")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    world.dispatcher._runner.attempt = first_one_breaks  # type: ignore[method-assign]
    for _ in range(3):
        await world.task()
    assert await world.step() == 3
    assert len(world.pusher.sent) == 2
    assert "attempt bug" in caplog.text
    w = world.dispatcher._workers[Q]
    assert w.inflight == 0 and not w.pending


async def test_a_tiny_rate_keeps_the_worker_alive_and_an_update_takes_effect() -> None:
    """1e-300/s: the burst goes, then the worker waits (in steps of at most an hour) instead of dying."""
    world = await looping_world()
    await world.queue(rate_limits=RateLimits(max_dispatches_per_second=1e-300))  # burst 10
    for _ in range(15):
        await world.task()
    await until(lambda: len(world.pusher.sent) == 10)
    world.clock.advance(3600 * 24)
    await world.clock.sleeping()  # woke, earned no whole token, and waits again
    assert len(world.pusher.sent) == 10
    assert world.dispatcher._workers[Q].running
    await world.queues.update_queue(
        Queue(Q, rate_limits=RateLimits(max_dispatches_per_second=500)),
        ["rate_limits.max_dispatches_per_second"],
    )
    await world.dispatcher.settle()
    await world.clock.sleeping(count=2)  # the worker waits for its next token (and the node's round)
    world.clock.advance(1)  # 500 tokens a second now
    await until(lambda: len(world.pusher.sent) == 15)
    await world.dispatcher.stop()


async def test_update_queue_and_new_tasks_revive_a_dead_worker_loop(caplog: pytest.LogCaptureFixture) -> None:
    world = await looping_world()
    await world.queue()
    w = world.dispatcher._workers[Q]
    loop = w._loop
    assert loop is not None

    async def die() -> None:  # stands for a loop that ended for a reason its own guard missed
        raise RuntimeError("killed")

    w._loop = asyncio.ensure_future(die())
    w._loop.add_done_callback(w._loop_ended)
    loop.cancel()
    await until(lambda: not w.running)
    await until(lambda: "dispatching of queue projects/p/locations/l/queues/q stopped" in caplog.text)
    await world.queues.update_queue(
        Queue(Q, rate_limits=RateLimits(max_dispatches_per_second=5)), ["rate_limits"]
    )
    await until(lambda: w.running)
    await world.task()
    await until(lambda: len(world.pusher.sent) == 1)

    w._loop.cancel()  # dead again: a new task revives it too
    await until(lambda: not w.running)
    await world.task()
    await until(lambda: len(world.pusher.sent) == 2)
    await world.dispatcher.stop()


async def test_a_reload_that_fails_is_logged_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    world = await looping_world()
    await world.queue()

    async def broken(name: QueueName) -> Queue:
        raise RuntimeError("read failed")

    world.store.get_queue = broken  # type: ignore[method-assign]
    world.dispatcher.queue_changed(Q)
    await world.dispatcher.settle()
    assert "could not reload queue projects/p/locations/l/queues/q" in caplog.text
    await world.task()
    await until(lambda: len(world.pusher.sent) == 1)
    await world.dispatcher.stop()


async def test_a_retry_time_past_the_last_datetime_is_clamped_and_not_resent() -> None:
    """Near the end of datetime's range, even the capped backoff overflows: the task is recorded
    as retried at the latest time instead of going again at every lease expiry."""
    world = World(clock=FakeClock(datetime(9999, 11, 1, tzinfo=UTC)))
    world.pusher.scripts["https://h/x"] = [AttemptOutcome(http_status=500)]
    await world.dispatcher.start(loop=False)
    await world.queue(retry_config=RetryConfig(min_backoff=YEARS_10K, max_backoff=YEARS_10K, max_attempts=-1))
    task = await world.task()
    assert await world.step() == 1
    stored = await world.tasks.get_task(task.name, TaskView.BASIC)
    assert stored.schedule_time == LATEST_TIME
    assert stored.dispatch_count == 1
    assert stored.last_attempt is not None and stored.last_attempt.response_status is not None
    world.clock.advance(3600)  # well past the lease
    assert await world.step() == 0


class RefusesFarTimes(MemoryStore):
    """A backend whose time column ends 200 years from now: such a result fails its whole batch."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.batches: list[int] = []

    async def finish_attempts(self, results: list[AttemptResult], windows: Windows) -> None:
        self.batches.append(len(results))
        horizon = self.clock.now() + timedelta(days=365 * 200)
        if any(r.task is not None and r.task.schedule_time > horizon for r in results):
            raise OverflowError("date value out of range")
        await super().finish_attempts(results, windows)


async def test_one_result_that_cannot_be_stored_costs_the_others_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = RefusesFarTimes(clock)
    queue = Queue(Q)
    await store.create_queue(queue, clock.now())
    drafts = [
        TaskDraft(name=f"{Q}/tasks/t{i}", http_request=HttpRequest(url="https://h/x")) for i in range(3)
    ]
    for i, draft in enumerate(drafts):
        await store.create_task(new_task(draft, Q, clock.now(), str(i), Limits()), clock.now())
    now = clock.now()
    claim = await store.claim_due_tasks(Q, now, 10, timedelta(seconds=30))
    failed = AttemptOutcome(http_status=503)
    config = RetryConfig(max_attempts=5, min_backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=1))
    results = []
    for claimed in claim.tasks:
        after = after_attempt(claimed, failed, now, config)
        assert after is not None
        if claimed.name.task_id == "t1":  # e.g. a retry time computed by a bug
            after = replace(after, schedule_time=LATEST_TIME)
        results.append(AttemptResult(claimed.name, claimed.dispatch_count, after, True))
    writer = ResultWriter(store, clock, TombstonePolicy())
    for result in results:
        writer.add(result)
    await writer.flush()
    assert store.batches[0] == 3  # the batch failed as a whole, then went one by one
    by_id = {
        t.name.task_id: t
        for t in (await store.claim_due_tasks(Q, LATEST_TIME - MICROSECOND, 10, timedelta(seconds=30))).tasks
    }
    assert by_id["t0"].schedule_time == now + timedelta(seconds=1)
    assert by_id["t2"].schedule_time == now + timedelta(seconds=1)
    assert by_id["t1"].schedule_time == now + MAX_RETRY_DELAY  # stored, clamped
    assert all(t.dispatch_count == 2 for t in by_id.values())  # the attempt above, and this claim
    # One line for the burst (the rest are counted, not written: a store outage must not flood the log).
    assert "could not record 3 attempt outcome(s) together" in caplog.text
    assert "as retried at" not in caplog.text


async def test_refused_attempts_are_logged_without_body_or_headers(caplog: pytest.LogCaptureFixture) -> None:
    class RefusesAtConnect(ScriptedPusher):
        async def push(self, request: OutboundRequest) -> AttemptOutcome:
            await super().push(request)
            return AttemptOutcome(failure=AttemptFailure.REFUSED, detail="10.0.0.1 is a private address")

    world = World(RefusesAtConnect())
    await world.dispatcher.start(loop=False)
    await world.queue()
    draft = TaskDraft(
        name=f"{Q}/tasks/secret-task",
        http_request=HttpRequest(
            url="https://h/x", headers={"X-Api-Key": "hunter2-header"}, body=b"hunter2-body"
        ),
    )
    await world.tasks.create_task(Q, draft, TaskView.FULL)
    with caplog.at_level(logging.WARNING, logger="opentasks.service.dispatcher"):
        assert await world.step() == 1
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "projects/p/locations/l/queues/q" in message
    assert "secret-task" in message
    assert "10.0.0.1 is a private address" in message
    assert "hunter2" not in caplog.text
    # More refusals within the interval are counted, then reported with the next line written.
    for number in range(3):
        await world.tasks.create_task(
            Q, TaskDraft(http_request=HttpRequest(url=f"https://h/{number}")), TaskView.BASIC
        )
    with caplog.at_level(logging.WARNING, logger="opentasks.service.dispatcher"):
        assert await world.step() == 3
        world.clock.advance(ALERT_INTERVAL_S)
        await world.tasks.create_task(
            Q, TaskDraft(http_request=HttpRequest(url="https://h/late")), TaskView.BASIC
        )
        assert await world.step() >= 1  # the late task, and retries of the refused ones
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2 and "(3 similar events were not logged" in refusals[1]


async def test_hostile_retry_settings_reschedule_within_the_ceiling_and_never_resend_early() -> None:
    """The reported case: 10,000-year max_backoff and max_doublings 62 used to lose every result."""
    world = World()
    world.pusher.scripts["https://h/x"] = [AttemptOutcome(http_status=500)]
    await world.dispatcher.start(loop=False)
    hostile = RetryConfig(
        max_attempts=-1, min_backoff=timedelta(seconds=1), max_backoff=YEARS_10K, max_doublings=62
    )
    await world.queue(retry_config=hostile)
    task = await world.task()
    for k in range(1, 80):
        sent = await world.dispatcher.run_task(task.name)  # RunTask: dispatch now, whatever the schedule
        await world.dispatcher.settle()
        stored = await world.tasks.get_task(task.name, TaskView.BASIC)
        assert stored.dispatch_count == sent.dispatch_count == k
        expected = timedelta(seconds=min(2 ** (k - 1), MAX_RETRY_DELAY // timedelta(seconds=1)))
        assert stored.schedule_time == world.clock.now() + expected
    world.clock.advance(24 * 3600)  # far past every lease: nothing is due
    assert await world.step() == 0


class HeldReads(MemoryStore):
    """Its queue reads wait until let go, in the order the test chooses."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.waiting: list[asyncio.Event] = []

    async def get_queue(self, name: QueueName) -> Queue:
        read = await super().get_queue(name)  # read now, answer when let go
        if self.hold:
            gate = asyncio.Event()
            self.waiting.append(gate)
            await gate.wait()
        return read


async def test_a_paused_queue_starts_nothing_once_pause_queue_answers() -> None:
    """However slowly the dispatcher's own read of the queue comes back, the pause applies to
    the queue's worker before PauseQueue returns."""
    store = HeldReads()
    world = await looping_world(store)
    await world.queue()
    store.hold = True
    await world.queues.pause_queue(Q)
    await world.task()
    for _ in range(50):
        await asyncio.sleep(0)
    assert world.pusher.sent == []
    await world.queues.resume_queue(Q)
    await until(lambda: len(world.pusher.sent) == 1)
    for gate in store.waiting:
        gate.set()
    await world.dispatcher.stop()


async def test_a_slow_reload_does_not_undo_a_later_change() -> None:
    """Pause then resume: the pause's read, answering last, is older than the resume's."""
    store = HeldReads()
    world = await looping_world(store)
    await world.queue()
    store.hold = True
    await world.queues.pause_queue(Q)
    await until(lambda: len(store.waiting) == 1)  # the pause's read is done, its answer held
    await world.queues.resume_queue(Q)
    await until(lambda: len(store.waiting) == 2)
    paused_read, resumed_read = store.waiting
    resumed_read.set()
    await asyncio.sleep(0)
    paused_read.set()
    await world.dispatcher.settle()
    await world.task()
    await until(lambda: len(world.pusher.sent) == 1)
    await world.dispatcher.stop()


async def test_a_reload_asked_for_before_a_pause_does_not_undo_it() -> None:
    """A reload whose read was done before the pause, and that resumes only after it, leaves
    the pause in place."""
    store = HeldReads()
    world = await looping_world(store)
    await world.queue()
    store.hold = True
    world.dispatcher.queue_changed(Q)  # a signal: its reload reads the running queue
    await until(lambda: len(store.waiting) == 1)
    store.waiting[0].set()  # its answer comes back, to be taken up after the pause below
    await world.queues.pause_queue(Q)  # the memory store answers without yielding
    await until(lambda: len(store.waiting) == 2)
    await world.task()
    for _ in range(50):
        await asyncio.sleep(0)
    assert world.pusher.sent == []
    store.waiting[1].set()
    await world.dispatcher.stop()


class HeldClaims(MemoryStore):
    """Its claims answer when let go."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.claiming = asyncio.Event()

    async def claim_due_tasks(
        self, queue: QueueName, now: datetime, limit: int, lease_grace: timedelta, fence: Fence | None = None
    ) -> Claim:
        claim = await super().claim_due_tasks(queue, now, limit, lease_grace, fence)
        if self.gate is not None and claim.tasks:
            self.claiming.set()
            await self.gate.wait()
        return claim


async def test_tasks_claimed_while_the_queue_is_paused_wait_for_the_resume() -> None:
    store = HeldClaims()
    world = await looping_world(store)
    await world.queue()
    store.gate = asyncio.Event()
    await world.task()
    await store.claiming.wait()  # the claim holds the task; its answer is on its way
    await world.queues.pause_queue(Q)
    store.gate.set()
    for _ in range(50):
        await asyncio.sleep(0)
    assert world.pusher.sent == []
    await world.queues.resume_queue(Q)
    await until(lambda: len(world.pusher.sent) == 1)
    await world.dispatcher.stop()


class StaleListing(HeldReads):
    """Its queue listing (what a node's round reads) can lag behind the queue: the queues as
    they were when frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen: list[Queue] | None = None

    async def all_queues(self) -> list[Queue]:
        return self.frozen if self.frozen is not None else await super().all_queues()


async def test_a_new_worker_starts_only_once_it_has_read_its_queue_again() -> None:
    """A node's round read the queue running; it was paused before the worker began: the
    worker waits for its own read of the queue and sends nothing."""
    store = StaleListing()
    world = await looping_world(store)
    await store.create_queue(resolve_queue(Queue(Q), Limits()), world.clock.now())
    store.frozen = await store.all_queues()
    await store.update_queue(Q, lambda q: replace(q, state=QueueState.PAUSED), world.clock.now())
    store.hold = True
    await world.dispatcher.ownership.round()  # the worker is made from the running snapshot
    await world.task()
    for _ in range(50):
        await asyncio.sleep(0)
    assert world.pusher.sent == []
    store.hold = False
    for gate in store.waiting:
        gate.set()
    await until(lambda: all(gate.is_set() for gate in store.waiting))
    for _ in range(50):
        await asyncio.sleep(0)
    assert world.pusher.sent == []  # it read the pause
    await world.queues.resume_queue(Q)
    await until(lambda: len(world.pusher.sent) == 1)
    await world.dispatcher.stop()
