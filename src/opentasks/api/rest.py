"""Cloud Tasks v2 over HTTP/JSON, transcoded exactly as ``cloudtasks.googleapis.com`` serves it.

Each route turns the HTTP request into the RPC's protobuf request (path variables, query
parameters and body, by the proto3 JSON mapping), calls the same coroutine the gRPC API calls,
and renders the response as JSON. There is no second implementation of any rule.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format

from opentasks.api import call
from opentasks.api import messages as pb
from opentasks.api import messages_v2beta3 as pb_v2beta3
from opentasks.api.auth import ApiAuth
from opentasks.api.cloud_tasks_grpc import CloudTasksApi
from opentasks.api.content_encoding import decode_body
from opentasks.api.convert import task_to_pb
from opentasks.api.firebase_rest import add_firebase_routes
from opentasks.api.json_errors import load_json, parse_json
from opentasks.api.messages import PB
from opentasks.api.origins import HostPolicy
from opentasks.api.status import grpc_code, http_status, rpc_status
from opentasks.api.task_json import create_task_request, task_json
from opentasks.errors import (
    Internal,
    InvalidArgument,
    NotFound,
    OpenTasksError,
    PayloadTooLarge,
    RequestTimeout,
)
from opentasks.throttled_log import ThrottledLog

_log = logging.getLogger(__name__)
Rpc = Callable[[PB], Awaitable[PB]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 8 * 2**20

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


def routes(m: Any) -> tuple[Route, ...]:
    """The route table of one API version, with the request classes of module ``m``."""
    return (
        Route("GET", (*_LOCATION, "queues"), "", "list_queues", m.ListQueuesRequest, "parent", 4),
        Route("POST", (*_LOCATION, "queues"), "", "create_queue", m.CreateQueueRequest, "parent", 4, "queue"),
        Route("GET", _QUEUE, "", "get_queue", m.GetQueueRequest, "name", 6),
        Route("PATCH", _QUEUE, "", "update_queue", m.UpdateQueueRequest, "queue.name", 6, "queue"),
        Route("DELETE", _QUEUE, "", "delete_queue", m.DeleteQueueRequest, "name", 6),
        Route("POST", _QUEUE, "purge", "purge_queue", m.PurgeQueueRequest, "name", 6, "*"),
        Route("POST", _QUEUE, "pause", "pause_queue", m.PauseQueueRequest, "name", 6, "*"),
        Route("POST", _QUEUE, "resume", "resume_queue", m.ResumeQueueRequest, "name", 6, "*"),
        Route("POST", _QUEUE, "getIamPolicy", "get_iam_policy", m.GetIamPolicyRequest, "resource", 6, "*"),
        Route("POST", _QUEUE, "setIamPolicy", "set_iam_policy", m.SetIamPolicyRequest, "resource", 6, "*"),
        Route(
            "POST",
            _QUEUE,
            "testIamPermissions",
            "test_iam_permissions",
            m.TestIamPermissionsRequest,
            "resource",
            6,
            "*",
        ),
        Route("GET", (*_QUEUE, "tasks"), "", "list_tasks", m.ListTasksRequest, "parent", 6),
        Route("POST", (*_QUEUE, "tasks"), "", "create_task", m.CreateTaskRequest, "parent", 6, "*"),
        Route(
            "POST",
            (*_QUEUE, "tasks"),
            "batchCreate",
            "batch_create_tasks",
            m.BatchCreateTasksRequest,
            "parent",
            6,
            "*",
        ),
        Route(
            "POST",
            (*_QUEUE, "tasks"),
            "batchDelete",
            "batch_delete_tasks",
            m.BatchDeleteTasksRequest,
            "parent",
            6,
            "*",
        ),
        Route("GET", _TASK, "", "get_task", m.GetTaskRequest, "name", 8),
        Route("DELETE", _TASK, "", "delete_task", m.DeleteTaskRequest, "name", 8),
        Route("POST", _TASK, "run", "run_task", m.RunTaskRequest, "name", 8, "*"),
        Route("GET", (*_LOCATION, "cmekConfig"), "", "get_cmek_config", m.GetCmekConfigRequest, "name", 5),
        Route(
            "PATCH",
            (*_LOCATION, "cmekConfig"),
            "",
            "update_cmek_config",
            m.UpdateCmekConfigRequest,
            "cmek_config.name",
            5,
            "cmek_config",
        ),
        Route("GET", ("projects", "*", "locations"), "", "list_locations", m.ListLocationsRequest, "name", 2),
        Route("GET", _LOCATION, "", "get_location", m.GetLocationRequest, "name", 4),
        Route("GET", (*_LOCATION, "operations", "*"), "", "get_operation", m.GetOperationRequest, "name", 6),
    )


ROUTES = routes(pb)
V2BETA3_ROUTES = routes(pb_v2beta3)

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
# Query parameters Google's discovery document lists for a method whose request message has
# no such field (or that only later API versions honour): accepted and ignored.
_EXTRA_LOCATION_TYPES = frozenset({"extraLocationTypes", "extra_location_types"})
_READ_MASK = frozenset({"readMask", "read_mask"})
_IGNORED_PARAMETERS = {
    "list_locations": _EXTRA_LOCATION_TYPES,
    "get_queue": _READ_MASK,
    "list_queues": _READ_MASK,
}
_V2BETA3_IGNORED_PARAMETERS = {"list_locations": _EXTRA_LOCATION_TYPES}
_UPDATE_MASK_KEYS = ("updateMask", "update_mask")
_MASK_KEYS = (*_UPDATE_MASK_KEYS, *_READ_MASK)


@dataclass(frozen=True)
class ApiVersion:
    """One API version served under ``/<name>/``: its routes, the query parameters its methods
    ignore, and the object whose coroutines serve its RPCs (same names as the routes' ``rpc``)."""

    name: str
    routes: tuple[Route, ...]
    ignored: Mapping[str, frozenset[str]]
    api: Any
    tasks_answered: frozenset[str] = frozenset()
    """RPCs answering a task whose ``<rpc>_record`` coroutine gives it before conversion."""


_ALT_ENCODINGS = frozenset({"int", "string"})
# The v2 RPCs whose answer (a task) REST builds from the record itself, the hottest ones.
_TASKS_ANSWERED = frozenset({"create_task", "get_task"})


def split_path(path: str) -> tuple[list[str], str]:
    """Path segments after ``/v2/`` and the custom verb, split off the **last** segment only
    (project IDs such as ``example.com:proj`` contain colons too)."""
    segments = path.split("/")
    last, _, verb = segments[-1].partition(":")
    return [*segments[:-1], last], verb


def decoded_path(raw_path: str) -> str:
    """The percent-decoded path after ``/v2/``, decoded segment by segment so that an encoded
    slash cannot move a request to another route; such a segment, or one that is not UTF-8,
    is refused."""
    segments = raw_path.split("/")
    decoded = []
    for segment in segments:
        try:
            text = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise InvalidArgument(
                f'Invalid resource field value in the request: the path segment "{segment}" is not UTF-8.'
            ) from None
        if "/" in text:
            raise InvalidArgument(
                f'Invalid resource field value in the request: the path segment "{segment}" contains '
                "an encoded '/', which no resource name may contain."
            )
        decoded.append(text)
    return "/".join(decoded)


def response_format(query: Mapping[str, str]) -> bool:
    """Whether ``$alt`` / ``alt`` ask for integer enums; any format but JSON is refused."""
    int_enums = False
    for key in ("$alt", "alt"):
        value = query.get(key)
        if value is None:
            continue
        kind, *options = [part.strip() for part in value.split(";")]
        if kind.lower() not in ("json", ""):
            raise InvalidArgument(f'Unsupported {key}="{value}": this server answers in JSON only.')
        for option in options:
            name, _, setting = option.partition("=")
            if name != "enum-encoding" or setting not in _ALT_ENCODINGS:
                raise InvalidArgument(
                    f'Unsupported {key} option "{option}"; use "json" or "json;enum-encoding=int".'
                )
            int_enums = setting == "int"
    return int_enums


def find_route(
    method: str, path: str, table: tuple[Route, ...] = ROUTES, version: str = "v2"
) -> tuple[Route, str]:
    """The route of ``table`` serving ``method path`` (path after ``/<version>/``) and the bound
    resource name."""
    segments, verb = split_path(path)
    for route in table:
        if route.matches(method, segments, verb):
            return route, "/".join(segments[: route.bind])
    raise NotFound(f"No Cloud Tasks {version} method is served at {method} /{version}/{path}.")


_API_VERSION = re.compile(r"v\d+(?:(?:alpha|beta)\d*)?", re.ASCII)


def unknown_path(method: str, path: str, served: tuple[str, ...]) -> NotFound:
    """The error for a path outside every served version; an API version this server does not
    serve (``/v2beta2/``, which ``gcloud alpha tasks`` calls) is named as such."""
    version = path.lstrip("/").partition("/")[0]
    if _API_VERSION.fullmatch(version) and version not in served:
        return NotFound(
            f"No Cloud Tasks {version} method is served at {method} {path}: this server serves the "
            f"Cloud Tasks API versions {', '.join(served)}."
        )
    return NotFound(f"No Cloud Tasks v2 method is served at {method} {path}.")


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
    """The aiohttp application serving ``/v2/...`` (and ``/v2beta3/...`` when given its API)."""

    def __init__(
        self,
        api: CloudTasksApi,
        auth: ApiAuth | None = None,
        *,
        read_timeout_s: float = 60.0,
        v2beta3: Any = None,
        hosts: HostPolicy | None = None,
    ) -> None:
        self._api = api
        self._hosts = hosts or HostPolicy(auth_on=auth is not None)
        self._versions = {"v2": ApiVersion("v2", ROUTES, _IGNORED_PARAMETERS, api, _TASKS_ANSWERED)}
        if v2beta3 is not None:
            self._versions["v2beta3"] = ApiVersion(
                "v2beta3", V2BETA3_ROUTES, _V2BETA3_IGNORED_PARAMETERS, v2beta3
            )
        self._auth = auth
        self._read_timeout_s = read_timeout_s
        self._internal_log = ThrottledLog(_log, api.clock.monotonic)
        self._server_log = _server_logger(ThrottledLog(_log, api.clock.monotonic))

    def _authorize(self, request: web.Request, rpc: str) -> None:
        refused = self._hosts.refusal(request.headers, request.host)
        if refused is not None:
            raise refused
        if self._auth is not None:
            self._auth.check(call.headers(), rpc, request.query.get("key", ""))

    def app(self, *, extra_routes: Callable[[web.Application], None] | None = None) -> web.Application:
        """The application; ``extra_routes`` registers other paths (before the catch-all 404)."""
        # Bodies are decoded by read_body, which bounds what a compressed body inflates to.
        handler_args = {"logger": self._server_log, "auto_decompress": False}
        app = web.Application(client_max_size=MAX_BODY_BYTES, handler_args=handler_args)
        app[READ_TIMEOUT_S] = self._read_timeout_s
        if extra_routes is not None:
            extra_routes(app)
        add_firebase_routes(app, self._api, self._authorize, _json_body, self._guarded)
        # [\s\S], not ".": a decoded path may hold line breaks, and still gets the JSON envelope.
        handle = self._guarded(self._serve)
        for version in self._versions:
            app.router.add_route("*", f"/{version}/{{path:[\\s\\S]+}}", handle)
        app.router.add_route("*", "/{path:[\\s\\S]*}", self.unknown)
        return app

    def _guarded(self, handler: Handler) -> Handler:
        """``handler`` answering refusals and failures with the API's error envelope."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            call.bind(request.headers.items())
            try:
                return await handler(request)
            except OpenTasksError as error:
                return _error(error, close=_body_failed(request))
            except Exception:
                self._internal_log.exception("unexpected error serving %s %s", request.method, request.path)
                return _error(Internal("Internal error in opentasks; the server log has the details."))

        return guarded

    async def unknown(self, request: web.Request) -> web.Response:
        return _error(unknown_path(request.method, request.path, tuple(self._versions)))

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        int_enums = response_format(request.query)
        _, name, raw_path = request.rel_url.raw_path.split("/", 2)
        version = self._versions[name]
        path = decoded_path(raw_path)
        buffered = buffer_target(request.method, path)
        if buffered is not None:
            self._authorize(request, "buffer_task")
            task = await self._buffer(request, version, *buffered)
            body = json_format.MessageToDict(task, use_integers_for_enums=int_enums)
            return web.json_response({"task": body})  # BufferTaskResponse has no proto here
        route, resource = find_route(request.method, path, version.routes, version.name)
        self._authorize(request, route.rpc)
        if route.rpc in version.tasks_answered:
            return await _task_answer(version, route, resource, request, int_enums)
        message = await _request_message(route, resource, request, version.ignored)
        rpc: Rpc = getattr(version.api, route.rpc)
        response = await rpc(message)
        return web.json_response(json_format.MessageToDict(response, use_integers_for_enums=int_enums))

    async def _buffer(self, request: web.Request, version: ApiVersion, queue: str, task_id: str) -> PB:
        body = await read_body(request)
        task = await version.api.buffer_task(queue, task_id, request.method, body, request.content_type)
        return task


async def _task_answer(
    version: ApiVersion, route: Route, resource: str, request: web.Request, int_enums: bool
) -> web.Response:
    """CreateTask or GetTask: a plain CreateTask body is read straight into a draft and the task
    answered built from the record (:mod:`task_json`); other requests and tasks go through
    protobuf, which words their errors."""
    query = query_parameters(route.rpc, request.query, version.ignored)
    body = await _json_body(request) if route.body is not None else {}
    read = create_task_request(body) if route.rpc == "create_task" and not query else None
    if read is not None:
        task, view = await version.api.create_task_draft(resource, *read), read[1]
    else:
        message = _message(route, resource, query, body)
        task, view = await getattr(version.api, f"{route.rpc}_record")(message)
    built = task_json(task, view, int_enums=int_enums)
    if built is None:
        built = json_format.MessageToDict(task_to_pb(task, view), use_integers_for_enums=int_enums)
    return web.json_response(built)


class _ServerErrorFilter(logging.Filter):
    """aiohttp logs every malformed HTTP request (a line or header too long, bad framing) with a
    traceback, before any handler runs: keep one line per interval, without the traceback for
    the client's mistakes."""

    def __init__(self, throttle: ThrottledLog) -> None:
        super().__init__()
        self._throttle = throttle

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        suppressed = self._throttle.admit()
        if suppressed is None:
            return False
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg, record.args, record.exc_info = (
                "refused a malformed HTTP request: %s",
                (_one_line(error),),
                None,
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar events were not logged since the previous line)"
        return True


def _server_logger(throttle: ThrottledLog) -> logging.Logger:
    """The logger of this app's aiohttp request handlers: a rate-limited child of ``aiohttp``."""
    logger = logging.Logger("aiohttp.server")  # not registered: its filter is this app's alone
    logger.parent = logging.getLogger("aiohttp")
    logger.addFilter(_ServerErrorFilter(throttle))
    return logger


READ_TIMEOUT_S = web.AppKey("read_timeout_s", float)
_BODY_FAILED = "opentasks.body_failed"  # set on the request when its body could not be read


async def read_body(request: web.Request) -> bytes:
    """The request body, decoded by its Content-Encoding; too large -> 413, undecodable -> 400,
    not all there within the read timeout -> 408 (a trickling client cannot hold a connection)."""
    timeout_s = request.app.get(READ_TIMEOUT_S, 60.0)
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        _abandon_body(request)
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.") from None
    except web.HTTPRequestEntityTooLarge:
        request[_BODY_FAILED] = True
        raise PayloadTooLarge(f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes.") from None
    except Exception as error:  # aiohttp's RequestPayloadError: e.g. a broken chunked encoding
        _abandon_body(request)
        raise InvalidArgument(f"The request body could not be read: {_one_line(error)}.") from None
    return decode_body(raw, request.headers.get("Content-Encoding", ""), MAX_BODY_BYTES)


def _abandon_body(request: web.Request) -> None:
    """Nothing more will be read from this body: end it, so the server closes the connection
    after the answer instead of draining (lingering on) the rest."""
    request[_BODY_FAILED] = True
    if not request.content.is_eof():
        request.content.feed_eof()


def _body_failed(request: web.Request) -> bool:
    return bool(request.get(_BODY_FAILED, False))


def _one_line(error: BaseException) -> str:
    return re.sub(r"\s+", " ", str(error)).strip().rstrip(".") or type(error).__name__


async def _request_message(
    route: Route, resource: str, request: web.Request, ignored: Mapping[str, frozenset[str]]
) -> PB:
    query = query_parameters(route.rpc, request.query, ignored)
    body = await _json_body(request) if route.body is not None else {}
    return _message(route, resource, query, body)


def _message(route: Route, resource: str, query: dict[str, Any], body: dict[str, Any]) -> PB:
    """The request message of ``route`` from its query fields, JSON body and path resource."""
    message = route.request()
    # json_format reads numbers and enum numbers from strings, as query values always are.
    parse_json(query, message, query=True)
    if route.body is not None:
        if route.body == "*":
            parse_json(body, message)
        else:
            _hoist_update_mask(body, message)
            parse_json(body, getattr(message, route.body), prefix=route.body)
    target = message
    *parents, leaf = route.field.split(".")
    for part in parents:
        target = getattr(target, part)
    setattr(target, leaf, resource)
    return message


def query_parameters(
    rpc: str, query: Any, ignored_parameters: Mapping[str, frozenset[str]] = _IGNORED_PARAMETERS
) -> dict[str, Any]:
    """The query parameters that are request fields, ready for the proto3 JSON parser.

    System parameters, ``$``-prefixed ones and the documented ones this server ignores are
    left out; a parameter given more than once is refused (no GET request has a repeated field).
    """
    ignored = ignored_parameters.get(rpc, frozenset())
    fields: dict[str, Any] = {}
    for key in query:
        if key.startswith("$") or key in _SYSTEM_PARAMETERS or key in ignored or key in fields:
            continue
        values = query.getall(key)
        if len(values) > 1:
            raise InvalidArgument(
                f'Invalid JSON payload received. The query parameter "{key}" is given {len(values)} '
                "times; it takes one value."
            )
        fields[key] = camel_case_mask(values[0]) if key in _MASK_KEYS else values[0]
    return fields


def camel_case_mask(value: Any) -> Any:
    """A FieldMask in its JSON form (comma-separated lowerCamelCase paths), accepting the
    snake_case paths some clients send (``retry_config.max_attempts``)."""
    if not isinstance(value, str):
        return value
    return ",".join(
        ".".join(re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), part) for part in path.strip().split("."))
        for path in value.split(",")
    )


