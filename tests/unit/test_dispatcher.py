"""The dispatcher on a fake clock, the memory store and a scripted in-process pusher."""

import asyncio
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opentasks.clock import FakeClock
from opentasks.credentials.keys import KeyRing
from opentasks.credentials.tokens import TokenMinter
from opentasks.domain.history import FAILED_REASONS, FinishReason, HistoryPolicy
from opentasks.domain.names import LocationName, QueueName
from opentasks.domain.outbound import OutboundRequest
from opentasks.domain.ownership import LeaseTiming
from opentasks.domain.queue import (
    AppEngineRouting,
    HttpTarget,
    OAuthToken,
    OidcToken,
    Queue,
    RateLimits,
    RetryConfig,
    UriOverride,
)
from opentasks.domain.routing import AppEngineRoutes
from opentasks.domain.target_policy import TargetDenied
from opentasks.domain.task import (
    AppEngineHttpRequest,
    AttemptFailure,
    AttemptOutcome,
    HttpRequest,
    Task,
    TaskDraft,
    TaskView,
)
from opentasks.errors import AlreadyExists, NotFound
from opentasks.service.dispatcher import Dispatcher, DispatchSettings, PassResult
from opentasks.service.ownership import NodeSettings
from opentasks.service.queues import QueueService
from opentasks.service.tasks import TaskService
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.memory import MemoryStore

PARENT = LocationName("p", "l")
Q = QueueName("p", "l", "q")


class ScriptedPusher:
    """Answers each URL's n-th request with its n-th scripted outcome (default 200); ``hold`` keeps
    attempts open until ``release``."""

    def __init__(self) -> None:
        self.sent: list[OutboundRequest] = []
        self.scripts: dict[str, list[AttemptOutcome]] = {}
        self.hold = False
        self._held: list[asyncio.Future[None]] = []
        self._count: defaultdict[str, int] = defaultdict(int)

    async def push(self, request: OutboundRequest) -> AttemptOutcome:
        self.sent.append(request)
        if self.hold:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._held.append(future)
            await future
        script = self.scripts.get(request.url, [])
        index = self._count[request.url]
        self._count[request.url] += 1
        return script[min(index, len(script) - 1)] if script else AttemptOutcome(http_status=200)

    async def release(self, count: int) -> None:
        """Let ``count`` held attempts answer (after letting every started attempt reach the hold)."""
        for _ in range(3):
            await asyncio.sleep(0)
        for future in self._held[:count]:
            future.set_result(None)
        del self._held[:count]

    async def close(self) -> None:
        return None


class World:
    def __init__(
        self,
        pusher: ScriptedPusher | None = None,
        *,
        clock: FakeClock | None = None,
        store: MemoryStore | None = None,
        **options: Any,
    ) -> None:
        self.clock = clock or FakeClock()
        self.store = store or MemoryStore()
        self.pusher = pusher or ScriptedPusher()
        options.setdefault("settings", DispatchSettings(claim_batch=50))
        # Leases of ten years: these tests jump the clock faster than a node's heartbeats would
        # follow; tests/unit/test_nodes.py gives its nodes real leases.
        options.setdefault("node", NodeSettings(timing=LeaseTiming(timedelta(days=3650))))
        self.dispatcher = Dispatcher(self.store, self.clock, self.pusher, **options)
        self.queues = QueueService(self.store, self.clock, events=self.dispatcher)
        self.tasks = TaskService(self.store, self.clock, events=self.dispatcher, runner=self.dispatcher)

    async def queue(self, **fields: object) -> Queue:
        queue = await self.queues.create_queue(PARENT, Queue(Q, **fields))  # type: ignore[arg-type]
        await self.dispatcher.settle()  # the dispatcher has taken note of the new queue
        return queue

    async def task(self, url: str = "https://h/x", *, after_s: float = 0, name: str = "") -> Task:
        draft = TaskDraft(
            name=name,
            http_request=HttpRequest(url=url),
            schedule_time=self.clock.now() + timedelta(seconds=after_s),
        )
        return await self.tasks.create_task(Q, draft, TaskView.FULL)

    async def step(self) -> int:
        """One dispatch pass, then let every started attempt finish and be recorded."""
        started = (await self.dispatcher.run_once()).started
        await self.dispatcher.settle()
        return started


