"""Tasks: records, validation of what CreateTask accepts, and the stored form Cloud Tasks keeps."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from enum import IntEnum
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import msgspec
from msgspec.structs import replace

from opentasks.domain.headers import check_headers, hop_by_hop_header, reserved_http_header
from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import (
    AppEngineRouting,
    HttpMethod,
    OAuthToken,
    OidcToken,
    RetryConfig,
    resolve_retry_config,
)
from opentasks.errors import InvalidArgument

HTTP_USER_AGENT = "Google-Cloud-Tasks"
APP_ENGINE_USER_AGENT = "AppEngine-Google; (+http://code.google.com/appengine)"
DEFAULT_HTTP_DISPATCH_DEADLINE = timedelta(minutes=10)
MAX_URL_LENGTH = 2083
_HTTP_DEADLINE_RANGE = (timedelta(seconds=15), timedelta(minutes=30), "[15s, 30m]")
_APP_ENGINE_DEADLINE_RANGE = (timedelta(seconds=15), timedelta(hours=24, seconds=15), "[15s, 24h15s]")
_HTTP_BODY_METHODS = frozenset({HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH})
_APP_ENGINE_BODY_METHODS = frozenset({HttpMethod.POST, HttpMethod.PUT})
_PACIFIC = ZoneInfo("America/Los_Angeles")
# Fixed bytes of a stored task besides its variable-length fields (names, times, counters, tags).
_TASK_OVERHEAD_BYTES = 64


class TaskView(IntEnum):
    """``google.cloud.tasks.v2.Task.View``: BASIC omits bodies."""

    VIEW_UNSPECIFIED = 0
    BASIC = 1
    FULL = 2


class HttpRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """An HTTP target: the request to send, byte for byte."""

    url: str
    http_method: HttpMethod = HttpMethod.POST
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: bytes = b""
    oauth_token: OAuthToken | None = None
    oidc_token: OidcToken | None = None


class AppEngineHttpRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """An App Engine target: a relative URI on a routed service."""

    http_method: HttpMethod = HttpMethod.POST
    app_engine_routing: AppEngineRouting | None = None
    relative_uri: str = "/"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: bytes = b""


class ResponseStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    """A ``google.rpc.Status`` as kept in ``Attempt.response_status``."""

    code: int
    message: str


class AttemptFailure(IntEnum):
    """How an attempt ended when it got no usable HTTP response."""

    NONE = 0  # the handler answered (see the HTTP status)
    TIMEOUT = 1  # no answer within dispatch_deadline
    UNREACHABLE = 2  # connection refused, reset, DNS failure, ...
    REFUSED = 3  # opentasks itself would not send it (e.g. a denied target)


class AttemptOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """The result of one dispatch attempt: an HTTP status, or why there is none.

    ``retry_after`` is the handler's ``Retry-After`` on a 429 or 503 answer (zero or more), a
    lower bound on the task's next schedule time (see ``attempt.after_attempt``).
    ``response_headers`` and ``response_body`` are the answer's headers and the start of its
    body, as much as the pusher was asked to keep.
    """

    http_status: int = 0
    failure: AttemptFailure = AttemptFailure.NONE
    detail: str = ""
    retry_after: timedelta | None = None
    # What the answer said, kept in history with the attempt (never stored with the task).
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: bytes = b""

    @property
    def succeeded(self) -> bool:
        return 200 <= self.http_status < 300

    @property
    def responded(self) -> bool:
        return self.http_status > 0


class Attempt(msgspec.Struct, frozen=True, omit_defaults=True):
    """One dispatch attempt (``Task.first_attempt`` keeps only ``dispatch_time``)."""

    schedule_time: datetime | None = None
    dispatch_time: datetime | None = None
    response_time: datetime | None = None
    response_status: ResponseStatus | None = None


class TaskDraft(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a caller asks CreateTask for, before defaults and validation."""

    name: str = ""
    http_request: HttpRequest | None = None
    app_engine_http_request: AppEngineHttpRequest | None = None
    schedule_time: datetime | None = None
    dispatch_deadline: timedelta | None = None
    retry_config: RetryConfig | None = None


