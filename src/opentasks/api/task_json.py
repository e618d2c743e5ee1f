"""REST CreateTask's request and a task as REST answers it, for the common shape, without
protobuf in between.

Parsing the JSON into a protobuf message (``json_format``) and reading it back, then building a
protobuf message for the answer and printing it by reflection, cost about a fifth of a REST
CreateTask. :func:`create_task_request` reads a body that asks for an HTTP task in the plain
proto3 JSON spelling (camelCase names, enum names, standard base64, RFC 3339 times) straight
into a draft; anything else (another field, a number for an enum, a null, a string protobuf
would refuse) is left to protobuf, which words the error. :func:`task_json` builds the answer
for an HTTP task that has not been attempted and has no retry config of its own. Tests hold
both equal to the protobuf path over requests and tasks of every shape.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from opentasks.api.convert import duration_value, sorted_headers, time_value
from opentasks.api.json_errors import duration_text_ok, timestamp_text_ok
from opentasks.domain.queue import HttpMethod, OAuthToken, OidcToken
from opentasks.domain.task import HttpRequest, Task, TaskDraft, TaskView

_REQUEST_KEYS = frozenset({"task", "responseView"})
_TASK_KEYS = frozenset({"name", "httpRequest", "scheduleTime", "dispatchDeadline"})
_HTTP_REQUEST_KEYS = frozenset({"url", "httpMethod", "headers", "body", "oauthToken", "oidcToken"})
_STANDARD_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class _Unusual(Exception):
    """The body is not one read here: protobuf reads it."""


def create_task_request(body: dict[str, Any]) -> tuple[TaskDraft, TaskView] | None:
    """CreateTask's JSON body (without ``parent``, which the path gives) as a draft and the
    response view, or None when protobuf should read it."""
    try:
        return _create_task_request(body)
    except _Unusual:
        return None


def _create_task_request(body: dict[str, Any]) -> tuple[TaskDraft, TaskView]:
    task = _fields(body, _REQUEST_KEYS).get("task", {})
    _fields(task, _TASK_KEYS)
    view = TaskView[_enum_name(body.get("responseView", "VIEW_UNSPECIFIED"), TaskView)]
    request = task.get("httpRequest")
    schedule, deadline = task.get("scheduleTime"), task.get("dispatchDeadline")
    draft = TaskDraft(
        name=_text(task.get("name", "")),
        http_request=None if request is None else _read_http_request(request),
        schedule_time=None if schedule is None else _read_time(schedule),
        dispatch_deadline=None if deadline is None else _read_duration(deadline),
    )
    return draft, view


def _read_http_request(given: object) -> HttpRequest:
    found = _fields(given, _HTTP_REQUEST_KEYS)
    headers = found.get("headers", {})
    if not isinstance(headers, dict):
        raise _Unusual
    oauth, oidc = found.get("oauthToken"), found.get("oidcToken")
    if oauth is not None and oidc is not None:  # one oneof: protobuf words the refusal
        raise _Unusual
    return HttpRequest(
        url=_text(found.get("url", "")),
        http_method=HttpMethod[_enum_name(found.get("httpMethod", "HTTP_METHOD_UNSPECIFIED"), HttpMethod)],
        headers=sorted_headers({_text(name): _text(value) for name, value in headers.items()}),
        body=_read_bytes(found.get("body", "")),
        oauth_token=None if oauth is None else OAuthToken(**_token_fields(oauth, "scope")),
        oidc_token=None if oidc is None else OidcToken(**_token_fields(oidc, "audience")),
    )


def _token_fields(given: object, other: str) -> dict[str, str]:
    found = _fields(given, frozenset({"serviceAccountEmail", other}))
    return {
        "service_account_email": _text(found.get("serviceAccountEmail", "")),
        other: _text(found.get(other, "")),
    }


def _fields(given: object, known: frozenset[str]) -> dict[str, Any]:
    """A JSON object of the fields ``known`` only, none of them null."""
    if not isinstance(given, dict) or not known.issuperset(given) or None in given.values():
        raise _Unusual
    return given


def _text(value: object) -> str:
    """A string protobuf keeps as it is (no unpaired surrogate, which it refuses)."""
    if not isinstance(value, str):
        raise _Unusual
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Unusual from None
    return value


def _enum_name(value: object, kind: type[HttpMethod] | type[TaskView]) -> str:
    if not isinstance(value, str) or value not in kind.__members__:
        raise _Unusual
    return value


def _read_bytes(value: object) -> bytes:
    if not isinstance(value, str) or not _STANDARD_BASE64.fullmatch(value):
        raise _Unusual
    return base64.b64decode(value)


def _read_time(value: object) -> datetime:
    return time_value(_parsed(value, timestamp_text_ok, timestamp_pb2.Timestamp()), "Task.scheduleTime")


def _read_duration(value: object) -> timedelta:
    return duration_value(_parsed(value, duration_text_ok, duration_pb2.Duration()), "Task.dispatchDeadline")


def _parsed(value: object, text_ok: Callable[[str], bool], message: Any) -> Any:
    """``value`` read into ``message`` (a Timestamp or Duration), if its text is one Google
    reads (stricter than protobuf)."""
    text = _text(value)
    if not text_ok(text):
        raise _Unusual
    try:
        message.FromJsonString(text)
    except ValueError:
        raise _Unusual from None
    return message


def task_json(task: Task, view: TaskView, *, int_enums: bool) -> dict[str, Any] | None:
    """The proto3 JSON of ``task`` (already in ``view``) as protobuf would print it, or None
    when its shape is not one built here."""
    request = task.http_request
    if (
        request is None
        or task.app_engine_http_request is not None
        or task.first_attempt is not None
        or task.last_attempt is not None
        or task.retry_config is not None
        or (task.dispatch_deadline is not None and task.dispatch_deadline < timedelta(0))
    ):
        return None
    body: dict[str, Any] = {}
    if str(task.name):
        body["name"] = str(task.name)
    body["httpRequest"] = _http_request(request, int_enums)
    body["scheduleTime"] = timestamp_json(task.schedule_time)
    body["createTime"] = timestamp_json(task.create_time)
    if task.dispatch_deadline is not None:
        body["dispatchDeadline"] = duration_json(task.dispatch_deadline)
    if task.dispatch_count:
        body["dispatchCount"] = task.dispatch_count
    if task.response_count:
        body["responseCount"] = task.response_count
    shown = view if view != TaskView.VIEW_UNSPECIFIED else TaskView.BASIC
    body["view"] = int(shown) if int_enums else shown.name
    return body


def _http_request(request: HttpRequest, int_enums: bool) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if request.url:
        found["url"] = request.url
    if request.http_method:
        found["httpMethod"] = int(request.http_method) if int_enums else request.http_method.name
    if request.headers:
        found["headers"] = dict(request.headers)
    if request.body:
        found["body"] = base64.b64encode(request.body).decode("ascii")
    if request.oauth_token is not None:
        found["oauthToken"] = _token(request.oauth_token)
    if request.oidc_token is not None:
        found["oidcToken"] = _token(request.oidc_token)
    return found


def _token(token: OAuthToken | OidcToken) -> dict[str, str]:
    found = {}
    if token.service_account_email:
        found["serviceAccountEmail"] = token.service_account_email
    other, value = ("scope", token.scope) if isinstance(token, OAuthToken) else ("audience", token.audience)
    if value:
        found[other] = value
    return found


def timestamp_json(value: datetime) -> str:
    """RFC 3339 in UTC with 0, 3 or 6 fractional digits, as protobuf prints a Timestamp."""
    utc = value.astimezone(UTC).replace(tzinfo=None)
    whole, micros = utc.replace(microsecond=0).isoformat(), utc.microsecond
    if not micros:
        return whole + "Z"
    if micros % 1000 == 0:
        return f"{whole}.{micros // 1000:03d}Z"
    return f"{whole}.{micros:06d}Z"


def duration_json(value: timedelta) -> str:
    """Seconds with 0, 3 or 6 fractional digits and an ``s``, as protobuf prints a Duration
    (for durations of zero or more)."""
    seconds, micros = value.days * 86_400 + value.seconds, value.microseconds
    if not micros:
        return f"{seconds}s"
    if micros % 1000 == 0:
        return f"{seconds}.{micros // 1000:03d}s"
    return f"{seconds}.{micros:06d}s"
