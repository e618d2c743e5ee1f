"""The HTTP request an attempt sends, built from a claimed task and its queue (pure)."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from opentasks.domain.attempt import app_engine_headers, http_headers
from opentasks.domain.headers import sendable_headers
from opentasks.domain.queue import OAuthToken, OidcToken, Queue
from opentasks.domain.routing import AppEngineRoutes, apply_http_target, effective_routing
from opentasks.domain.task import Task

DEFAULT_APP_ENGINE_DEADLINE = timedelta(minutes=10)


class OutboundRequest(msgspec.Struct, frozen=True):
    """One attempt's request. ``follow_redirects`` is never true for App Engine targets.

    ``oidc_token`` / ``oauth_token`` say which credential the sender must mint and put in the
    ``Authorization`` header (``headers`` then hold none of their own).
    """

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float
    follow_redirects: bool = False
    oidc_token: OidcToken | None = None
    oauth_token: OAuthToken | None = None


def dispatch_deadline(task: Task) -> timedelta:
    """How long an attempt may take (App Engine tasks without one get the app default, 10 min)."""
    return task.dispatch_deadline or DEFAULT_APP_ENGINE_DEADLINE


def outbound_request(
    claimed: Task, queue: Queue, *, app_engine: AppEngineRoutes, follow_redirects: bool = False
) -> OutboundRequest:
    """The request for ``claimed`` (which already counts the attempt in flight).

    HTTP targets go to their URL, rewritten by the queue's ``http_target`` as it is now, with
    their stored headers plus the ``X-CloudTasks-*`` headers; App Engine targets go to the base
    URL their (or the queue's override) routing resolves to + ``relative_uri``, with
    ``X-AppEngine-*``. Service headers are added last, so a task can never forge them, and
    hop-by-hop or framing headers (which rows stored by older versions may hold) are dropped.
    """
    timeout_s = dispatch_deadline(claimed).total_seconds()
    if claimed.http_request is not None:
        request = apply_http_target(claimed.http_request, queue.http_target)
        signed = request.oidc_token is not None or request.oauth_token is not None
        headers = sendable_headers(request.headers)
        if signed:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        return OutboundRequest(
            method=request.http_method.name,
            url=request.url,
            headers={**headers, **http_headers(claimed)},
            body=request.body,
            timeout_s=timeout_s,
            follow_redirects=follow_redirects,
            oidc_token=request.oidc_token,
            oauth_token=request.oauth_token,
        )
    engine = claimed.app_engine_http_request
    assert engine is not None, "a stored task always has a target"
    routing = effective_routing(engine.app_engine_routing, queue.app_engine_routing_override)
    return OutboundRequest(
        method=engine.http_method.name,
        url=app_engine.base_url(routing) + engine.relative_uri,
        headers={**sendable_headers(engine.headers), **app_engine_headers(claimed)},
        body=engine.body,
        timeout_s=timeout_s,
    )
