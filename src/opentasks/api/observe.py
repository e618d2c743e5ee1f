"""API calls as events: a gRPC server interceptor and an aiohttp middleware that publish one
:class:`~opentasks.service.observers.RpcServed` per call (method, status, duration, caller).

The caller is named by the position of its token in the server's configuration
(``token-1``, ``read-only-token-2``), never by the token itself; ``anonymous`` when it sent none
and ``invalid`` when its credential matched no token. Method labels come from the served
method tables only, so a client cannot invent new ones.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from aiohttp import web

from opentasks.api.auth import ApiAuth
from opentasks.api.rest import ROUTES, V2BETA3_ROUTES, buffer_target, find_route
from opentasks.service.observers import RPC_SERVED, Observers, RpcServed

_API_PREFIXES = {"/v2/": ROUTES, "/v2beta3/": V2BETA3_ROUTES}
_OTHER = "unknown"


def caller_id(auth: ApiAuth | None, headers: Mapping[str, str], query_key: str = "") -> str:
    """Which configured token a call presented (see the module docstring); '' without auth."""
    if auth is None:
        return ""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    presented = value.strip() if scheme.lower() == "bearer" else ""
    presented = presented or headers.get("x-goog-api-key", "").strip() or query_key
    if not presented:
        return "anonymous"
    for prefix, tokens in (("token", auth.tokens), ("read-only-token", auth.read_only_tokens)):
        for index, token in enumerate(tokens, 1):
            if hmac.compare_digest(presented.encode(), token.encode()):
                return f"{prefix}-{index}"
    return "invalid"


def _title(rpc: str) -> str:
    return "".join(part.title() for part in rpc.split("_"))


class ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Publishes every gRPC call; pass it in ``grpc.aio.server(interceptors=[...])``."""

    def __init__(self, observers: Observers, auth: ApiAuth | None, monotonic: Callable[[], float]) -> None:
        self._observers = observers
        self._auth = auth
        self._monotonic = monotonic
        # One observed handler per served handler, made once: building one per call cost more
        # than the call's own bookkeeping.
        self._observed: dict[int, tuple[Any, Any]] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if RPC_SERVED not in self._observers.wanted or handler is None or handler.unary_unary is None:
            return handler
        if str(details.method).startswith("/grpc.health."):  # probes are no API calls
            return handler
        cached = self._observed.get(id(handler))
        if cached is None or cached[0] is not handler:
            method = str(details.method).rsplit("/", 1)[-1] or _OTHER
            cached = self._observed[id(handler)] = (handler, self._wrap(handler, method))
        return cached[1]

    def _wrap(self, handler: Any, method: str) -> Any:
        behavior = handler.unary_unary

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = self._monotonic()
            code = "OK"
            try:
                return await behavior(request, context)
            except BaseException:
                status = context.code()
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                elapsed = self._monotonic() - started
                caller = caller_id(self._auth, _metadata(context)) if self._auth is not None else ""
                self._observers.rpc_served(RpcServed("grpc", method, code, elapsed, caller))

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {
        key.lower(): value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


def rest_method(http_method: str, path: str) -> str | None:
    """The RPC a REST call reaches (e.g. ``CreateTask``), ``unknown``, or None outside the API."""
    for prefix, table in _API_PREFIXES.items():
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if buffer_target(http_method, rest) is not None:
                return "BufferTask"
            try:
                return _title(find_route(http_method, rest, table)[0].rpc)
            except Exception:
                return _OTHER
    return None


def observing_middleware(
    observers: Observers, auth: ApiAuth | None, monotonic: Callable[[], float]
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware publishing every REST call (``app.middlewares.append(...)``)."""

    @web.middleware
    async def observe(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]) -> Any:
        method = rest_method(request.method, request.path)
        if method is None or RPC_SERVED not in observers.wanted:
            return await handler(request)
        started = monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            headers = {key.lower(): value for key, value in request.headers.items()}
            caller = caller_id(auth, headers, request.query.get("key", ""))
            event = RpcServed("http", method, str(status), monotonic() - started, caller, status)
            observers.rpc_served(event)

    return observe