@pytest.fixture
async def world() -> World:
    w = World()
    await w.dispatcher.start(loop=False)
    return w


async def test_dispatches_due_tasks_and_waits_for_scheduled_ones(world: World) -> None:
    await world.queue()
    now_task = await world.task("https://h/now")
    await world.task("https://h/later", after_s=5)
    assert await world.step() == 1
    assert [r.url for r in world.pusher.sent] == ["https://h/now"]
    with pytest.raises(NotFound):  # succeeded: gone
        await world.tasks.get_task(now_task.name, TaskView.BASIC)
    world.clock.advance(4.999)
    assert await world.step() == 0
    world.clock.advance(0.001)
    assert await world.step() == 1


async def test_token_bucket_limits_bursts_and_rate(world: World) -> None:
    await world.queue(rate_limits=RateLimits(max_dispatches_per_second=5))  # burst 10
    for _ in range(30):
        await world.task()
    assert await world.step() == 10
    assert await world.step() == 0
    world.clock.advance(0.2)
    assert await world.step() == 1
    world.clock.advance(1.0)
    assert await world.step() == 5
    world.clock.advance(100)
    assert await world.step() == 10  # never more than the burst at once


async def test_rate_change_takes_effect_at_once(world: World) -> None:
    await world.queue(rate_limits=RateLimits(max_dispatches_per_second=1))
    for _ in range(30):
        await world.task()
    assert await world.step() == 10
    await world.queues.update_queue(Queue(Q, rate_limits=RateLimits(max_dispatches_per_second=100)), [])
    await world.dispatcher.settle()
    world.clock.advance(0.05)
    assert await world.step() == 5


async def test_concurrency_cap(world: World) -> None:
    await world.queue(rate_limits=RateLimits(max_concurrent_dispatches=2))
    for _ in range(5):
        await world.task()
    world.pusher.hold = True
    assert await world.dispatcher.run_once() == PassResult(2, {Q: 2})
    assert await world.dispatcher.run_once() == PassResult(0, {})
    await world.pusher.release(1)
    for _ in range(3):
        await asyncio.sleep(0)
    assert (await world.dispatcher.run_once()).started == 1
    world.pusher.hold = False
    await world.pusher.release(2)
    await world.dispatcher.settle()
    assert await world.step() == 2


async def test_the_nodes_cap_on_attempts_in_flight_holds_over_all_its_queues() -> None:
    world = World(settings=DispatchSettings(claim_batch=50, max_attempts_in_flight=3))
    await world.dispatcher.start(loop=False)
    other = QueueName("p", "l", "other")
    await world.queue()
    await world.queues.create_queue(PARENT, Queue(other))
    await world.dispatcher.settle()
    for queue in (Q, other):
        for _ in range(4):
            draft = TaskDraft(http_request=HttpRequest(url=f"https://h/{queue.queue_id}"))
            await world.tasks.create_task(queue, draft, TaskView.FULL)
    world.pusher.hold = True
    await world.dispatcher.run_once()  # both queues claim all of theirs
    await world.pusher.release(0)
    assert len(world.pusher.sent) == 3  # the rest wait for a slot, whichever queue they are of
    await world.pusher.release(1)
    await world.pusher.release(0)
    assert len(world.pusher.sent) == 4
    world.pusher.hold = False
    await world.pusher.release(3)
    await world.dispatcher.settle()
    assert len(world.pusher.sent) == 8


