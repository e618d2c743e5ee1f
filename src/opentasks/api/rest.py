"""Cloud Tasks v2 over HTTP/JSON, transcoded exactly as ``cloudtasks.googleapis.com`` serves it.

Each route turns the HTTP request into the RPC's protobuf request (path variables, query
parameters and body, by the proto3 JSON mapping), calls the same coroutine the gRPC API calls,
and renders the response as JSON. There is no second implementation of any rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from opentasks.api import call
from opentasks.api import messages as pb
from opentasks.api.auth import ApiAuth
from opentasks.api.cloud_tasks_grpc import CloudTasksApi
from opentasks.api.messages import PB
from opentasks.api.status import grpc_code, http_status, rpc_status
from opentasks.errors import Internal, InvalidArgument, NotFound, OpenTasksError

_log = logging.getLogger(__name__)
Rpc = Callable[[PB], Awaitable[PB]]

_LOCATION = ("projects", "*", "locations", "*")
_QUEUE = (*_LOCATION, "queues", "*")
_TASK = (*_QUEUE, "tasks", "*")


@dataclass(frozen=True)
class Route:
    """One transcoded RPC.

    ``pattern`` is the whole path after ``/v2/`` (``*`` = one segment); the first ``bind``
    segments form the resource name set on request field ``field`` (dotted for nested).
    ``body`` is ``"*"`` (the body is the request), a field name (the body is that field), or
    None (no body).
    """

    method: str
    pattern: tuple[str, ...]
    verb: str
    rpc: str
    request: Any
    field: str
    bind: int
    body: str | None = None

    def matches(self, method: str, segments: list[str], verb: str) -> bool:
        return (
            method == self.method
            and verb == self.verb
            and len(segments) == len(self.pattern)
            and all(p in ("*", s) for p, s in zip(self.pattern, segments, strict=True))
        )


ROUTES = (
    Route("GET", (*_LOCATION, "queues"), "", "list_queues", pb.ListQueuesRequest, "parent", 4),
    Route("POST", (*_LOCATION, "queues"), "", "create_queue", pb.CreateQueueRequest, "parent", 4, "queue"),
    Route("GET", _QUEUE, "", "get_queue", pb.GetQueueRequest, "name", 6),
    Route("PATCH", _QUEUE, "", "update_queue", pb.UpdateQueueRequest, "queue.name", 6, "queue"),
    Route("DELETE", _QUEUE, "", "delete_queue", pb.DeleteQueueRequest, "name", 6),
    Route("POST", _QUEUE, "purge", "purge_queue", pb.PurgeQueueRequest, "name", 6, "*"),
    Route("POST", _QUEUE, "pause", "pause_queue", pb.PauseQueueRequest, "name", 6, "*"),
    Route("POST", _QUEUE, "resume", "resume_queue", pb.ResumeQueueRequest, "name", 6, "*"),
    Route("POST", _QUEUE, "getIamPolicy", "get_iam_policy", pb.GetIamPolicyRequest, "resource", 6, "*"),
    Route("POST", _QUEUE, "setIamPolicy", "set_iam_policy", pb.SetIamPolicyRequest, "resource", 6, "*"),
    Route(
        "POST",
        _QUEUE,
        "testIamPermissions",
        "test_iam_permissions",
        pb.TestIamPermissionsRequest,
        "resource",
        6,
        "*",
    ),
    Route("GET", (*_QUEUE, "tasks"), "", "list_tasks", pb.ListTasksRequest, "parent", 6),
    Route("POST", (*_QUEUE, "tasks"), "", "create_task", pb.CreateTaskRequest, "parent", 6, "*"),
    Route(
        "POST",
        (*_QUEUE, "tasks"),
        "batchCreate",
        "batch_create_tasks",
        pb.BatchCreateTasksRequest,
        "parent",
        6,
        "*",
    ),
    Route(
        "POST",
        (*_QUEUE, "tasks"),
        "batchDelete",
        "batch_delete_tasks",
        pb.BatchDeleteTasksRequest,
        "parent",
        6,
        "*",
    ),
    Route("GET", _TASK, "", "get_task", pb.GetTaskRequest, "name", 8),
    Route("DELETE", _TASK, "", "delete_task", pb.DeleteTaskRequest, "name", 8),
    Route("POST", _TASK, "run", "run_task", pb.RunTaskRequest, "name", 8, "*"),
    Route("GET", (*_LOCATION, "cmekConfig"), "", "get_cmek_config", pb.GetCmekConfigRequest, "name", 5),
    Route(
        "PATCH",
        (*_LOCATION, "cmekConfig"),
        "",
        "update_cmek_config",
        pb.UpdateCmekConfigRequest,
        "cmek_config.name",
        5,
        "cmek_config",
    ),
    Route("GET", ("projects", "*", "locations"), "", "list_locations", pb.ListLocationsRequest, "name", 2),
    Route("GET", _LOCATION, "", "get_location", pb.GetLocationRequest, "name", 4),
    Route("GET", (*_LOCATION, "operations", "*"), "", "get_operation", pb.GetOperationRequest, "name", 6),
)
_BUFFER_PATTERNS = ((*_QUEUE, "tasks"), _TASK)
# BufferTask turns the call's own method into the task's (samples use GET and POST).
_BUFFER_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Google's system parameters, accepted on every call and meaningless here.
_SYSTEM_PARAMETERS = frozenset(
    {
        "alt",
        "fields",
        "key",
        "prettyPrint",
        "quotaUser",
        "callback",
        "access_token",
        "oauth_token",
        "upload_protocol",
        "uploadType",
    }
)


def split_path(path: str) -> tuple[list[str], str]:
    """Path segments after ``/v2/`` and the custom verb, split off the **last** segment only
    (project IDs such as ``example.com:proj`` contain colons too)."""
    segments = path.split("/")
    last, _, verb = segments[-1].partition(":")
    return [*segments[:-1], last], verb


def find_route(method: str, path: str) -> tuple[Route, str]:
    """The route serving ``method path`` (path after ``/v2/``) and the bound resource name."""
    segments, verb = split_path(path)
    for route in ROUTES:
        if route.matches(method, segments, verb):
            return route, "/".join(segments[: route.bind])
    raise NotFound(f"No Cloud Tasks v2 method is served at {method} /v2/{path}.")


def buffer_target(method: str, path: str) -> tuple[str, str] | None:
    """(queue name, task ID or '') when ``method path`` is a BufferTask call, else None."""
    segments, verb = split_path(path)
    if verb != "buffer" or method not in _BUFFER_METHODS:
        return None
    for pattern in _BUFFER_PATTERNS:
        if len(segments) == len(pattern) and all(
            p in ("*", s) for p, s in zip(pattern, segments, strict=True)
        ):
            task_id = segments[7] if len(segments) == len(_TASK) else ""
            return "/".join(segments[:6]), task_id
    return None


class RestApi:
    """The aiohttp application serving ``/v2/...``."""

    def __init__(self, api: CloudTasksApi, auth: ApiAuth | None = None) -> None:
        self._api = api
        self._auth = auth

    def _authorize(self, request: web.Request, rpc: str) -> None:
        if self._auth is not None:
            self._auth.check(call.headers(), rpc, request.query.get("key", ""))

    def app(self, *, extra_routes: Callable[[web.Application], None] | None = None) -> web.Application:
        """The application; ``extra_routes`` registers other paths (before the catch-all 404)."""
        app = web.Application(client_max_size=8 * 2**20)
        if extra_routes is not None:
            extra_routes(app)
        app.router.add_route("*", "/v2/{path:.+}", self.handle)
        app.router.add_route("*", "/{path:.*}", self.unknown)
        return app

    async def unknown(self, request: web.Request) -> web.Response:
        return _error(
            NotFound(f"No Cloud Tasks v2 method is served at {request.method} {request.path}."), False
        )

    async def handle(self, request: web.Request) -> web.Response:
        int_enums = "enum-encoding=int" in request.query.get("$alt", "")
        call.bind(request.headers.items())
        try:
            buffered = buffer_target(request.method, request.match_info["path"])
            if buffered is not None:
                self._authorize(request, "buffer_task")
                task = await self._buffer(request, *buffered)
                body = json_format.MessageToDict(task, use_integers_for_enums=int_enums)
                return web.json_response({"task": body})  # BufferTaskResponse has no proto here
            route, resource = find_route(request.method, request.match_info["path"])
            self._authorize(request, route.rpc)
            message = await _request_message(route, resource, request)
            rpc: Rpc = getattr(self._api, route.rpc)
            response = await rpc(message)
        except OpenTasksError as error:
            return _error(error, int_enums)
        except Exception:
            _log.exception("unexpected error serving %s %s", request.method, request.path)
            return _error(Internal("Internal error in opentasks; the server log has the details."), int_enums)
        return web.json_response(json_format.MessageToDict(response, use_integers_for_enums=int_enums))

    async def _buffer(self, request: web.Request, queue: str, task_id: str) -> PB:
        body = await request.read()
        task = await self._api.buffer_task(queue, task_id, request.method, body, request.content_type)
        return task


async def _request_message(route: Route, resource: str, request: web.Request) -> PB:
    message = route.request()
    # json_format reads numbers and enum numbers from strings, as query values always are.
    query = {k: v for k, v in request.query.items() if not k.startswith("$") and k not in _SYSTEM_PARAMETERS}
    _parse(query, message, "query parameters")
    if route.body is not None:
        body = await _json_body(request)
        _parse(body, message if route.body == "*" else getattr(message, route.body), "JSON payload")
    target = message
    *parents, leaf = route.field.split(".")
    for part in parents:
        target = getattr(target, part)
    setattr(target, leaf, resource)
    return message


async def _json_body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except ValueError as error:
        raise InvalidArgument(f"Invalid JSON payload received. {error}.") from None
    if not isinstance(body, dict):
        raise InvalidArgument("Invalid JSON payload received. The body must be a JSON object.")
    return body


def _parse(data: dict[str, Any], message: PB, where: str) -> None:
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as error:
        raise InvalidArgument(f"Invalid {where} received. {error}") from None


def _error(error: OpenTasksError, int_enums: bool) -> web.Response:
    """The error envelope google-api-core and google-gax parse."""
    status = rpc_status(error)
    body = {
        "error": {
            "code": http_status(error),
            "message": error.message,
            "status": grpc_code(error).name,
            "details": [json_format.MessageToDict(detail) for detail in status.details],
        }
    }
    del int_enums  # the envelope has no enums
    return web.json_response(body, status=http_status(error))
