"""The HTTP request an attempt sends, built from a claimed task (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from opentasks.domain.attempt import app_engine_headers, http_headers
from opentasks.domain.task import Task

DEFAULT_APP_ENGINE_DEADLINE = timedelta(minutes=10)


@dataclass(frozen=True)
class OutboundRequest:
    """One attempt's request. ``follow_redirects`` is never true for App Engine targets."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float
    follow_redirects: bool = False


def dispatch_deadline(task: Task) -> timedelta:
    """How long an attempt may take (App Engine tasks without one get the app default, 10 min)."""
    return task.dispatch_deadline or DEFAULT_APP_ENGINE_DEADLINE


def outbound_request(
    claimed: Task, *, app_engine_url: str, follow_redirects: bool = False
) -> OutboundRequest:
    """The request for ``claimed`` (which already counts the attempt in flight).

    HTTP targets go to their URL with their stored headers plus the ``X-CloudTasks-*`` headers;
    App Engine targets go to ``app_engine_url`` + ``relative_uri`` with ``X-AppEngine-*``.
    Service headers are added last, so a task can never forge them.
    """
    timeout_s = dispatch_deadline(claimed).total_seconds()
    if claimed.http_request is not None:
        request = claimed.http_request
        return OutboundRequest(
            method=request.http_method.name,
            url=request.url,
            headers={**request.headers, **http_headers(claimed)},
            body=request.body,
            timeout_s=timeout_s,
            follow_redirects=follow_redirects,
        )
    engine = claimed.app_engine_http_request
    assert engine is not None, "a stored task always has a target"
    return OutboundRequest(
        method=engine.http_method.name,
        url=app_engine_url.rstrip("/") + engine.relative_uri,
        headers={**engine.headers, **app_engine_headers(claimed)},
        body=engine.body,
        timeout_s=timeout_s,
    )