class Task(msgspec.Struct, frozen=True, omit_defaults=True):
    """A task as stored.

    ``enqueue_time`` is the exact time CreateTask accepted it (used by purge); the API's
    ``create_time`` is that truncated to whole seconds. ``named`` is True when the caller
    chose the ID, which makes the name de-duplicate and leave a tombstone.

    Internal (not on the wire): ``execution_count`` counts earlier attempts answered with a
    non-5xx status (the HTTP target's ``X-CloudTasks-TaskExecutionCount``), and
    ``previous_outcome`` is how the previous attempt ended (for the retry headers).
    """

    name: TaskName
    schedule_time: datetime
    enqueue_time: datetime
    http_request: HttpRequest | None = None
    app_engine_http_request: AppEngineHttpRequest | None = None
    dispatch_deadline: timedelta | None = None
    dispatch_count: int = 0
    response_count: int = 0
    first_attempt: Attempt | None = None
    last_attempt: Attempt | None = None
    retry_config: RetryConfig | None = None
    named: bool = False
    execution_count: int = 0
    previous_outcome: AttemptOutcome | None = None

    @property
    def create_time(self) -> datetime:
        return self.enqueue_time.replace(microsecond=0)

    def in_view(self, view: TaskView) -> Task:
        """The task as a response of ``view`` shows it (BASIC drops bodies)."""
        if view == TaskView.FULL:
            return self
        if self.http_request is not None and self.http_request.body:
            return replace(self, http_request=replace(self.http_request, body=b""))
        if self.app_engine_http_request is not None and self.app_engine_http_request.body:
            return replace(self, app_engine_http_request=replace(self.app_engine_http_request, body=b""))
        return self


def new_task(draft: TaskDraft, queue: QueueName, now: datetime, generated_id: str, limits: Limits) -> Task:
    """Validate a CreateTask request and build the task as Cloud Tasks would store it.

    Args:
        draft: the task as the caller sent it.
        queue: the ``parent`` of the request.
        now: the time of the request.
        generated_id: the ID to use if the caller gave no name.
        limits: the validation limits in force.
    """
    name, named = _task_name(draft.name, queue, generated_id)
    http, app_engine = _validate_target(draft, limits)
    task = Task(
        name=name,
        schedule_time=_schedule_time(draft.schedule_time, now, limits),
        enqueue_time=now,
        http_request=http,
        app_engine_http_request=app_engine,
        dispatch_deadline=_dispatch_deadline(draft.dispatch_deadline, is_http=http is not None),
        retry_config=resolve_retry_config(draft.retry_config) if draft.retry_config else None,
        named=named,
    )
    if stored_size(task) > limits.max_task_size_bytes:
        raise InvalidArgument("Task size too large")
    return task


def _task_name(name: str, queue: QueueName, generated_id: str) -> tuple[TaskName, bool]:
    if not name:
        return TaskName(queue, generated_id), False
    if not name.startswith(f"{queue}/tasks/") and "/tasks/" in name:
        other = name.rsplit("/tasks/", 1)[0]
        raise InvalidArgument(
            f"The queue name from request ('{queue}') must be the same as the queue name in the "
            f"named task ('{other}')."
        )
    return TaskName.parse(name), True


def _validate_target(
    draft: TaskDraft, limits: Limits
) -> tuple[HttpRequest | None, AppEngineHttpRequest | None]:
    if draft.http_request is not None and draft.app_engine_http_request is not None:
        raise InvalidArgument("Task may set only one of httpRequest and appEngineHttpRequest.")
    if draft.http_request is not None:
        return validate_http_request(draft.http_request, limits), None
    if draft.app_engine_http_request is not None:
        return None, validate_app_engine_http_request(draft.app_engine_http_request)
    raise InvalidArgument("Task must set a target: httpRequest or appEngineHttpRequest.")


def validate_http_request(request: HttpRequest, limits: Limits) -> HttpRequest:
    """Check an HTTP target and return its stored form (default method, service headers)."""
    _validate_url(request.url)
    method = request.http_method or HttpMethod.POST
    if request.body and method not in _HTTP_BODY_METHODS:
        raise InvalidArgument(
            f"HttpRequest.body is allowed only with POST, PUT or PATCH; this task's method is {method.name}."
        )
    has_token = request.oidc_token is not None or request.oauth_token is not None
    if has_token:
        _validate_token_url(request.url, limits)
    headers = _stored_http_headers(request.headers, has_token)
    return replace(request, http_method=method, headers=headers)


def _validate_url(url: str) -> None:
    if not url:
        raise InvalidArgument("HttpRequest.url is required.")
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument("HttpTarget.url must start with 'http://' or 'https://'.")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(f"HttpRequest.url must be at most {MAX_URL_LENGTH} characters long.")
    try:
        host = urlsplit(url).hostname
    except ValueError as error:
        raise InvalidArgument(f"HttpRequest.url is not a valid URL: {error}.") from None
    if not host:
        raise InvalidArgument("HttpRequest.url must name a host.")