def _hoist_update_mask(body: dict[str, Any], message: PB) -> None:
    """An ``updateMask`` sent in the body (next to the resource) instead of the query string."""
    for key in _UPDATE_MASK_KEYS:
        if key in body and "update_mask" in message.DESCRIPTOR.fields_by_name:
            parse_json({key: camel_case_mask(body.pop(key))}, message)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    charset = request.charset or "utf-8"
    try:
        if not codecs.lookup(charset)._is_text_encoding:  # rot13, base64, zlib ... are no charsets
            raise LookupError(charset)
    except LookupError:
        raise InvalidArgument(
            f'Unsupported charset "{charset}" in Content-Type; send the JSON body as UTF-8.'
        ) from None
    try:
        text = raw.decode(charset)
    except UnicodeDecodeError as error:
        raise InvalidArgument(
            f"Invalid JSON payload received. The body is not valid {charset}: byte "
            f"0x{raw[error.start]:02x} at offset {error.start}."
        ) from None
    except UnicodeError as error:  # e.g. punycode
        raise InvalidArgument(
            f"Invalid JSON payload received. The body is not valid {charset}: {error}."
        ) from None
    if not text.strip():
        return {}
    body = load_json(text)
    if not isinstance(body, dict):
        raise InvalidArgument("Invalid JSON payload received. The body must be a JSON object.")
    return body


def error_response(error: OpenTasksError) -> web.Response:
    """``error`` as the JSON envelope of the REST API (for routes beside it)."""
    return _error(error)


def _error(error: OpenTasksError, *, close: bool = False) -> web.Response:
    """The error envelope google-api-core and google-gax parse; ``close`` ends the connection
    (after a body that could not be read to its end)."""
    status = rpc_status(error)
    body = {
        "error": {
            "code": http_status(error),
            "message": status.message,
            "status": grpc_code(error).name,
            "details": [json_format.MessageToDict(detail) for detail in status.details],
        }
    }
    response = web.json_response(body, status=http_status(error))
    if close:
        response.force_close()
    return response
