"""How SQL backends split a task into an immutable spec and its mutable dispatch progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
from msgspec.structs import replace

from opentasks.domain.browse import OutcomeMinute
from opentasks.domain.history import FAILED_REASONS, AttemptRecord, FinishedTask, FinishReason, HistoryPage
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.task import Attempt, AttemptFailure, AttemptOutcome, Task
from opentasks.storage import codec


class TaskProgress(msgspec.Struct, frozen=True, omit_defaults=True):
    """The fields of a task that change with each attempt."""

    dispatch_count: int = 0
    response_count: int = 0
    execution_count: int = 0
    first_attempt: Attempt | None = None
    last_attempt: Attempt | None = None
    previous_outcome: AttemptOutcome | None = None


_FRESH = TaskProgress()


def body_of(task: Task) -> bytes:
    request = task.http_request or task.app_engine_http_request
    return request.body if request is not None else b""


def spec_json(task: Task) -> str:
    """The task without body (a column of its own) and without progress, as JSON."""
    if task.http_request is not None:
        task = replace(task, http_request=replace(task.http_request, body=b""))
    if task.app_engine_http_request is not None:
        task = replace(task, app_engine_http_request=replace(task.app_engine_http_request, body=b""))
    return codec.dumps(_with_progress(task, _FRESH))


def progress_json(task: Task) -> str | None:
    """The task's dispatch progress as JSON; None before its first attempt."""
    if task.dispatch_count == 0:
        return None
    return codec.dumps(
        TaskProgress(
            task.dispatch_count,
            task.response_count,
            task.execution_count,
            task.first_attempt,
            task.last_attempt,
            task.previous_outcome,
        )
    )


def task_of(spec: str, progress: str | None, body: bytes | None, schedule_time: datetime) -> Task:
    """Rebuild a task from its columns (one copy, as this runs for every claimed task)."""
    task = codec.loads(Task, spec)
    changes: dict[str, Any] = {"schedule_time": schedule_time}
    if progress:
        changes.update(_progress_fields(codec.loads(TaskProgress, progress)))
    if body and task.http_request is not None:
        changes["http_request"] = replace(task.http_request, body=bytes(body))
    elif body and task.app_engine_http_request is not None:
        changes["app_engine_http_request"] = replace(task.app_engine_http_request, body=bytes(body))
    return replace(task, **changes)


def _with_progress(task: Task, progress: TaskProgress) -> Task:
    return replace(task, **_progress_fields(progress))


def _progress_fields(progress: TaskProgress) -> dict[str, Any]:
    return {name: getattr(progress, name) for name in TaskProgress.__struct_fields__}


# -- kept history -----------------------------------------------------------------------------

ATTEMPT_COLUMNS = (
    "parent, queue_id, task_id, created_us, attempt, dispatch_us, duration_us, http_status, failure,"
    " detail, headers, body"
)
FINISHED_COLUMNS = (
    "seq, parent, queue_id, task_id, reason, finish_us, schedule_us, spec, progress, body,"
    " redriven_as, redrive_us"
)
# The sets of reasons that have a partial index of their own (finished_tasks_dead, _succeeded,
# _removed), each with the condition written as in its index: only then do the planners of SQLite
# and PostgreSQL see that the index holds the rows asked for. A filter by reason lists dead
# letters, never failed tasks already redriven (see Store.finished_tasks).
FAILED_ONLY = "reason IN ('max_attempts', 'max_retry_duration') AND redriven_as IS NULL"
NOT_REDRIVEN = "redriven_as IS NULL"
INDEXED_REASONS: dict[frozenset[FinishReason], str] = {
    frozenset(FAILED_REASONS): FAILED_ONLY,
    frozenset({FinishReason.SUCCEEDED}): "reason = 'succeeded'",
    frozenset({FinishReason.DELETED, FinishReason.PURGED}): "reason IN ('deleted', 'purged')",
}


def attempt_values(record: AttemptRecord) -> tuple[Any, ...]:
    """An attempt as the values of :data:`ATTEMPT_COLUMNS`."""
    queue = record.task.queue
    return (
        str(queue.parent),
        queue.queue_id,
        record.task.task_id,
        codec.to_micros(record.created),
        record.attempt,
        codec.to_micros(record.dispatch_time),
        record.duration // _MICROSECOND,
        record.http_status,
        int(record.failure),
        record.detail,
        _HEADERS.encode(record.response_headers).decode(),
        record.response_body,
    )


