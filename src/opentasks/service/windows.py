"""How long deleted task and queue names stay reserved."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from opentasks.storage.base import Windows


@dataclass(frozen=True)
class TombstonePolicy:
    """Reuse windows: a finished or deleted named task blocks its name for ``task``; a deleted
    queue blocks its name for ``queue`` (Cloud Tasks: ~1 h and 7 days)."""

    task: timedelta = timedelta(hours=1)
    queue: timedelta = timedelta(days=7)

    def windows(self, now: datetime) -> Windows:
        return Windows(task_tombstone_until=now + self.task, queue_tombstone_until=now + self.queue)
