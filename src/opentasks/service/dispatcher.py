"""The dispatcher: claims due tasks and pushes them to their handlers, within each queue's
token bucket and concurrency cap, and records what became of every attempt.

One worker per queue. A worker sleeps until the earliest of: its next task falls due, its
bucket has a token, a concurrency slot frees up, a new task arrives, or its queue changes.
There is no polling tick. ``run_once`` is one pass of every worker, so tests can drive the
dispatcher step by step on a fake clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from msgspec.structs import replace

from opentasks.clock import Clock
from opentasks.credentials.base import CredentialError, Credentials
from opentasks.domain.attempt import after_attempt
from opentasks.domain.limits import MAX_RETRY_DELAY, bounded_wait, later
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.outbound import OutboundRequest, outbound_request
from opentasks.domain.queue import Queue, QueueState, RetryConfig
from opentasks.domain.rate_limit import TokenBucket
from opentasks.domain.routing import AppEngineRoutes
from opentasks.domain.target_policy import TargetDenied, TargetPolicy
from opentasks.domain.task import AttemptFailure, AttemptOutcome, Task
from opentasks.errors import NotFound
from opentasks.service.event_log import default_observers
from opentasks.service.observers import (
    ATTEMPT_FINISHED,
    TASK_FINISHED,
    AttemptFinished,
    FinishReason,
    Observers,
    TaskFinished,
    stop_reason,
)
from opentasks.service.pusher import Pusher
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.base import AttemptResult, Store, Windows
from opentasks.throttled_log import ThrottledLog

_log = logging.getLogger(__name__)
ALERT_INTERVAL_S = 10.0

# How long a queue's worker pauses after an unexpected error: doubling from the first to the
# second while the errors last.
_ERROR_PAUSE_SECONDS = 1.0
_MAX_ERROR_PAUSE_SECONDS = 60.0


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher behaves.

    Attributes:
        app_engine: base URLs that App Engine tasks are sent to, by service and version.
        lease_grace: added to a task's dispatch deadline to form its visibility timeout: an
            attempt that has not reported back by then is considered lost and the task falls
            due again.
        claim_batch: most tasks claimed by one store call.
        shutdown_grace: how long a stopping dispatcher lets attempts in flight finish.
        follow_redirects: follow 3xx answers of HTTP targets (Cloud Tasks was observed not to).
    """

    app_engine: AppEngineRoutes = field(default_factory=AppEngineRoutes)
    lease_grace: timedelta = timedelta(seconds=30)
    claim_batch: int = 500
    shutdown_grace: timedelta = timedelta(seconds=10)
    follow_redirects: bool = False


