"""One attempt, start to end: build the request, check its target and credential, push it,
decide what becomes of the task, tell the observers, and hand the result to the result writer,
which stores results in batches.

The lowest part of dispatching: it knows nothing of queue workers or of the dispatcher.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from msgspec.structs import replace

from opentasks.clock import Clock
from opentasks.credentials.base import CredentialError, Credentials
from opentasks.domain.attempt import after_attempt, attempted
from opentasks.domain.history import FinishReason, attempt_record
from opentasks.domain.limits import MAX_RETRY_DELAY, later
from opentasks.domain.outbound import OutboundRequest, outbound_request
from opentasks.domain.queue import Queue, RetryConfig
from opentasks.domain.routing import AppEngineRoutes
from opentasks.domain.target_policy import TargetDenied, TargetPolicy
from opentasks.domain.task import AttemptFailure, AttemptOutcome, Task
from opentasks.service.observers import (
    ATTEMPT_FINISHED,
    TASK_FINISHED,
    AttemptFinished,
    Observers,
    TaskFinished,
    stop_reason,
)
from opentasks.service.pusher import Pusher
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.base import AttemptResult, Store, Windows
from opentasks.throttled_log import ThrottledLog

# Every part of dispatching logs under one name.
DISPATCH_LOG = logging.getLogger("opentasks.service.dispatcher")
ALERT_INTERVAL_S = 10.0


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
        max_attempts_in_flight: most attempts the node sends at once over all its queues (each
            holds a connection); claimed tasks beyond it wait for a slot.
    """

    app_engine: AppEngineRoutes = field(default_factory=AppEngineRoutes)
    lease_grace: timedelta = timedelta(seconds=30)
    claim_batch: int = 500
    shutdown_grace: timedelta = timedelta(seconds=10)
    follow_redirects: bool = False
    max_attempts_in_flight: int = 10_000


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


