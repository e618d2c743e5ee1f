"""Kept history: what became of finished tasks, and every attempt of every task (pure).

Cloud Tasks forgets a task the moment it succeeds or runs out of retries. opentasks keeps both
for a while, outside the Cloud Tasks API (GetTask and ListTasks behave as Cloud Tasks does):
each attempt as it ends, and each task as it leaves its queue, with why it left. Tasks that
failed for good are the dead letters, which can be sent again as new tasks ("redriven"), each
once: a redriven one is kept with the ID of the task it became, and is no dead letter after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

import msgspec

from opentasks.domain.names import TaskName
from opentasks.domain.task import AttemptFailure, AttemptOutcome, Task

DEFAULT_RETENTION = timedelta(days=7)
DEFAULT_RESPONSE_BYTES = 4096  # of a handler's answer kept with each attempt
MAX_RESPONSE_HEADER_BYTES = 8192  # of an answer's headers kept with each attempt


class FinishReason(Enum):
    """Why a task left its queue."""

    SUCCEEDED = "succeeded"
    MAX_ATTEMPTS = "max_attempts"  # failed for good: out of attempts
    MAX_RETRY_DURATION = "max_retry_duration"  # failed for good: out of time
    DELETED = "deleted"  # DeleteTask or BatchDeleteTasks
    PURGED = "purged"  # PurgeQueue

    @property
    def failed(self) -> bool:
        return self in (FinishReason.MAX_ATTEMPTS, FinishReason.MAX_RETRY_DURATION)


FAILED_REASONS = frozenset({FinishReason.MAX_ATTEMPTS, FinishReason.MAX_RETRY_DURATION})


class AttemptRecord(msgspec.Struct, frozen=True):
    """One attempt as it ended. ``created`` (the task's create time) tells apart two tasks
    that had the same name at different times."""

    task: TaskName
    created: datetime
    attempt: int  # the task's dispatch count with this attempt (1 = its first)
    dispatch_time: datetime
    duration: timedelta
    http_status: int = 0  # 0: no answer
    failure: AttemptFailure = AttemptFailure.NONE
    detail: str = ""
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: bytes = b""


def attempt_record(claimed: Task, outcome: AttemptOutcome, duration: timedelta) -> AttemptRecord:
    """The record of ``claimed``'s attempt (the task as claimed: its last attempt is this one)."""
    last = claimed.last_attempt
    dispatched = (
        last.dispatch_time if last is not None and last.dispatch_time is not None else claimed.create_time
    )
    return AttemptRecord(
        task=claimed.name,
        created=claimed.create_time,
        attempt=claimed.dispatch_count,
        dispatch_time=dispatched,
        duration=duration,
        http_status=outcome.http_status,
        failure=outcome.failure,
        detail=outcome.detail,
        response_headers=outcome.response_headers,
        response_body=outcome.response_body,
    )


@dataclass(frozen=True)
class FinishedTask:
    """A task as it was when it left its queue (``task``: its last stored state), why, and
    when; for one that failed for good and was sent again, the ID of the task that carried its
    request again (in the same queue) and when that task was made. ``key`` tells it apart from
    the other ends kept of the same name (the store's number for it; 0: not stored)."""

    task: Task
    reason: FinishReason
    finish_time: datetime
    redriven_as: str | None = None
    redrive_time: datetime | None = None
    key: int = 0

    @property
    def dead_letter(self) -> bool:
        """True while it failed for good and has not been redriven: once redriven it is no
        longer a dead letter, and it is not redriven twice."""
        return self.reason.failed and self.redriven_as is None


@dataclass(frozen=True)
class HistoryPage:
    """Finished tasks, newest first, and the cursor of the next page (None: no more)."""

    tasks: list[FinishedTask]
    next_before: int | None


@dataclass(frozen=True)
class HistoryPolicy:
    """How long finished tasks and attempts are kept (zero: none is kept) and how much of each
    answer's body goes with its attempt."""

    retention: timedelta = DEFAULT_RETENTION
    response_bytes: int = DEFAULT_RESPONSE_BYTES

    @property
    def enabled(self) -> bool:
        return self.retention > timedelta(0)

    def keep_until(self, now: datetime) -> datetime | None:
        """Until when what finishes at ``now`` is kept; None when history is off."""
        return now + self.retention if self.enabled else None
