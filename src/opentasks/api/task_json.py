"""A task as the REST API answers it, built straight from the record for the common shape.

``json_format.MessageToDict(task_to_pb(task, view))`` spent about a tenth of a REST CreateTask
building a protobuf message and then walking it by reflection. :func:`task_json` builds the
same dict directly for an HTTP task that has not been attempted and has no retry config of its
own: every CreateTask answer of such a task, and most GetTask answers. Other tasks go through
protobuf. A test holds both equal over tasks of every shape.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from opentasks.domain.queue import OAuthToken, OidcToken
from opentasks.domain.task import HttpRequest, Task, TaskView


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