def _validate_token_url(url: str, limits: Limits) -> None:
    if url.startswith("https://"):
        return
    if limits.require_https_for_tokens or not is_local_host(urlsplit(url).hostname or ""):
        raise InvalidArgument(
            "HttpRequest.url must start with 'https://' for request with HttpRequest.authorization_header"
        )


def is_local_host(host: str) -> bool:
    """True for loopback, private-network and single-label hosts (local handlers on plain http)."""
    if host == "localhost" or ("." not in host and ":" not in host):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith((".localhost", ".local", ".internal"))
    return address.is_loopback or address.is_private


def _stored_http_headers(headers: dict[str, str], has_token: bool) -> dict[str, str]:
    """Cloud Tasks ignores Host/Content-Length and Google-reserved headers and sets User-Agent."""
    stored: dict[str, str] = {}
    for key, value in check_headers(headers).items():
        if reserved_http_header(key) or (has_token and key.lower() == "authorization"):
            continue
        stored[key] = value
    stored["User-Agent"] = HTTP_USER_AGENT
    return stored


def validate_app_engine_http_request(request: AppEngineHttpRequest) -> AppEngineHttpRequest:
    """Check an App Engine target and return its stored form."""
    uri = request.relative_uri or "/"
    if not uri.startswith("/") or any(c.isspace() for c in uri):
        raise InvalidArgument("AppEngineHttpRequest.relativeUri must start with '/' and contain no spaces.")
    if len(uri) > MAX_URL_LENGTH:
        raise InvalidArgument(
            f"AppEngineHttpRequest.relativeUri must be at most {MAX_URL_LENGTH} characters."
        )
    method = request.http_method or HttpMethod.POST
    if request.body and method not in _APP_ENGINE_BODY_METHODS:
        raise InvalidArgument(
            "AppEngineHttpRequest.body is allowed only with POST or PUT; "
            f"this task's method is {method.name}."
        )
    headers = _stored_app_engine_headers(request)
    return replace(request, relative_uri=uri, http_method=method, headers=headers)


def _stored_app_engine_headers(request: AppEngineHttpRequest) -> dict[str, str]:
    stored: dict[str, str] = {}
    user_agent = ""
    for key, value in check_headers(request.headers).items():
        lower = key.lower()
        if (
            lower in ("host", "content-length")
            or lower.startswith(("x-google-", "x-appengine-"))
            or hop_by_hop_header(lower)
        ):
            continue
        if lower == "user-agent":
            user_agent = value
            continue
        stored[key] = value
    stored["User-Agent"] = f"{user_agent} {APP_ENGINE_USER_AGENT}" if user_agent else APP_ENGINE_USER_AGENT
    if request.body:
        stored["Content-Length"] = str(len(request.body))
        if not any(k.lower() == "content-type" for k in stored):
            stored["Content-Type"] = "application/octet-stream"
    return stored


def _schedule_time(requested: datetime | None, now: datetime, limits: Limits) -> datetime:
    if requested is None or requested < now:
        return now
    if requested - now > limits.max_schedule_ahead:
        hours = int(limits.max_schedule_ahead.total_seconds() // 3600)
        shown = requested.astimezone(_PACIFIC).isoformat()
        raise InvalidArgument(
            f"The Task.scheduleTime, {shown}, is too far in the future. "
            f"Schedule time must be no more than {hours}h in the future."
        )
    return requested


def _dispatch_deadline(deadline: timedelta | None, *, is_http: bool) -> timedelta | None:
    if deadline is None:
        return DEFAULT_HTTP_DISPATCH_DEADLINE if is_http else None
    low, high, shown = _HTTP_DEADLINE_RANGE if is_http else _APP_ENGINE_DEADLINE_RANGE
    deadline = timedelta(milliseconds=deadline // timedelta(milliseconds=1))
    if not low <= deadline <= high:
        raise InvalidArgument(f"Task.dispatchDeadline must be between {shown}.")
    return deadline


def stored_size(task: Task) -> int:
    """Approximate size of the task as stored (what Cloud Tasks' 1 MB limit measures)."""
    request = task.http_request or task.app_engine_http_request
    size = _TASK_OVERHEAD_BYTES + len(str(task.name))
    if request is not None:
        size += len(request.body) + sum(len(k) + len(v) + 6 for k, v in request.headers.items())
    if task.http_request is not None:
        size += len(task.http_request.url)
    if task.app_engine_http_request is not None:
        size += len(task.app_engine_http_request.relative_uri)
    return size