def attempt_of(row: Sequence[Any]) -> AttemptRecord:
    """An attempt from the values of :data:`ATTEMPT_COLUMNS`."""
    (
        parent,
        queue_id,
        task_id,
        created,
        attempt,
        dispatched,
        duration,
        status,
        failure,
        detail,
        headers,
        body,
    ) = row
    return AttemptRecord(
        task=TaskName(QueueName.parse(f"{parent}/queues/{queue_id}"), task_id),
        created=codec.from_micros(created),
        attempt=attempt,
        dispatch_time=codec.from_micros(dispatched),
        duration=timedelta(microseconds=duration),
        http_status=status,
        failure=AttemptFailure(failure),
        detail=detail,
        response_headers=tuple(tuple(pair) for pair in _HEADERS_DECODER.decode(headers)),  # type: ignore[misc]
        response_body=bytes(body),
    )


def finished_of(row: Sequence[Any]) -> tuple[int, FinishedTask]:
    """A finished task and its cursor from the values of :data:`FINISHED_COLUMNS`."""
    seq, _, _, _, reason, finish_us, schedule_us, spec, progress, body, redriven_as, redrive_us = row
    task = task_of(spec, progress, body, codec.from_micros(schedule_us))
    redrive_time = None if redrive_us is None else codec.from_micros(redrive_us)
    ended = codec.from_micros(finish_us)
    return seq, FinishedTask(task, FinishReason(reason), ended, redriven_as, redrive_time, seq)


def history_page(found: Sequence[Sequence[Any]], limit: int) -> HistoryPage:
    """A page of finished tasks from up to ``limit + 1`` rows of :data:`FINISHED_COLUMNS` (one
    more than asked tells whether another page follows)."""
    page = [finished_of(row) for row in found]
    more = len(page) > limit
    return HistoryPage([f for _, f in page[:limit]], page[limit - 1][0] if more else None)


_MICROSECOND = timedelta(microseconds=1)
_HEADERS = msgspec.json.Encoder()
_HEADERS_DECODER = msgspec.json.Decoder(list[tuple[str, str]])


# -- outcomes per minute ----------------------------------------------------------------------

OUTCOMES_KEPT_US = 3600 * 1_000_000  # minutes kept before the latest one added
_MINUTE_US = 60 * 1_000_000


def outcome_rows(node_id: str, minutes: list[OutcomeMinute]) -> tuple[list[tuple[Any, ...]], int]:
    """``minutes`` as rows (node_id, parent, queue_id, minute_us, succeeded, failed), one per
    queue and minute, and the first minute kept: older rows go (see
    :meth:`~opentasks.storage.base.Store.add_outcomes`). ``minutes`` must not be empty."""
    sums: dict[tuple[str, str, int], tuple[int, int]] = {}
    for m in minutes:
        key = (str(m.queue.parent), m.queue.queue_id, codec.to_micros(m.minute) // _MINUTE_US * _MINUTE_US)
        succeeded, failed = sums.get(key, (0, 0))
        sums[key] = (succeeded + m.succeeded, failed + m.failed)
    values = [(node_id, *key, *counts) for key, counts in sums.items()]
    return values, max(key[2] for key in sums) - OUTCOMES_KEPT_US


def outcomes_of(found: Sequence[Any]) -> list[OutcomeMinute]:
    """:class:`OutcomeMinute` from rows of (parent, queue_id, minute_us, succeeded, failed)."""
    names: dict[tuple[str, str], QueueName] = {}
    minutes: dict[int, datetime] = {}
    answer = []
    for parent, queue_id, minute_us, succeeded, failed in found:
        name = names.get((parent, queue_id))
        if name is None:
            name = names[(parent, queue_id)] = QueueName.in_location(parent, queue_id)
        minute = minutes.get(minute_us)
        if minute is None:
            minute = minutes[minute_us] = codec.from_micros(minute_us)
        answer.append(OutcomeMinute(name, minute, int(succeeded), int(failed)))
    return answer


def dead_letters(counted: Sequence[Any], cap: int) -> dict[QueueName, int]:
    """Dead letters per queue from (parent, queue_id, count) rows, counts above ``cap`` given
    as ``cap + 1``, queues without any left out."""
    return {
        QueueName.in_location(parent, queue_id): min(count, cap + 1)
        for parent, queue_id, count in counted
        if count > 0
    }
