"""Kept history for the stores that live in one process (memory): finished tasks and attempts
in lists, dropped once their keep time has passed; and the per-minute counts of ended attempts."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta

from opentasks.domain.browse import OutcomeMinute
from opentasks.domain.history import AttemptRecord, FinishedTask, FinishReason, HistoryPage
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.task import Task

MAX_FINISHED_PER_QUEUE = 100_000  # the memory store keeps at most these (the newest)
MAX_ATTEMPTS = 200_000
OUTCOMES_KEPT = timedelta(hours=1)  # before the latest minute added


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
        seq = next(self._seq)
        kept.append((seq, until, FinishedTask(task, reason, finish_time, key=seq)))
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
            if reasons is not None and (finished.reason not in reasons or finished.redriven_as):
                continue
            if len(found) == limit:
                return HistoryPage(found, last)
            found.append(finished)
            last = seq
        return HistoryPage(found, None)

    def dead_letter_counts(self, now: datetime, queues: list[QueueName]) -> dict[QueueName, int]:
        """The kept dead letters of each of ``queues`` that has any."""
        counts = {
            name: sum(1 for _, until, f in self._finished.get(name, ()) if f.dead_letter and until > now)
            for name in queues
        }
        return {name: count for name, count in counts.items() if count}

    def mark_redriven(self, letter: TaskName, key: int, redriven_as: str, when: datetime) -> None:
        """Mark the end ``key`` of ``letter`` redriven as task ``redriven_as``."""
        kept = self._finished.get(letter.queue, deque())
        for at in range(len(kept) - 1, -1, -1):
            seq, until, finished = kept[at]
            if seq == key:
                kept[at] = (seq, until, replace(finished, redriven_as=redriven_as, redrive_time=when))
                return

    def task_history(self, name: TaskName, now: datetime) -> tuple[list[FinishedTask], list[AttemptRecord]]:
        ends = [
            f for _, until, f in self._finished.get(name.queue, ()) if f.task.name == name and until > now
        ]
        attempts = [record for until, record in self._attempts.get(name, []) if until > now]
        return ends, attempts


class LocalOutcomes:
    """Ended attempts per (queue, minute, node), summed when asked; minutes that started more
    than :data:`OUTCOMES_KEPT` before the latest one added are dropped as minutes are added."""

    def __init__(self) -> None:
        self._counts: dict[tuple[datetime, QueueName, str], tuple[int, int]] = {}

    def add(self, node_id: str, minutes: list[OutcomeMinute]) -> None:
        if not minutes:
            return
        for minute in minutes:
            key = (truncate_to_minute(minute.minute), minute.queue, node_id)
            succeeded, failed = self._counts.get(key, (0, 0))
            self._counts[key] = (succeeded + minute.succeeded, failed + minute.failed)
        oldest = truncate_to_minute(max(m.minute for m in minutes)) - OUTCOMES_KEPT
        for key in [key for key in self._counts if key[0] < oldest]:
            del self._counts[key]

    def since(self, since: datetime, queue: QueueName | None) -> list[OutcomeMinute]:
        sums: dict[tuple[datetime, QueueName], tuple[int, int]] = {}
        for (minute, name, _), (succeeded, failed) in self._counts.items():
            if minute >= since and (queue is None or name == queue):
                before = sums.get((minute, name), (0, 0))
                sums[(minute, name)] = (before[0] + succeeded, before[1] + failed)
        return [
            OutcomeMinute(name, minute, succeeded, failed)
            for (minute, name), (succeeded, failed) in sorted(sums.items(), key=_minute_order)
        ]


def _minute_order(item: tuple[tuple[datetime, QueueName], tuple[int, int]]) -> tuple[datetime, str, str]:
    (minute, name), _ = item
    return minute, str(name.parent), name.queue_id


def truncate_to_minute(moment: datetime) -> datetime:
    """The start of the minute ``moment`` falls in."""
    return moment.replace(second=0, microsecond=0)
