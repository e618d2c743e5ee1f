"""How SQL backends split a task into an immutable spec and its mutable dispatch progress."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec.structs import replace

from opentasks.domain.task import Attempt, AttemptOutcome, Task
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
