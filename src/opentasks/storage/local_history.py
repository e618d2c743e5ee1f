"""Kept history for the stores that live in one process (memory): finished tasks and attempts
in lists, dropped once their keep time has passed."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Collection
from datetime import datetime

from opentasks.domain.history import AttemptRecord, FinishedTask, FinishReason, HistoryPage
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.task import Task

MAX_FINISHED_PER_QUEUE = 100_000  # the memory store keeps at most these (the newest)
MAX_ATTEMPTS = 200_000


class LocalHistory:
    """Finished tasks by queue and attempts by task name, each with its keep time; at most
    :data:`MAX_FINISHED_PER_QUEUE` and :data:`MAX_ATTEMPTS` (the oldest go first), since
    nothing here leaves the process's memory."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._finished: dict[QueueName, deque[tuple[int, datetime, FinishedTask]]] = {}
        self._attempts: dict[TaskName, list[tuple[datetime, AttemptRecord]]] = {}
        self._expiry: deque[tuple[datetime, TaskName]] = deque()  # attempts, in keep-time order

    def keep_finished(self, task: Task, reason: FinishReason, finish_time: datetime, until: datetime) -> None:
        kept = self._finished.setdefault(task.name.queue, deque(maxlen=MAX_FINISHED_PER_QUEUE))
        kept.append((next(self._seq), until, FinishedTask(task, reason, finish_time)))
        while kept and kept[0][1] <= finish_time:
            kept.popleft()

    def keep_attempt(self, record: AttemptRecord, until: datetime) -> None:
        self._attempts.setdefault(record.task, []).append((until, record))
        self._expiry.append((until, record.task))
        self._forget_attempts(record.dispatch_time)

    def _forget_attempts(self, now: datetime) -> None:
        while self._expiry and (self._expiry[0][0] <= now or len(self._expiry) > MAX_ATTEMPTS):
            _, name = self._expiry.popleft()
            kept = self._attempts.get(name, [])
            if kept:
                kept.pop(0)  # a task's attempts are kept in order, so its oldest goes
            if not kept:
                self._attempts.pop(name, None)

    def finished_tasks(
        self,
        queue: QueueName,
        now: datetime,
        reasons: Collection[FinishReason] | None,
        before: int,
        limit: int,
    ) -> HistoryPage:
        found: list[FinishedTask] = []
        last = 0
        for seq, until, finished in reversed(self._finished.get(queue, ())):
            if (before and seq >= before) or until <= now:
                continue
            if reasons is not None and finished.reason not in reasons:
                continue
            if len(found) == limit:
                return HistoryPage(found, last)
            found.append(finished)
            last = seq
        return HistoryPage(found, None)

    def task_history(self, name: TaskName, now: datetime) -> tuple[list[FinishedTask], list[AttemptRecord]]:
        ends = [
            f for _, until, f in self._finished.get(name.queue, ()) if f.task.name == name and until > now
        ]
        attempts = [record for until, record in self._attempts.get(name, []) if until > now]
        return ends, attempts
