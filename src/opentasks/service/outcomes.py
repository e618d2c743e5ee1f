"""Attempts that ended, counted per queue and minute on this node and added to the store every
few seconds, where the dashboard reads them summed over every node (the last hour's chart).

Counting is an observer of ``attempt_finished``: one dictionary update on the dispatcher's path,
never an await. A flusher hands what was counted to :meth:`Store.add_outcomes` every
:data:`FLUSH_EVERY_S` seconds of the clock and once more at :meth:`OutcomeCounter.stop`. When the
store fails, the counts are kept for the next flush, but only those of the last hour (the store
would drop older ones) and at most ``max_pending`` queue-minutes (the oldest go first), so a
store that stays down costs bounded memory.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from opentasks.clock import Clock
from opentasks.domain.browse import OutcomeMinute
from opentasks.domain.names import QueueName
from opentasks.domain.task import AttemptFailure, AttemptOutcome
from opentasks.service.observers import AttemptFinished, Observer
from opentasks.storage.base import Store
from opentasks.throttled_log import ThrottledLog

_log = logging.getLogger(__name__)
FLUSH_EVERY_S = 10.0
MAX_PENDING = 20_000  # queue-minutes kept while the store cannot take them
KEPT = timedelta(hours=1)

_ONE_MINUTE = timedelta(minutes=1)
_Key = tuple[QueueName, datetime]  # (queue, start of the minute)


def succeeded(outcome: AttemptOutcome) -> bool:
    """Whether an attempt counts as succeeded: its handler answered 2xx."""
    return outcome.failure == AttemptFailure.NONE and 200 <= outcome.http_status < 300


class OutcomeCounter(Observer):
    """Counts ended attempts per queue and minute and adds them to ``store`` as node ``node_id``.

    Subscribe it to the dispatcher's :class:`~opentasks.service.observers.Observers`, then
    :meth:`start` it once the store is open and :meth:`stop` it before the store closes (after
    the dispatcher stopped, so that the last attempts are counted)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        node_id: str,
        *,
        flush_every_s: float = FLUSH_EVERY_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._store = store
        self._clock = clock
        self._node_id = node_id
        self._flush_every_s = flush_every_s
        self._max_pending = max_pending
        self._counts: dict[_Key, list[int]] = {}  # [succeeded, failed], oldest minute first
        self._stopping = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._errors = ThrottledLog(_log, clock.monotonic)
        self._minute = self._minute_end = _minute(clock.now())  # the minute being counted

    @property
    def pending(self) -> int:
        """Queue-minutes counted and not yet stored."""
        return len(self._counts)

    def attempt_finished(self, event: AttemptFinished) -> None:
        now = self._clock.now()
        if not self._minute <= now < self._minute_end:
            self._minute = _minute(now)
            self._minute_end = self._minute + _ONE_MINUTE
        key = (event.task.name.queue, self._minute)
        counts = self._counts.get(key)
        if counts is None:
            if len(self._counts) >= self._max_pending:
                del self._counts[next(iter(self._counts))]  # the oldest
            counts = self._counts[key] = [0, 0]
        counts[0 if succeeded(event.outcome) else 1] += 1

    async def start(self) -> None:
        """Flush every ``flush_every_s`` seconds of the clock until :meth:`stop`."""
        if self._flusher is None:
            self._stopping.clear()
            self._flusher = asyncio.create_task(self._run(), name="opentasks-outcomes")

    async def stop(self) -> None:
        """Stop flushing on the clock and store what was counted (one last try)."""
        self._stopping.set()
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await flusher
        await self.flush()

    async def _run(self) -> None:
        while not await self._clock.wait_for(self._stopping, self._flush_every_s):
            await self.flush()

    async def flush(self) -> bool:
        """Add what was counted to the store now; False (the counts kept, the failure logged)
        if the store refused. Attempts that end meanwhile are counted for the next flush."""
        async with self._flushing:
            if not self._counts:
                return True
            taken, self._counts = self._counts, {}
            minutes = [OutcomeMinute(queue, minute, s, f) for (queue, minute), (s, f) in taken.items()]
            try:
                await self._store.add_outcomes(self._node_id, minutes)
            except Exception as error:  # the store's trouble; the counts wait for the next flush
                self._errors.warning("could not store attempt outcomes (kept for the next try): %s", error)
                self._keep(taken)
                return False
            return True

    def _keep(self, taken: dict[_Key, list[int]]) -> None:
        """Put counts the store refused back before those counted since, dropping minutes over
        an hour old and the oldest beyond ``max_pending``."""
        oldest = _minute(self._clock.now()) - KEPT
        merged = {key: counts for key, counts in taken.items() if key[1] >= oldest}
        for key, (ok, failed) in self._counts.items():
            counts = merged.setdefault(key, [0, 0])
            counts[0] += ok
            counts[1] += failed
        keys = sorted(merged, key=lambda key: key[1])[-self._max_pending :]
        self._counts = {key: merged[key] for key in keys}


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)