class Dispatcher:
    """Pushes tasks to their handlers; also the ``DispatchEvents`` of the queue/task services."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        pusher: Pusher,
        *,
        tombstones: TombstonePolicy | None = None,
        settings: DispatchSettings | None = None,
        credentials: Credentials | None = None,
        targets: TargetPolicy | None = None,
        observers: Observers | None = None,
    ) -> None:
        self._store = store
        self._observers = observers if observers is not None else default_observers(clock.monotonic)
        self._clock = clock
        self._pusher = pusher
        self._credentials = credentials
        self._targets = targets or TargetPolicy()
        self._tombstones = tombstones or TombstonePolicy()
        self.settings = settings or DispatchSettings()
        self._workers: dict[QueueName, _QueueWorker] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._results = _ResultWriter(store, clock, self._tombstones)
        # What tasks and handlers can cause again and again is logged at most every 10 s.
        self.alerts = ThrottledLog(_log, clock.monotonic, interval_s=ALERT_INTERVAL_S)
        self._looping = False
        self._stopping = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, *, loop: bool = True) -> None:
        """Recover attempts lost in a crash, then start a worker per queue.

        With ``loop=False`` nothing runs by itself: tests call :meth:`run_once`.
        """
        released = await self._store.release_leases()
        if released:
            _log.info("dispatching again %d task(s) whose attempts were in flight at the last stop", released)
        for queue in await self._store.all_queues():
            self._workers[queue.name] = _QueueWorker(self, queue)
        self._looping = loop
        if loop:
            for worker in self._workers.values():
                worker.start()

    async def stop(self) -> None:
        """Stop claiming, give attempts in flight ``shutdown_grace`` to finish, record their outcomes."""
        self._stopping = True
        for worker in self._workers.values():
            await worker.stop()
        if self._attempts:
            grace = self.settings.shutdown_grace.total_seconds()
            _, unfinished = await asyncio.wait(set(self._attempts), timeout=grace)
            for attempt in unfinished:
                attempt.cancel()
            if unfinished:
                _log.warning(
                    "%d attempt(s) did not finish in time; their tasks will be dispatched again",
                    len(unfinished),
                )
        await self._results.flush()
        await self._pusher.close()

    # -- events from the services -----------------------------------------------------------

    def queue_changed(self, name: QueueName) -> None:
        if not self._stopping:
            self._spawn(self._reload(name))

    def task_added(self, task: Task) -> None:
        worker = self._workers.get(task.name.queue)
        if worker is not None:
            self._revive(worker)
            worker.note_due(task.schedule_time)

    async def _reload(self, name: QueueName) -> None:
        try:
            queue = await self._store.get_queue(name)
        except NotFound:
            worker = self._workers.pop(name, None)
            if worker is not None:
                await worker.stop()
            return
        except Exception:
            _log.exception("could not reload queue %s; its dispatching keeps its previous settings", name)
            return
        worker = self._workers.get(name)
        if worker is None:
            worker = self._workers[name] = _QueueWorker(self, queue)
        else:
            worker.configure(queue)
        self._revive(worker)

    def _revive(self, worker: _QueueWorker) -> None:
        """Start a worker's loop if the dispatcher loops and the worker's loop is not running
        (a new queue, or a loop that died for any reason)."""
        if self._looping and not self._stopping and not worker.running:
            worker.start()

    # -- dispatching ------------------------------------------------------------------------

    async def run_once(self) -> int:
        """One pass of every worker: claim what may be dispatched now and start it. Returns the count."""
        started = 0
        for worker in list(self._workers.values()):
            started += (await worker.pass_once())[0]
        return started

    async def settle(self) -> None:
        """Wait until every attempt started so far has finished and its outcome is stored (tests)."""
        while self._attempts or self._background:
            await asyncio.gather(*self._attempts, *self._background)
        await self._results.flush()

    async def run_task(self, name: TaskName) -> Task:
        """RunTask: dispatch now, whatever the schedule, the queue state, the bucket or the cap."""
        called = self._clock.now()
        worker = self._workers.get(name.queue)
        queue = worker.queue if worker is not None else await self._store.get_queue(name.queue)
        claimed = await self._store.claim_task(name, called, self.settings.lease_grace)
        self.launch(claimed, queue, worker, retry_from=called)
        return claimed

    def launch(
        self, claimed: Task, queue: Queue, worker: _QueueWorker | None, *, retry_from: datetime | None = None
    ) -> None:
        """Start one attempt of its own in the background (RunTask: outside the queue's cap)."""
        self.track(self.attempt(claimed, queue, worker, retry_from))

    def track(self, job: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine that sends attempts; stop() and settle() wait for it."""
        attempt = asyncio.ensure_future(job)
        self._attempts.add(attempt)
        attempt.add_done_callback(self._attempts.discard)

    async def attempt(
        self, claimed: Task, queue: Queue, worker: _QueueWorker | None, retry_from: datetime | None = None
    ) -> None:
        """Send one attempt and queue its result for the store. Never raises."""
        current = worker.queue if worker is not None else queue  # re-targeting applies at once
        started = self._clock.monotonic()
        outcome = await self._send_attempt(claimed, current)
        if worker is not None:
            worker.executed.add(self._clock.monotonic())
        if ATTEMPT_FINISHED in self._observers.wanted:
            self._publish_attempt(claimed, outcome, self._clock.monotonic() - started)
        if outcome.failure == AttemptFailure.REFUSED:
            # Never the body or the headers: they may carry secrets.
            (worker.refusals if worker is not None else self.alerts).warning(
                "queue %s: attempt of task %s was refused: %s",
                claimed.name.queue,
                claimed.name.task_id,
                outcome.detail,
            )
        try:
            after = self._next_state(claimed, outcome, current.retry_config, retry_from)
            self._results.add(AttemptResult(claimed.name, claimed.dispatch_count, after, claimed.named))
            if after is None and TASK_FINISHED in self._observers.wanted:
                self._publish_finished(claimed, outcome, current.retry_config)
            if after is not None and worker is not None:
                worker.note_due(after.schedule_time)
        except Exception:  # the lease expiry dispatches the task again
            self.alerts.exception(
                "queue %s: could not queue the outcome of task %s", claimed.name.queue, claimed.name
            )

    def live(self, name: QueueName) -> tuple[int, int]:
        """Attempts of a queue in flight now, and attempts that ended in the last minute."""
        worker = self._workers.get(name)
        if worker is None:
            return 0, 0
        return worker.inflight, worker.executed.total(self._clock.monotonic())

    def _publish_attempt(self, claimed: Task, outcome: AttemptOutcome, response_seconds: float) -> None:
        last = claimed.last_attempt
        delay = 0.0
        if last is not None and last.schedule_time is not None and last.dispatch_time is not None:
            delay = max(0.0, (last.dispatch_time - last.schedule_time).total_seconds())
        self._observers.attempt_finished(AttemptFinished(claimed, outcome, response_seconds, delay))

    def _publish_finished(self, claimed: Task, outcome: AttemptOutcome, queue_retry: RetryConfig) -> None:
        if outcome.succeeded:
            reason = FinishReason.SUCCEEDED
        else:
            reason = stop_reason(claimed.retry_config or queue_retry, claimed.dispatch_count)
        self._observers.task_finished(TaskFinished(claimed.name, reason, claimed.dispatch_count, outcome))

    async def _send_attempt(self, claimed: Task, queue: Queue) -> AttemptOutcome:
        try:
            request = self._prepared(
                outbound_request(
                    claimed,
                    queue,
                    app_engine=self.settings.app_engine,
                    follow_redirects=self.settings.follow_redirects,
                )
            )
            return await self._pusher.push(request)
        except (TargetDenied, CredentialError) as refusal:
            return AttemptOutcome(failure=AttemptFailure.REFUSED, detail=str(refusal))
        except Exception as error:  # a bug must not strand the task: it fails and is retried
            self.alerts.exception(
                "queue %s: attempt of %s failed unexpectedly", claimed.name.queue, claimed.name
            )
            return AttemptOutcome(failure=AttemptFailure.UNREACHABLE, detail=f"internal error: {error!r}")

    def _next_state(
        self, claimed: Task, outcome: AttemptOutcome, queue_retry: RetryConfig, retry_from: datetime | None
    ) -> Task | None:
        """The task after the attempt (None: done). If the retry policy fails on it (e.g. the
        next time is past the last one a datetime holds), the task is retried anyway, after
        its ``max_backoff`` (clamped), rather than being sent again at every lease expiry."""
        now = self._clock.now()
        try:
            return after_attempt(claimed, outcome, now, queue_retry, retry_from=retry_from)
        except Exception:
            self.alerts.exception(
                "queue %s: could not compute the next attempt of task %s; retrying it after max_backoff",
                claimed.name.queue,
                claimed.name.task_id,
            )
        config = claimed.retry_config or queue_retry
        delay = min(config.max_backoff or timedelta(0), MAX_RETRY_DELAY)
        # The domain rules (counters, last_attempt) with a zero backoff and no stop, then the time.
        anyway = RetryConfig(max_attempts=-1, min_backoff=timedelta(0), max_backoff=timedelta(0))
        retried = after_attempt(
            replace(claimed, retry_config=anyway), outcome, now, anyway, retry_from=retry_from
        )
        if retried is None:
            return None
        return replace(
            retried, retry_config=claimed.retry_config, schedule_time=later(retry_from or now, delay)
        )

    def _prepared(self, request: OutboundRequest) -> OutboundRequest:
        """Check the target against the policy and add the credential the attempt carries."""
        self._targets.check_url(request.url, "the task's URL")
        if request.oidc_token is None and request.oauth_token is None:
            return request
        if self._credentials is None:
            raise CredentialError("This server signs no requests (no credentials are configured).")
        authorization = self._credentials.authorization(request, self._clock.now())
        return replace(request, headers={**request.headers, "Authorization": authorization})

    def _spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _QueueWorker:
    """Dispatches one queue."""

    def __init__(self, dispatcher: Dispatcher, queue: Queue) -> None:
        self._dispatcher = dispatcher
        self._clock = dispatcher._clock
        self._store = dispatcher._store
        self.queue = queue
        limits = queue.rate_limits
        self.bucket = TokenBucket(
            limits.max_dispatches_per_second, limits.max_burst_size, self._clock.monotonic()
        )
        self.refusals = ThrottledLog(_log, self._clock.monotonic, interval_s=ALERT_INTERVAL_S)
        self.inflight = 0  # attempts being sent
        self.executed = MinuteCount()  # attempts ended in the last minute
        self.senders = 0  # coroutines sending this queue's attempts, one attempt at a time each
        self.pending: deque[Task] = deque()  # claimed, waiting for a sender
        self._wake = asyncio.Event()
        self._wake_at: datetime | None = None
        self._blocked_on_slots = False
        self._loop: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.done()

    def start(self) -> None:
        if not self.running:
            self._loop = asyncio.ensure_future(self._run())
            self._loop.add_done_callback(self._loop_ended)

    def _loop_ended(self, loop: asyncio.Task[None]) -> None:
        if not loop.cancelled() and loop.exception() is not None:
            _log.error(
                "dispatching of queue %s stopped; the next change to the queue or new task restarts it",
                self.queue.name,
                exc_info=loop.exception(),
            )

    async def stop(self) -> None:
        # Claimed but unsent tasks stay claimed in the store; their leases make them due again.
        self.pending.clear()
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    def configure(self, queue: Queue) -> None:
        """New settings take effect at once."""
        self.queue = queue
        limits = queue.rate_limits
        self.bucket.reconfigure(
            limits.max_dispatches_per_second, limits.max_burst_size, self._clock.monotonic()
        )
        self._wake.set()

    def note_due(self, when: datetime) -> None:
        """A task falls due at ``when``: wake up if that is sooner than planned."""
        if self._wake_at is None or when < self._wake_at:
            self._wake.set()

    def enqueue(self, claimed: Task) -> None:
        """Hand a claimed task to a sender, starting one if every sender is busy."""
        self.pending.append(claimed)
        if self.senders - self.inflight < len(self.pending):
            self.senders += 1
            self._dispatcher.track(self._send())

    async def _send(self) -> None:
        """Send pending attempts one after another (cheaper than a task per attempt)."""
        try:
            while self.pending:
                claimed = self.pending.popleft()
                self.inflight += 1
                try:
                    await self._dispatcher.attempt(claimed, self.queue, self)
                except Exception:  # attempt() does not raise; if it ever does, the next one still goes
                    _log.exception("queue %s: attempt of %s failed", self.queue.name, claimed.name)
                finally:
                    self.inflight -= 1
                    self._slot_freed()
        finally:
            self.senders -= 1

    def _slot_freed(self) -> None:
        # When the cap is what holds the queue back, claim in batches rather than per freed slot.
        if self._blocked_on_slots and self._free_slots() >= self._claim_threshold():
            self._wake.set()

    def _free_slots(self) -> int:
        return self.queue.rate_limits.max_concurrent_dispatches - self.inflight - len(self.pending)

    def _claim_threshold(self) -> int:
        cap = self.queue.rate_limits.max_concurrent_dispatches
        return max(1, min(self._dispatcher.settings.claim_batch, cap // 4))

    async def _run(self) -> None:
        """Pass, wait, repeat. An error anywhere in a round is logged and the loop goes on after a
        pause (1 s, doubling while the errors last, up to a minute), so a queue never stops."""
        failures = 0
        while True:
            try:
                await self._round()
                failures = 0
            except Exception:
                failures += 1
                pause = min(_ERROR_PAUSE_SECONDS * 2 ** min(failures - 1, 6), _MAX_ERROR_PAUSE_SECONDS)
                _log.exception("dispatching queue %s failed; trying again in %g s", self.queue.name, pause)
                self._wake_at = None
                await self._clock.sleep(pause)

    async def _round(self) -> None:
        """One pass, then wait until woken or until the pass says to look again."""
        self._wake.clear()
        delay = (await self.pass_once())[1]
        if delay == 0:
            return
        if delay is not None:
            delay = bounded_wait(delay)
            self._wake_at = later(self._clock.now(), timedelta(seconds=delay))
        try:
            await self._clock.wait_for(self._wake, delay)
        finally:
            self._wake_at = None

    async def pass_once(self) -> tuple[int, float | None]:
        """Claim and start what may go now. Returns (started, seconds to wait or None = until woken)."""
        self._blocked_on_slots = False
        if self.queue.state != QueueState.RUNNING:
            return 0, None
        free = self._free_slots()
        if free < self._claim_threshold() and (self.inflight or self.pending):
            self._blocked_on_slots = True
            return 0, None
        monotonic = self._clock.monotonic()
        tokens = self.bucket.available(monotonic)
        if tokens <= 0:
            return 0, self.bucket.seconds_until_available(monotonic)
        limit = min(free, tokens, self._dispatcher.settings.claim_batch)
        now = self._clock.now()
        claim = await self._store.claim_due_tasks(
            self.queue.name, now, limit, self._dispatcher.settings.lease_grace
        )
        # Charge the bucket when the tasks leave, not when the claim began: a slow commit must
        # not bunch requests on the wire beyond what the bucket allows.
        self.bucket.take(self._clock.monotonic(), len(claim.tasks))
        for task in claim.tasks:
            self.enqueue(task)
        if len(claim.tasks) == limit:
            return len(claim.tasks), 0.0  # there may be more: look again straight away
        if claim.next_due is None:
            return len(claim.tasks), None
        return len(claim.tasks), max(0.0, (claim.next_due - self._clock.now()).total_seconds())


class _ResultWriter:
    """Collects attempt results and stores them in batches (one store call per batch)."""

    def __init__(self, store: Store, clock: Clock, tombstones: TombstonePolicy) -> None:
        self._store = store
        self._clock = clock
        self._tombstones = tombstones
        self._pending: list[AttemptResult] = []
        self._flusher: asyncio.Task[None] | None = None
        self._log = ThrottledLog(_log, clock.monotonic, interval_s=ALERT_INTERVAL_S)

    def add(self, result: AttemptResult) -> None:
        self._pending.append(result)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_all())

    async def flush(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
        if self._pending:
            await self._flush_all()

    async def _flush_all(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                windows = self._tombstones.windows(self._clock.now())
                await self._store.finish_attempts(batch, windows)
            except Exception:
                # One bad result must not cost the others theirs: store them one by one.
                self._log.exception(
                    "could not record %d attempt outcome(s) together; recording them one by one", len(batch)
                )
                await self._finish_one_by_one(batch)

    async def _finish_one_by_one(self, batch: list[AttemptResult]) -> None:
        try:
            windows = self._tombstones.windows(self._clock.now())
        except Exception:
            self._log.exception(
                "could not record %d attempt outcome(s); their tasks will be dispatched again", len(batch)
            )
            return
        failed = sum(await asyncio.gather(*(self._finish_alone(result, windows) for result in batch)))
        if failed:
            # The tasks stay claimed; their leases expire and they are dispatched again.
            self._log.error(
                "could not record %d attempt outcome(s); their tasks will be dispatched again", failed
            )

    async def _finish_alone(self, result: AttemptResult, windows: Windows) -> bool:
        """Store one result; if that fails, store it as a retry at a clamped time. True if neither worked."""
        try:
            await self._store.finish_attempts([result], windows)
            return False
        except Exception as error:
            self._log.warning("could not record the outcome of %s: %r", result.name, error)
        if result.task is None:
            return True
        horizon = later(self._clock.now(), MAX_RETRY_DELAY)
        task = replace(result.task, schedule_time=min(result.task.schedule_time, horizon))
        try:
            await self._store.finish_attempts([dataclasses.replace(result, task=task)], windows)
        except Exception as error:
            self._log.warning("could not record %s as retried either: %r", result.name, error)
            return True
        self._log.warning("recorded %s as retried at %s instead", result.name, task.schedule_time.isoformat())
        return False


class MinuteCount:
    """Events of the last 60 seconds, counted in one-second slots (no allocation per event)."""

    def __init__(self) -> None:
        self._slots = [0] * 60
        self._seconds = [-1] * 60  # the second each slot counts

    def add(self, monotonic: float) -> None:
        second = int(monotonic)
        index = second % 60
        if self._seconds[index] != second:
            self._seconds[index] = second
            self._slots[index] = 0
        self._slots[index] += 1

    def total(self, monotonic: float) -> int:
        oldest = int(monotonic) - 59
        return sum(n for n, second in zip(self._slots, self._seconds, strict=True) if second >= oldest)