class AttemptRunner:
    """Sends attempts and records their outcomes; also keeps the coroutines that send them, so
    that a stopping or settling dispatcher can wait for them."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        pusher: Pusher,
        observers: Observers,
        *,
        settings: DispatchSettings,
        tombstones: TombstonePolicy,
        credentials: Credentials | None,
        targets: TargetPolicy,
    ) -> None:
        self._clock = clock
        self._pusher = pusher
        self._observers = observers
        self._settings = settings
        self._credentials = credentials
        self._targets = targets
        self.results = ResultWriter(store, clock, tombstones)
        self._keep_history = tombstones.history.enabled
        # What tasks and handlers can cause again and again is logged at most every 10 s.
        self.alerts = ThrottledLog(DISPATCH_LOG, clock.monotonic, interval_s=ALERT_INTERVAL_S)
        self.jobs: set[asyncio.Task[Any]] = set()
        # Every queue's cap allows 1,000 by default: a thousand queues with due tasks would
        # otherwise open connections until the process has no file left (for its database too).
        self.slots = asyncio.Semaphore(settings.max_attempts_in_flight)

    def track(self, job: Coroutine[Any, Any, object]) -> None:
        """Run a coroutine that sends attempts; :meth:`finish` waits for it."""
        task = asyncio.ensure_future(job)
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)

    async def finish(self, grace_s: float) -> None:
        """Give the coroutines that send attempts ``grace_s`` to end, cancel the rest, store
        every result, close the pusher."""
        if self.jobs:
            _, unfinished = await asyncio.wait(set(self.jobs), timeout=grace_s)
            for job in unfinished:
                job.cancel()
            if unfinished:
                DISPATCH_LOG.warning(
                    "%d attempt(s) did not finish in time; their tasks will be dispatched again",
                    len(unfinished),
                )
        await self.results.flush()
        await self._pusher.close()

    async def attempt(
        self,
        claimed: Task,
        queue: Queue,
        refusals: ThrottledLog | None = None,
        executed: MinuteCount | None = None,
        retry_from: datetime | None = None,
    ) -> datetime | None:
        """Send one attempt and queue its result for the store. Never raises.

        ``queue`` is the queue as it is now (re-targeting applies at once); ``refusals`` logs
        refused attempts (default: the alerts); ``executed`` counts the attempt when it ends;
        ``retry_from`` is when a RunTask was called. Returns when the task falls due again, or
        None if it is finished (or its outcome could not be queued: the lease brings it back).
        """
        started = self._clock.monotonic()
        outcome = await self._send(claimed, queue)
        if executed is not None:
            executed.add(self._clock.monotonic())
        if ATTEMPT_FINISHED in self._observers.wanted:
            self._publish_attempt(claimed, outcome, self._clock.monotonic() - started)
        if outcome.failure == AttemptFailure.REFUSED:
            # Never the body or the headers: they may carry secrets.
            (refusals or self.alerts).warning(
                "queue %s: attempt of task %s was refused: %s",
                claimed.name.queue,
                claimed.name.task_id,
                outcome.detail,
            )
        try:
            after = self._next_state(claimed, outcome, queue.retry_config, retry_from)
            self.results.add(self._result(claimed, outcome, after, queue.retry_config, started))
            if after is None and TASK_FINISHED in self._observers.wanted:
                self._publish_finished(claimed, outcome, queue.retry_config)
        except Exception:  # the lease expiry dispatches the task again
            self.alerts.exception(
                "queue %s: could not queue the outcome of task %s", claimed.name.queue, claimed.name
            )
            return None
        return None if after is None else after.schedule_time

    def _publish_attempt(self, claimed: Task, outcome: AttemptOutcome, response_seconds: float) -> None:
        last = claimed.last_attempt
        delay = 0.0
        if last is not None and last.schedule_time is not None and last.dispatch_time is not None:
            delay = max(0.0, (last.dispatch_time - last.schedule_time).total_seconds())
        self._observers.attempt_finished(AttemptFinished(claimed, outcome, response_seconds, delay))

    def _result(
        self,
        claimed: Task,
        outcome: AttemptOutcome,
        after: Task | None,
        queue_retry: RetryConfig,
        started: float,
    ) -> AttemptResult:
        """The result for the store; with the attempt's record and the task's end when history is kept."""
        if not self._keep_history:
            return AttemptResult(claimed.name, claimed.dispatch_count, after, claimed.named)
        took = timedelta(seconds=self._clock.monotonic() - started)
        return AttemptResult(
            claimed.name,
            claimed.dispatch_count,
            after,
            claimed.named,
            attempt=attempt_record(claimed, outcome, took),
            finish=None if after is not None else _finish_reason(claimed, outcome, queue_retry),
            finish_time=None if after is not None else self._clock.now(),
            finished_as=None if after is not None else attempted(claimed, outcome, self._clock.now()),
        )

    def _publish_finished(self, claimed: Task, outcome: AttemptOutcome, queue_retry: RetryConfig) -> None:
        reason = _finish_reason(claimed, outcome, queue_retry)
        self._observers.task_finished(TaskFinished(claimed.name, reason, claimed.dispatch_count, outcome))

    async def _send(self, claimed: Task, queue: Queue) -> AttemptOutcome:
        try:
            request = self._prepared(
                outbound_request(
                    claimed,
                    queue,
                    app_engine=self._settings.app_engine,
                    follow_redirects=self._settings.follow_redirects,
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


def _finish_reason(claimed: Task, outcome: AttemptOutcome, queue_retry: RetryConfig) -> FinishReason:
    if outcome.succeeded:
        return FinishReason.SUCCEEDED
    return stop_reason(claimed.retry_config or queue_retry, claimed.dispatch_count)


class ResultWriter:
    """Collects attempt results and stores them in batches (one store call per batch)."""

    def __init__(self, store: Store, clock: Clock, tombstones: TombstonePolicy) -> None:
        self._store = store
        self._clock = clock
        self._tombstones = tombstones
        self._pending: list[AttemptResult] = []
        self._flusher: asyncio.Task[None] | None = None
        self._log = ThrottledLog(DISPATCH_LOG, clock.monotonic, interval_s=ALERT_INTERVAL_S)

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