async def test_retries_follow_the_backoff_from_the_failure(world: World) -> None:
    retry = RetryConfig(min_backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=10), max_doublings=3)
    await world.queue(retry_config=retry)
    world.pusher.scripts["https://h/flaky"] = [AttemptOutcome(http_status=503)] * 2 + [
        AttemptOutcome(http_status=200)
    ]
    task = await world.task("https://h/flaky")
    assert await world.step() == 1
    stored = await world.tasks.get_task(task.name, TaskView.BASIC)
    assert stored.schedule_time == world.clock.now() + timedelta(seconds=1)
    assert (stored.dispatch_count, stored.response_count) == (1, 1)
    world.clock.advance(0.999)
    assert await world.step() == 0
    world.clock.advance(0.001)
    assert await world.step() == 1
    world.clock.advance(1.999)
    assert await world.step() == 0
    world.clock.advance(0.001)
    assert await world.step() == 1
    retry_counts = [r.headers["X-CloudTasks-TaskRetryCount"] for r in world.pusher.sent]
    assert retry_counts == ["0", "1", "2"]
    with pytest.raises(NotFound):
        await world.tasks.get_task(task.name, TaskView.BASIC)


async def test_out_of_attempts_deletes_and_tombstones(world: World) -> None:
    await world.queue(retry_config=RetryConfig(max_attempts=2, min_backoff=timedelta(seconds=1)))
    world.pusher.scripts["https://h/bad"] = [AttemptOutcome(failure=AttemptFailure.TIMEOUT)]
    task = await world.task("https://h/bad", name=f"{Q}/tasks/doomed")
    await world.step()
    world.clock.advance(1)
    await world.step()
    world.clock.advance(100)
    assert await world.step() == 0
    with pytest.raises(NotFound, match="existed recently"):
        await world.tasks.get_task(task.name, TaskView.BASIC)


async def test_pause_and_resume(world: World) -> None:
    await world.queue()
    await world.queues.pause_queue(Q)
    await world.dispatcher.settle()
    await world.task()
    assert await world.step() == 0
    await world.queues.resume_queue(Q)
    await world.dispatcher.settle()
    assert await world.step() == 1


async def test_run_task_bypasses_pause_and_schedule(world: World) -> None:
    await world.queue()
    await world.queues.pause_queue(Q)
    await world.dispatcher.settle()
    task = await world.task(after_s=3600)
    world.pusher.hold = True
    ran = await world.tasks.run_task(task.name, TaskView.BASIC)
    assert ran.dispatch_count == 1
    assert ran.last_attempt is not None and ran.last_attempt.dispatch_time == world.clock.now()
    assert ran.last_attempt.response_time is None
    world.pusher.hold = False
    await world.pusher.release(1)
    await world.dispatcher.settle()
    with pytest.raises(NotFound):
        await world.tasks.get_task(task.name, TaskView.BASIC)


async def test_deleting_a_task_in_flight_discards_its_result(world: World) -> None:
    await world.queue()
    world.pusher.scripts["https://h/x"] = [AttemptOutcome(http_status=500)]
    task = await world.task()
    world.pusher.hold = True
    await world.dispatcher.run_once()
    await world.tasks.delete_task(task.name)
    await world.pusher.release(1)
    await world.dispatcher.settle()
    page = await world.tasks.list_tasks(Q, view=TaskView.BASIC, page_size=0, page_token="")
    assert page.tasks == []


async def test_attempts_lost_in_a_crash_are_dispatched_again_at_restart(world: World) -> None:
    await world.queue()
    task = await world.task()
    world.pusher.hold = True
    assert (await world.dispatcher.run_once()).started == 1  # in flight when the server "dies"
    restarted = Dispatcher(world.store, world.clock, ScriptedPusher())
    await restarted.recover()
    await restarted.start(loop=False)
    assert (await restarted.run_once()).started == 1
    await restarted.settle()
    with pytest.raises(NotFound):
        await world.tasks.get_task(task.name, TaskView.BASIC)


async def test_expired_lease_makes_a_silent_attempt_due_again(world: World) -> None:
    await world.queue()
    await world.task()
    world.pusher.hold = True
    assert (await world.dispatcher.run_once()).started == 1
    world.clock.advance(600 + 29)  # dispatch deadline + most of the grace
    assert (await world.dispatcher.run_once()).started == 0
    world.clock.advance(1)
    assert (await world.dispatcher.run_once()).started == 1


async def test_deleted_queue_stops_its_worker(world: World) -> None:
    await world.queue()
    await world.queues.delete_queue(Q)
    await world.dispatcher.settle()
    assert await world.step() == 0


