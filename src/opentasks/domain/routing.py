"""Where an attempt goes: App Engine routing to configured base URLs, and the queue-level HTTP
target (``Queue.http_target``) applied to HTTP tasks at dispatch time (spec 2.6, 2.7, 2.11)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from msgspec.structs import replace

from opentasks.domain.headers import reserved_http_header
from opentasks.domain.queue import (
    AppEngineRouting,
    HttpMethod,
    HttpTarget,
    UriOverride,
    UriOverrideEnforceMode,
    UriScheme,
)
from opentasks.domain.task import HttpRequest
from opentasks.errors import FailedPrecondition, InvalidArgument

_BODYLESS_METHODS = frozenset({HttpMethod.GET, HttpMethod.HEAD, HttpMethod.DELETE, HttpMethod.OPTIONS})


@dataclass(frozen=True)
class AppEngineRoutes:
    """Base URLs of App Engine services: ``services`` maps ``service`` or ``version.service``
    (queue.yaml's ``target`` notation) to a URL; anything else goes to ``default_url``."""

    default_url: str = "http://127.0.0.1:8080"
    services: Mapping[str, str] = field(default_factory=dict)

    def base_url(self, routing: AppEngineRouting | None) -> str:
        """The URL that ``relative_uri`` is appended to, for the most specific matching entry."""
        service = routing.service if routing is not None and routing.service else "default"
        version = routing.version if routing is not None else ""
        for key in (f"{version}.{service}" if version else "", service):
            if key and key in self.services:
                return self.services[key].rstrip("/")
        return self.default_url.rstrip("/")

    def host(self, routing: AppEngineRouting | None) -> str:
        """The output-only ``AppEngineRouting.host``: host and port of the URL the routing resolves to."""
        return urlsplit(self.base_url(routing)).netloc


def with_host(routing: AppEngineRouting | None, routes: AppEngineRoutes) -> AppEngineRouting:
    """``routing`` with its output-only ``host`` computed (stored, as Cloud Tasks stores it)."""
    routing = routing or AppEngineRouting()
    return replace(routing, host=routes.host(routing))


def parse_service_routes(entries: list[str]) -> dict[str, str]:
    """``["worker=http://127.0.0.1:8081", "v2.worker=http://..."]`` -> a ``services`` map."""
    routes: dict[str, str] = {}
    for entry in entries:
        key, sep, url = entry.partition("=")
        if not sep or not key.strip() or not url.startswith(("http://", "https://")):
            raise InvalidArgument(
                f"'{entry}' is not SERVICE=URL or VERSION.SERVICE=URL with an http:// or https:// URL."
            )
        routes[key.strip()] = url.strip()
    return routes


def effective_routing(
    task_routing: AppEngineRouting | None, override: AppEngineRouting | None
) -> AppEngineRouting | None:
    """The queue's ``app_engine_routing_override`` wins over the task's own routing."""
    return override if override is not None else task_routing


def apply_http_target(request: HttpRequest, target: HttpTarget | None) -> HttpRequest:
    """The request an HTTP task sends once its queue's ``http_target`` is applied.

    The URI override rewrites parts of the URL (all given parts with ALWAYS, the default; only
    parts the task's URL lacks with IF_NOT_EXISTS); a method override replaces the method and
    drops the body of methods that have none; header overrides replace headers of the same name
    (reserved names excepted); a queue-level token replaces the task's.
    """
    if target is None:
        return request
    url = request.url if target.uri_override is None else override_url(request.url, target.uri_override)
    method, body = request.http_method, request.body
    if target.http_method != HttpMethod.HTTP_METHOD_UNSPECIFIED:
        method = target.http_method
        body = b"" if method in _BODYLESS_METHODS else body
    headers = _override_headers(request.headers, target.header_overrides)
    oidc, oauth = request.oidc_token, request.oauth_token
    if target.oidc_token is not None or target.oauth_token is not None:
        oidc, oauth = target.oidc_token, target.oauth_token
    return replace(
        request, url=url, http_method=method, body=body, headers=headers, oidc_token=oidc, oauth_token=oauth
    )


def override_url(url: str, override: UriOverride) -> str:
    """``url`` with the parts ``override`` gives (``None`` parts are left alone)."""
    parts = urlsplit(url)
    only_missing = override.enforce_mode == UriOverrideEnforceMode.IF_NOT_EXISTS
    scheme, host, port = parts.scheme, parts.hostname or "", parts.port
    path, query = parts.path, parts.query
    if override.scheme is not None and not (only_missing and scheme):
        scheme = "http" if override.scheme == UriScheme.HTTP else "https"
    if override.host is not None and not (only_missing and host):
        host = override.host
    if override.port is not None and not (only_missing and port):
        port = override.port or None
    if override.path is not None and not (only_missing and path not in ("", "/")):
        path = override.path if not override.path or override.path.startswith("/") else "/" + override.path
    if override.query is not None and not (only_missing and query):
        query = override.query.removeprefix("?")
    netloc = _netloc(host, port)
    return urlunsplit((scheme or "https", netloc, path, query, ""))


def buffer_url(target: HttpTarget | None) -> str:
    """The URL of a task made by BufferTask: the queue's URI override alone.

    FAILED_PRECONDITION when the queue has no override with a host (the task would have no URL).
    """
    override = target.uri_override if target is not None else None
    if override is None or not override.host:
        raise FailedPrecondition(
            "BufferTask needs queue-level routing: set the queue's httpTarget.uriOverride.host "
            "(e.g. gcloud tasks queues update Q --http-uri-override=host:example.com)."
        )
    return override_url("", replace(override, enforce_mode=UriOverrideEnforceMode.ALWAYS))


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _override_headers(headers: dict[str, str], overrides: tuple[tuple[str, str], ...]) -> dict[str, str]:
    if not overrides:
        return headers
    result = dict(headers)
    for key, value in overrides:
        if reserved_http_header(key):
            continue
        for existing in [k for k in result if k.lower() == key.lower()]:
            del result[existing]
        result[key] = value
    return result
