"""Kept history over REST, beside the Cloud Tasks API (which keeps Cloud Tasks' behaviour):

* ``GET /opentasks/v1/{queue}/finishedTasks[?failed=true][&pageSize=N][&pageToken=T]``: tasks
  that left the queue, newest first (``failed=true``: only the dead letters, the failed tasks
  not redriven yet); a redriven one names its new task (``redrivenAs``, ``redriveTime``);
* ``GET /opentasks/v1/{task}/history``: how a task ended and each of its attempts;
* ``POST /opentasks/v1/{queue}/finishedTasks:redrive`` with ``{"taskIds": [...]}`` (or ``{}``
  for every dead letter, ``pageToken`` to go on): the dead letters sent again as new tasks,
  each once (one already redriven is refused by ID and skipped by ``{}``). Named IDs are
  redriven or refused each on its own: the answer lists the refused ones (``refused``: task ID,
  status and message), and is an error only when none was redriven.

``{queue}`` is ``projects/P/locations/L/queues/Q`` and ``{task}`` that plus ``/tasks/T``. The
same API credentials apply: reading needs any token, redriving a full-access one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from opentasks.api import call
from opentasks.api.auth import ApiAuth
from opentasks.api.convert import task_to_pb
from opentasks.api.origins import HostPolicy
from opentasks.api.status import grpc_code, wire_message
from opentasks.domain.history import FAILED_REASONS, AttemptRecord, FinishedTask
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.task import TaskView
from opentasks.errors import InvalidArgument, OpenTasksError
from opentasks.service.history import HistoryService

PREFIX = "/opentasks/v1"
MAX_REDRIVE_IDS = 1000
_QUEUE = PREFIX + "/projects/{project}/locations/{location}/queues/{queue}"

Handler = Callable[[web.Request], Awaitable[web.Response]]


def add_history_routes(
    app: web.Application,
    history: HistoryService,
    auth: ApiAuth | None,
    error: Callable[[OpenTasksError], web.Response],
    hosts: HostPolicy | None = None,
) -> None:
    """Register the routes on ``app``; ``error`` renders a refusal as the API's JSON envelope,
    ``hosts`` refuses calls of other sites' pages (as the API does)."""
    routes = _HistoryRoutes(history, auth, error, hosts or HostPolicy(auth_on=auth is not None))
    app.router.add_get(_QUEUE + "/finishedTasks", routes.guarded("list_tasks", routes.finished))
    app.router.add_post(_QUEUE + "/finishedTasks:redrive", routes.guarded("create_task", routes.redrive))
    app.router.add_get(_QUEUE + "/tasks/{task}/history", routes.guarded("get_task", routes.task_history))


class _HistoryRoutes:
    def __init__(
        self,
        history: HistoryService,
        auth: ApiAuth | None,
        error: Callable[[OpenTasksError], web.Response],
        hosts: HostPolicy,
    ) -> None:
        self._history = history
        self._auth = auth
        self._error = error
        self._hosts = hosts

    def guarded(self, rpc: str, serve: Handler) -> Handler:
        """``serve`` behind the API's credentials (``rpc`` says which a read-only token may call)."""

        async def handle(request: web.Request) -> web.Response:
            call.bind(request.headers.items())
            try:
                refused = self._hosts.refusal(request.headers, request.host)
                if refused is not None:
                    raise refused
                if self._auth is not None:
                    self._auth.check(call.headers(), rpc, request.query.get("key", ""))
                return await serve(request)
            except OpenTasksError as refused:
                return self._error(refused)

        return handle

    async def finished(self, request: web.Request) -> web.Response:
        failed = _flag(request.query.get("failed", "false"), "failed")
        page = await self._history.finished_tasks(
            _queue(request),
            reasons=FAILED_REASONS if failed else None,
            before=_token(request.query.get("pageToken", "")),
            page_size=_int(request.query.get("pageSize", "100"), "pageSize"),
        )
        body: dict[str, Any] = {"finishedTasks": [finished_json(f) for f in page.tasks]}
        if page.next_before is not None:
            body["nextPageToken"] = str(page.next_before)
        return web.json_response(body)

    async def task_history(self, request: web.Request) -> web.Response:
        name = TaskName(_queue(request), request.match_info["task"])
        ends, attempts = await self._history.task_history(name)
        return web.json_response(
            {"ends": [finished_json(end) for end in ends], "attempts": [attempt_json(a) for a in attempts]}
        )

    async def redrive(self, request: web.Request) -> web.Response:
        asked = await _json_body(request)
        ids = asked.get("taskIds")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise InvalidArgument("taskIds must be a list of task IDs.")
        if ids is not None and len(ids) > MAX_REDRIVE_IDS:
            raise InvalidArgument(f"taskIds may name at most {MAX_REDRIVE_IDS} tasks per call.")
        if ids is not None:
            ids = list(dict.fromkeys(ids))  # each dead letter once, however often it is named
        done = await self._history.redrive(
            _queue(request), ids, before=_token(str(asked.get("pageToken", "")))
        )
        body: dict[str, Any] = {"tasks": [_task_json(task) for task in done.tasks]}
        if done.next_before is not None:
            body["nextPageToken"] = str(done.next_before)
        if done.refused:
            body["refused"] = [
                {"taskId": task_id, "status": grpc_code(error).name, "message": wire_message(error)}
                for task_id, error in done.refused
            ]
        return web.json_response(body)


def finished_json(finished: FinishedTask) -> dict[str, Any]:
    answer = {
        "task": _task_json(finished.task),
        "reason": finished.reason.value,
        "finishTime": _time_text(finished.finish_time),
    }
    if finished.redriven_as is not None and finished.redrive_time is not None:
        answer["redrivenAs"] = f"{finished.task.name.queue}/tasks/{finished.redriven_as}"
        answer["redriveTime"] = _time_text(finished.redrive_time)
    return answer


def _time_text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def attempt_json(record: AttemptRecord) -> dict[str, Any]:
    return {
        "attempt": record.attempt,
        "dispatchTime": _time_text(record.dispatch_time),
        "duration": f"{record.duration.total_seconds():.6f}s",
        "responseStatus": record.http_status,
        "failure": record.failure.name.lower(),
        "detail": record.detail,
        "responseHeaders": [list(pair) for pair in record.response_headers],
        "responseBody": base64.b64encode(record.response_body).decode(),
    }


def _task_json(task: Any) -> dict[str, Any]:
    message = task_to_pb(task.in_view(TaskView.FULL), TaskView.FULL)
    found: dict[str, Any] = json_format.MessageToDict(message)
    return found


def _queue(request: web.Request) -> QueueName:
    info = request.match_info
    return QueueName.parse(f"projects/{info['project']}/locations/{info['location']}/queues/{info['queue']}")


def _token(text: str) -> int:
    if not text:
        return 0
    if not _whole(text):
        raise InvalidArgument("The page token is not one this server gave.")
    return int(text)


def _int(text: str, field: str) -> int:
    if not _whole(text):
        raise InvalidArgument(f"{field} must be a whole number.")
    return int(text)


def _flag(text: str, field: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0", ""):
        return False
    raise InvalidArgument(f"{field} must be true or false.")


def _whole(text: str) -> bool:
    """ASCII digits that fit a 63-bit integer (``str.isdigit`` also takes ``²``)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        found = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise InvalidArgument("The request body is not JSON.") from None
    if not isinstance(found, dict):
        raise InvalidArgument("The request body must be a JSON object.")
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
