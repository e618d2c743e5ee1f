"""The server's :class:`~opentasks.service.insights.QueueInsights`: the store's counts (kept as
tasks come and go) and the dispatcher's live numbers, never a scan of tasks."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol

from opentasks.clock import Clock
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue, QueueState
from opentasks.domain.stats import QueueStats
from opentasks.storage import base
from opentasks.storage.base import Store, TaskCounts


class LiveDispatch(Protocol):
    """What only the dispatcher knows (the :class:`~opentasks.service.dispatcher.Dispatcher`)."""

    def live(self, name: QueueName) -> tuple[int, int]:
        """(attempts in flight now, attempts that ended in the last minute) of a queue."""
        ...


class StoreInsights:
    """Queue numbers from ``Store.task_counts`` and the dispatcher (None: nothing dispatches)."""

    def __init__(self, store: Store, clock: Clock, live: LiveDispatch | None = None) -> None:
        self._store = store
        self._clock = clock
        self._live = live

    async def queue_stats(self, name: QueueName) -> QueueStats:
        queue = await self._store.get_queue(name)  # NotFound for a missing queue
        now = self._clock.now()
        counts = (await self._store.task_counts(now, name)).get(name)
        if counts is None:  # deleted in between
            raise base.queue_missing()
        return self._stats(queue, counts)

    async def queues_stats(self, names: Collection[QueueName]) -> dict[QueueName, QueueStats]:
        wanted = set(names)
        return {queue.name: stats for queue, stats in await self.all_queue_stats() if queue.name in wanted}

    async def all_queue_stats(self) -> list[tuple[Queue, QueueStats]]:
        """Every queue with its numbers: two store reads whatever the number of tasks."""
        queues = await self._store.all_queues()
        counts = await self._store.task_counts(self._clock.now())
        return [(queue, self._stats(queue, counts.get(queue.name, TaskCounts()))) for queue in queues]

    def _stats(self, queue: Queue, counts: TaskCounts) -> QueueStats:
        in_flight, executed = self._live.live(queue.name) if self._live is not None else (0, 0)
        running = queue.state == QueueState.RUNNING
        return QueueStats(
            tasks_count=counts.tasks,
            due_tasks_count=max(0, counts.tasks - counts.scheduled),
            oldest_estimated_arrival_time=counts.oldest,
            executed_last_minute_count=executed,
            concurrent_dispatches_count=in_flight,
            effective_execution_rate=queue.rate_limits.max_dispatches_per_second if running else 0.0,
        )


def oldest_due_age(stats: QueueStats, now: datetime) -> float:
    """Seconds since the oldest task fell due (0 when none has)."""
    oldest = stats.oldest_estimated_arrival_time
    if oldest is None or oldest > now or stats.due_tasks_count == 0:
        return 0.0
    return (now - oldest).total_seconds()
