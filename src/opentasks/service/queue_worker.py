"""One queue's worker: claims the queue's due tasks within its token bucket and concurrency
cap and hands them to its senders, which run them through the :class:`AttemptRunner`.

A worker sleeps until the earliest of: its next task falls due, its bucket has a token, a
concurrency slot frees up, or it is woken (a new task, a sooner retry, a queue change). It
gets everything through its constructor and knows nothing of the dispatcher.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from opentasks.clock import Clock
from opentasks.domain.limits import bounded_wait, later
from opentasks.domain.queue import Queue, QueueState
from opentasks.domain.rate_limit import TokenBucket
from opentasks.domain.task import Task
from opentasks.service.attempts import (
    ALERT_INTERVAL_S,
    DISPATCH_LOG,
    AttemptRunner,
    DispatchSettings,
    MinuteCount,
)
from opentasks.storage.base import Claim, Fence, Store
from opentasks.throttled_log import ThrottledLog

# How long a queue's worker pauses after an unexpected error: doubling from the first to the
# second while the errors last.
_ERROR_PAUSE_SECONDS = 1.0
_MAX_ERROR_PAUSE_SECONDS = 60.0
# How often a worker counts again the attempts another node still has in flight on its queue.
_FOREIGN_RECOUNT_SECONDS = 1.0
# The longest claim time a worker plans for when it claims ahead of its bucket, and how much
# each claim moves its estimate.
_MAX_CLAIM_AHEAD_SECONDS = 1.0
_CLAIM_TIME_WEIGHT = 0.2


class QueueWorker:
    """Dispatches one queue while this node holds it.

    ``fence`` goes with every claim, so a worker whose node lost the queue claims nothing; and
    while ``proven()`` is false (its node could not renew its leases in time) it does not even
    try.
    ``foreign`` counts attempts another node (the queue's previous holder) may still have in
    flight: they take concurrency slots until their leases end or their results come in. With a
    fence the worker counts them at its first pass and again every second while any remain.
    ``full_bucket=False`` starts the bucket empty (a queue taken over: the previous holder may
    just have spent the burst).

    A claim takes time (a database round trip or several), during which the bucket refills. So
    a worker claims ahead: the tokens it has plus those its rate will earn while the claim runs
    (its recent claims' time, estimated). Claimed tasks leave only with a token: those beyond
    the tokens there are when the claim returns are held and let go as tokens come, so the
    requests on the wire keep to the bucket exactly, while a fast queue is no longer bound to
    one burst per claim.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        store: Store,
        clock: Clock,
        settings: DispatchSettings,
        runner: AttemptRunner,
        fence: Fence | None = None,
        full_bucket: bool = True,
        proven: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._runner = runner
        self.queue = queue
        self.fence = fence
        self.foreign = 0
        self._count_foreign = fence is not None  # at the first pass
        self.fenced = False  # the last claim was refused: the node no longer proved its lease
        self._proven = proven
        limits = queue.rate_limits
        self.bucket = TokenBucket(
            limits.max_dispatches_per_second,
            limits.max_burst_size,
            clock.monotonic(),
            full=full_bucket,
        )
        self.refusals = ThrottledLog(DISPATCH_LOG, clock.monotonic, interval_s=ALERT_INTERVAL_S)
        self.inflight = 0  # attempts being sent
        self.executed = MinuteCount()  # attempts ended in the last minute
        self.senders = 0  # coroutines sending this queue's attempts, one attempt at a time each
        self.pending: deque[Task] = deque()  # claimed, waiting for a sender
        self.held: deque[Task] = deque()  # claimed ahead, waiting for a token
        self._releaser: asyncio.Task[None] | None = None
        self.claim_seconds = 0.0  # how long claims take, recently (a moving average)
        self._wake = asyncio.Event()
        self._wake_at: datetime | None = None
        self._blocked_on_slots = False
        self._loop: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.done()

    def live(self) -> tuple[int, int]:
        """Attempts in flight now, and attempts that ended in the last minute."""
        return self.inflight, self.executed.total(self._clock.monotonic())

    def start(self) -> None:
        if not self.running:
            self._loop = asyncio.ensure_future(self._run())
            self._loop.add_done_callback(self._loop_ended)

    def _loop_ended(self, loop: asyncio.Task[None]) -> None:
        if not loop.cancelled() and loop.exception() is not None:
            DISPATCH_LOG.error(
                "dispatching of queue %s stopped; the next change to the queue or new task restarts it",
                self.queue.name,
                exc_info=loop.exception(),
            )

    async def stop(self, *, drop_pending: bool = True) -> None:
        """Stop claiming. Tasks claimed but not yet sent are sent all the same unless
        ``drop_pending`` (the queue is gone); dropped ones stay claimed until their leases end."""
        if self._releaser is not None:
            self._releaser.cancel()
        if drop_pending:
            self.pending.clear()
            self.held.clear()
        else:
            self._let_go(len(self.held))
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    def configure(self, queue: Queue) -> None:
        """New settings take effect at once (held tasks wait for tokens at the new rate)."""
        self.queue = queue
        limits = queue.rate_limits
        self.bucket.reconfigure(
            limits.max_dispatches_per_second, limits.max_burst_size, self._clock.monotonic()
        )
        if self._releaser is not None:
            self._releaser.cancel()  # it may be asleep for a token at the old rate
            self._releaser = None
        self._wake.set()

    def note_due(self, when: datetime) -> None:
        """A task falls due at ``when``: wake up if that is sooner than planned."""
        if self._wake_at is None or when < self._wake_at:
            self._wake.set()

    async def run_now(self, claimed: Task, retry_from: datetime) -> None:
        """RunTask's attempt of this queue's task: outside the bucket and the cap."""
        due = await self._runner.attempt(claimed, self.queue, self.refusals, self.executed, retry_from)
        if due is not None:
            self.note_due(due)

    def enqueue(self, claimed: Task) -> None:
        """Hand a claimed task to a sender, starting one if every sender is busy."""
        self.pending.append(claimed)
        if self.senders - self.inflight < len(self.pending):
            self.senders += 1
            self._runner.track(self._send())

    async def _send(self) -> None:
        """Send pending attempts one after another (cheaper than a task per attempt)."""
        runner = self._runner
        try:
            while self.pending:
                claimed = self.pending.popleft()
                self.inflight += 1
                try:
                    async with runner.slots:  # the node's cap on attempts in flight
                        if self._lease_ended(claimed):
                            continue
                        due = await runner.attempt(claimed, self.queue, self.refusals, self.executed)
                    if due is not None:
                        self.note_due(due)
                except Exception:  # attempt() does not raise; if it ever does, the next one still goes
                    DISPATCH_LOG.exception("queue %s: attempt of %s failed", self.queue.name, claimed.name)
                finally:
                    self.inflight -= 1
                    self._slot_freed()
        finally:
            self.senders -= 1

    def _lease_ended(self, claimed: Task) -> bool:
        """Whether the claim's lease would end before an attempt started now could run for its
        whole dispatch deadline (the task waited longer than the lease grace: it was held that
        long, or the process was frozen or starved): the task falls due again for any claimer
        then, so sending it now could send it twice and take a slot its new claimer counts on."""
        attempt = claimed.last_attempt
        if attempt is None or attempt.dispatch_time is None:
            return False
        # The lease is the dispatch deadline plus the grace from the claim: an attempt started
        # within the grace ends (or times out) before the lease does.
        if self._clock.now() <= later(attempt.dispatch_time, self._settings.lease_grace):
            return False
        DISPATCH_LOG.warning(
            "queue %s: not sending %s: its lease would end before its attempt could",
            self.queue.name,
            claimed.name,
        )
        return True

    def _slot_freed(self) -> None:
        # When the cap is what holds the queue back, claim in batches rather than per freed slot.
        if self._blocked_on_slots and self._free_slots() >= self._claim_threshold():
            self._wake.set()

    def _free_slots(self) -> int:
        cap = self.queue.rate_limits.max_concurrent_dispatches
        return cap - self.inflight - len(self.pending) - len(self.held) - self.foreign

    def _claim_threshold(self) -> int:
        cap = self.queue.rate_limits.max_concurrent_dispatches
        return max(1, min(self._settings.claim_batch, cap // 4))

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
                DISPATCH_LOG.exception(
                    "dispatching queue %s failed; trying again in %g s", self.queue.name, pause
                )
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
            return 0, None  # held tasks wait for the resume (or go due again when their lease ends)
        if self.held:
            self._release_held()
            if len(self.held) > self._earned_while_claiming():
                return 0, None  # the releaser wakes the worker when the next claim is due
        if self.foreign or self._count_foreign:
            await self._recount_foreign()
        free = self._free_slots()
        if free < self._claim_threshold() and (self.inflight or self.pending):
            self._blocked_on_slots = True
            # Slots freed by another node's attempts wake no one here: count them again soon.
            return 0, _FOREIGN_RECOUNT_SECONDS if self.foreign else None
        if free <= 0:  # only another node's attempts fill the slots: look again when some end
            return 0, _FOREIGN_RECOUNT_SECONDS
        if not self._proven():
            self.fenced = True  # the node's next successful round wakes this worker
            return 0, None
        monotonic = self._clock.monotonic()
        # Held tasks take the first tokens. A claim asks for what is left of those there are,
        # those earned while it runs, and as many again: what it brings must last until the
        # next claim (started as soon as so few are held) returns, or tokens go unspent.
        tokens = self.bucket.available(monotonic) - len(self.held)
        limit = min(free, tokens + 2 * self._earned_while_claiming(), self._settings.claim_batch)
        if limit <= 0:
            return 0, self.bucket.seconds_until_available(monotonic)
        return await self._claim(limit)

    def _earned_while_claiming(self) -> int:
        """Tokens the bucket will earn while the next claim runs, by the recent claims' time."""
        return int(self.bucket.rate * min(self.claim_seconds, _MAX_CLAIM_AHEAD_SECONDS))

    def _release_held(self) -> int:
        """Let held tasks go with the tokens there are (how many went); the releaser lets the
        others go as tokens come."""
        monotonic = self._clock.monotonic()
        count = min(len(self.held), self.bucket.available(monotonic))
        if count > 0:
            self.bucket.take(monotonic, count)
            self._let_go(count)
        if self.held and (self._releaser is None or self._releaser.done()):
            self._releaser = asyncio.ensure_future(self._release_as_tokens_come())
        return count

    async def _release_as_tokens_come(self) -> None:
        """Let held tasks go one token at a time, and wake the worker once so few are left that
        they will be gone before a claim started now returns."""
        while self.held and self.queue.state == QueueState.RUNNING:
            await self._clock.sleep(self.bucket.seconds_until_available(self._clock.monotonic()))
            if self.queue.state != QueueState.RUNNING:
                return
            monotonic = self._clock.monotonic()
            count = min(len(self.held), self.bucket.available(monotonic))
            if count > 0:
                self.bucket.take(monotonic, count)
                self._let_go(count)
            if len(self.held) <= self._earned_while_claiming():
                self._wake.set()

    def _let_go(self, count: int) -> None:
        for _ in range(count):
            self.enqueue(self.held.popleft())

    async def _claim(self, limit: int) -> tuple[int, float | None]:
        """Claim up to ``limit`` due tasks and start them; (started, seconds to wait)."""
        now, started = self._clock.now(), self._clock.monotonic()
        request = asyncio.ensure_future(
            self._store.claim_due_tasks(self.queue.name, now, limit, self._settings.lease_grace, self.fence)
        )
        try:
            claim = await asyncio.shield(request)
        except asyncio.CancelledError:
            # Stopped while claiming (a hand-over): tasks claimed all the same are sent, not
            # left leased for a dispatch deadline.
            request.add_done_callback(self._send_orphans)
            raise
        took = self._clock.monotonic() - started
        self.claim_seconds += (took - self.claim_seconds) * _CLAIM_TIME_WEIGHT
        if claim.fenced:
            self.fenced = True  # the node's next round renews the lease or stops this worker
            return 0, None
        self.fenced = False
        # Charge the bucket when the tasks leave, not when the claim began: a slow commit must
        # not bunch requests on the wire beyond what the bucket allows.
        self.held.extend(claim.tasks)
        if self.queue.state != QueueState.RUNNING:
            return 0, None  # paused while claiming: they wait for the resume like other held tasks
        started = self._release_held()
        if len(self.held) > self._earned_while_claiming():
            return started, None  # the releaser wakes the worker when the next claim is due
        if len(claim.tasks) == limit:
            return len(claim.tasks), 0.0  # there may be more: look again straight away
        wait = (
            None if claim.next_due is None else max(0.0, (claim.next_due - self._clock.now()).total_seconds())
        )
        if self.foreign:
            wait = _FOREIGN_RECOUNT_SECONDS if wait is None else min(wait, _FOREIGN_RECOUNT_SECONDS)
        return len(claim.tasks), wait

    def _send_orphans(self, request: asyncio.Future[Claim]) -> None:
        if not request.cancelled() and request.exception() is None:
            for task in request.result().tasks:
                self.enqueue(task)

    async def _recount_foreign(self) -> None:
        """The previous holder's attempts still leased: all leased tasks but this worker's own."""
        leased = await self._store.leased_tasks(self.queue.name, self._clock.now())
        self._count_foreign = False
        self.foreign = max(0, leased - self.inflight - len(self.pending) - len(self.held))

    def wake(self) -> None:
        self._wake.set()