async def test_worker_loop_wakes_for_new_tasks_and_due_times() -> None:
    """The real loop (not run_once): it sleeps on the fake clock and wakes on events."""
    w = World()
    await w.dispatcher.start(loop=True)
    await w.queue()
    await w.task("https://h/soon", after_s=10)
    await w.clock.sleeping(count=2)  # the worker waits for its task's time (and the node's round)
    assert w.pusher.sent == []
    w.clock.advance(10)
    await w.task("https://h/now")
    for _ in range(20):
        await asyncio.sleep(0)
    await w.dispatcher.settle()
    assert sorted(r.url for r in w.pusher.sent) == ["https://h/now", "https://h/soon"]
    await w.dispatcher.stop()


async def test_an_unexpected_error_in_an_attempt_is_a_failed_attempt() -> None:
    class Broken(ScriptedPusher):
        async def push(self, request: OutboundRequest) -> AttemptOutcome:
            raise RuntimeError("boom")

    world = World(Broken())
    await world.dispatcher.start(loop=False)
    await world.queue(retry_config=RetryConfig(min_backoff=timedelta(seconds=5)))
    task = await world.task()
    assert await world.step() == 1
    stored = await world.tasks.get_task(task.name, TaskView.BASIC)
    assert stored.dispatch_count == 1
    assert stored.schedule_time == world.clock.now() + timedelta(seconds=5)
    assert stored.last_attempt is not None and stored.last_attempt.response_status is not None
    assert "internal error" in stored.last_attempt.response_status.message


async def test_finished_tasks_of_queue_yaml_queues_keep_their_names_longer() -> None:
    world = World(tombstones=TombstonePolicy(task=timedelta(minutes=1), queue_yaml_task=timedelta(days=9)))
    await world.dispatcher.start(loop=False)
    await world.queues.update_queue(Queue(Q), [], queue_yaml=True)
    await world.dispatcher.settle()
    await world.task(name=f"{Q}/tasks/daily-report")
    assert await world.step() == 1
    world.clock.advance(8 * 86400)
    with pytest.raises(AlreadyExists):
        await world.task(name=f"{Q}/tasks/daily-report")


async def test_queue_level_http_target_retargets_waiting_tasks(world: World) -> None:
    await world.queue()
    await world.task("https://old.example/jobs?x=1")
    await world.queues.update_queue(
        Queue(Q, http_target=HttpTarget(uri_override=UriOverride(host="new.example"))), ["http_target"]
    )
    await world.dispatcher.settle()
    assert await world.step() == 1
    assert world.pusher.sent[0].url == "https://new.example/jobs?x=1"


async def test_app_engine_tasks_follow_routing_and_the_queue_override() -> None:
    routes = AppEngineRoutes("http://default:1", {"worker": "http://worker:2", "v2.worker": "http://v2:3"})
    world = World(settings=DispatchSettings(app_engine=routes))
    await world.dispatcher.start(loop=False)
    await world.queue()

    async def app_engine_task(routing: AppEngineRouting | None) -> None:
        request = AppEngineHttpRequest(relative_uri="/work", app_engine_routing=routing)
        await world.tasks.create_task(Q, TaskDraft(app_engine_http_request=request), TaskView.FULL)

    await app_engine_task(None)
    await app_engine_task(AppEngineRouting(service="worker", version="v2"))
    await world.step()
    assert sorted(r.url for r in world.pusher.sent) == ["http://default:1/work", "http://v2:3/work"]
    override = AppEngineRouting(service="worker")
    await world.queues.update_queue(
        Queue(Q, app_engine_routing_override=override), ["app_engine_routing_override"]
    )
    await world.dispatcher.settle()
    await app_engine_task(AppEngineRouting(service="ignored"))
    await world.step()
    assert world.pusher.sent[-1].url == "http://worker:2/work"


