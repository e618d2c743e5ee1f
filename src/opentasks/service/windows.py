"""How long deleted task and queue names stay reserved, and finished tasks are kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opentasks.domain.history import HistoryPolicy
from opentasks.storage.base import Windows


@dataclass(frozen=True)
class TombstonePolicy:
    """Reuse windows: a finished or deleted named task blocks its name for ``task`` (for
    ``queue_yaml_task`` in a queue from a queue.yaml); a deleted queue blocks its name for
    ``queue`` (Cloud Tasks: ~1 h, ~9 days and 7 days). ``history`` says how long tasks that
    finished, and attempts, are kept."""

    task: timedelta = timedelta(hours=1)
    queue: timedelta = timedelta(days=7)
    queue_yaml_task: timedelta = timedelta(days=9)
    history: HistoryPolicy = field(default_factory=HistoryPolicy)

    def windows(self, now: datetime) -> Windows:
        return Windows(
            task_tombstone_until=now + self.task,
            queue_tombstone_until=now + self.queue,
            queue_yaml_task_tombstone_until=now + self.queue_yaml_task,
            history_until=self.history.keep_until(now),
            now=now,
        )
