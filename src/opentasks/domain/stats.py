"""What an operator or the v2beta3 API can learn about a queue without listing its tasks."""

from __future__ import annotations

from datetime import datetime

import msgspec


class QueueStats(msgspec.Struct, frozen=True):
    """A queue's numbers at one moment (Cloud Tasks v2beta3 ``QueueStats``, plus the split that
    metrics need).

    Attributes:
        tasks_count: tasks in the queue, due or not, including those being attempted.
        due_tasks_count: of those, the tasks whose ``schedule_time`` has passed.
        oldest_estimated_arrival_time: the earliest ``schedule_time`` of a task in the queue
            (None when the queue is empty).
        executed_last_minute_count: attempts that ended (any outcome) in the last minute.
        concurrent_dispatches_count: attempts in flight now.
        effective_execution_rate: dispatches per second the queue may make now (its configured
            rate while RUNNING, 0 when PAUSED or DISABLED).
    """

    tasks_count: int = 0
    due_tasks_count: int = 0
    oldest_estimated_arrival_time: datetime | None = None
    executed_last_minute_count: int = 0
    concurrent_dispatches_count: int = 0
    effective_execution_rate: float = 0.0