async def test_signed_tasks_carry_a_token_and_unsignable_ones_fail(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path / "keys")
    keys.load()
    minter = TokenMinter(keys, "http://issuer")
    world = World(credentials=minter)
    await world.dispatcher.start(loop=False)
    await world.queue(retry_config=RetryConfig(min_backoff=timedelta(seconds=5)))
    oidc = HttpRequest(
        url="https://h/oidc", headers={"Authorization": "forged"}, oidc_token=OidcToken("sa@p")
    )
    await world.tasks.create_task(Q, TaskDraft(http_request=oidc), TaskView.FULL)
    oauth = HttpRequest(url="https://h/oauth", oauth_token=OAuthToken("nobody@p", "scope"))
    unsigned = await world.tasks.create_task(Q, TaskDraft(http_request=oauth), TaskView.FULL)
    await world.step()
    [sent] = world.pusher.sent
    assert sent.headers["Authorization"].startswith("Bearer ey")
    stored = await world.tasks.get_task(unsigned.name, TaskView.FULL)
    assert stored.last_attempt is not None and stored.last_attempt.response_status is not None
    assert "No OAuth token is configured for nobody@p" in stored.last_attempt.response_status.message


async def test_denied_targets_are_refused_without_a_request(world: World) -> None:
    await world.queue()
    with pytest.raises(TargetDenied):
        await world.task("http://169.254.169.254/computeMetadata/v1/")
    await world.task("https://fine.example/x")
    rebound = HttpTarget(uri_override=UriOverride(host="fine.example"))
    await world.queues.update_queue(Queue(Q, http_target=rebound), ["http_target"])
    with pytest.raises(TargetDenied):
        bad = HttpTarget(uri_override=UriOverride(host="metadata.google.internal"))
        await world.queues.update_queue(Queue(Q, http_target=bad), ["http_target"])


async def test_a_claim_whose_lease_ended_before_its_attempt_started_is_not_sent(world: World) -> None:
    """The process was frozen between the claim and the send: the task is due again for any
    claimer, so the stale claim is dropped rather than sent (it could be sent twice)."""
    await world.queue()
    await world.task()
    assert (await world.dispatcher.run_once()).started == 1  # claimed; its sender has not run yet
    world.clock.advance(600 + 30)  # the dispatch deadline and the lease grace pass meanwhile
    await world.dispatcher.settle()
    assert world.pusher.sent == []
    assert await world.step() == 1  # claimed again, and sent once
    assert len(world.pusher.sent) == 1


class SlowClaims(MemoryStore):
    """A store whose claims take ``seconds`` of the fake clock's time (a database round trip)."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds, self.limits = clock, seconds, list[int]()

    async def claim_due_tasks(self, queue: QueueName, now: Any, limit: int, *args: Any, **kw: Any) -> Any:
        self.limits.append(limit)
        await self.clock.sleep(self.seconds)
        return await super().claim_due_tasks(queue, self.clock.now(), limit, *args, **kw)


class TimedPusher(ScriptedPusher):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock, self.times = clock, list[float]()

    async def push(self, request: OutboundRequest) -> AttemptOutcome:
        self.times.append(self.clock.monotonic())
        return await super().push(request)


@pytest.mark.parametrize(
    ("rate", "claim_s", "total"), [(100.0, 0.05, 600), (500.0, 0.5, 2000), (5.0, 0.3, 60)]
)
async def test_claims_run_ahead_of_the_bucket_but_requests_keep_to_it(
    rate: float, claim_s: float, total: int
) -> None:
    """One burst per claim would cap the second case at 200/s; claiming what the bucket earns
    while a claim runs, while held tasks still leave, keeps it at its rate; and no request
    leaves without a token."""
    clock = FakeClock()
    store, pusher = SlowClaims(clock, claim_s), TimedPusher(clock)
    w = World(pusher, clock=clock, store=store, settings=DispatchSettings(claim_batch=500))
    await w.dispatcher.start(loop=True)
    queue = await w.queue(
        rate_limits=RateLimits(max_dispatches_per_second=rate, max_concurrent_dispatches=1000)
    )
    burst = queue.rate_limits.max_burst_size
    for _ in range(total):
        await w.task()
    start = clock.monotonic()
    while len(pusher.sent) < total and clock.monotonic() - start < 60:
        clock.advance(0.01)
        for _ in range(10):
            await asyncio.sleep(0)
    for sent, at in enumerate(pusher.times, start=1):
        assert sent <= burst + rate * (at - start) + 1e-6  # never ahead of the bucket
    elapsed = pusher.times[-1] - start
    assert elapsed <= (total - burst) / rate + 4 * claim_s + 0.1  # and never far behind it
    if rate * claim_s > burst / 2:
        assert max(store.limits) > burst  # a claim asked for more than one burst
    await w.dispatcher.stop()


async def test_every_attempt_and_every_end_is_kept(world: World) -> None:
    await world.queue(retry_config=RetryConfig(max_attempts=2, min_backoff=timedelta(seconds=1)))
    answer = AttemptOutcome(http_status=500, response_headers=(("X-Why", "db down"),), response_body=b"oops")
    world.pusher.scripts["https://h/bad"] = [answer]
    doomed = await world.task("https://h/bad", name=f"{Q}/tasks/doomed")
    fine = await world.task("https://h/ok", name=f"{Q}/tasks/fine")
    await world.step()
    world.clock.advance(1)
    await world.step()
    ends, attempts = await world.store.task_history(doomed.name, world.clock.now())
    assert [(a.attempt, a.http_status, a.response_headers, a.response_body) for a in attempts] == [
        (1, 500, (("X-Why", "db down"),), b"oops"),
        (2, 500, (("X-Why", "db down"),), b"oops"),
    ]
    assert [(e.reason, e.finish_time) for e in ends] == [(FinishReason.MAX_ATTEMPTS, world.clock.now())]
    failed = await world.store.finished_tasks(Q, world.clock.now(), reasons=FAILED_REASONS)
    assert [f.task.name for f in failed.tasks] == [doomed.name]
    ends, attempts = await world.store.task_history(fine.name, world.clock.now())
    assert [e.reason for e in ends] == [FinishReason.SUCCEEDED]
    assert len(attempts) == 1


async def test_no_history_is_kept_when_it_is_off() -> None:
    off = TombstonePolicy(history=HistoryPolicy(retention=timedelta(0)))
    w = World(tombstones=off)
    await w.dispatcher.start(loop=False)
    await w.queue()
    task = await w.task("https://h/ok")
    await w.step()
    assert await w.store.task_history(task.name, w.clock.now()) == ([], [])


async def test_held_tasks_wait_out_a_pause_and_follow_a_new_rate() -> None:
    clock = FakeClock()
    store, pusher = SlowClaims(clock, 0.5), TimedPusher(clock)
    w = World(pusher, clock=clock, store=store, settings=DispatchSettings(claim_batch=500))
    await w.dispatcher.start(loop=True)
    await w.queue(rate_limits=RateLimits(max_dispatches_per_second=500, max_concurrent_dispatches=1000))
    for _ in range(1500):
        await w.task()

    async def run_for(seconds: float) -> None:
        for _ in range(int(seconds / 0.01)):
            clock.advance(0.01)
            for _ in range(10):
                await asyncio.sleep(0)

    await run_for(2)
    assert 0 < len(pusher.sent) < 1500  # the queue is being dispatched
    await w.queues.pause_queue(Q)
    paused_at = len(pusher.sent)
    await run_for(2)
    # Only what had its token before the pause leaves (at most a burst); held tasks stay.
    assert len(pusher.sent) - paused_at <= 100
    slow = RateLimits(max_dispatches_per_second=0.01, max_concurrent_dispatches=1000)
    await w.queues.update_queue(Queue(Q, rate_limits=slow), ["rate_limits.max_dispatches_per_second"])
    await w.queues.resume_queue(Q)
    await run_for(1)
    fast = RateLimits(max_dispatches_per_second=500, max_concurrent_dispatches=1000)
    await w.queues.update_queue(Queue(Q, rate_limits=fast), ["rate_limits.max_dispatches_per_second"])
    before = len(pusher.sent)
    await run_for(1)
    assert len(pusher.sent) - before >= 100  # the new rate applies to held tasks at once
    await w.dispatcher.stop()
