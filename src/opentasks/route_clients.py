"""Send Google's Cloud Tasks clients to opentasks without touching the code that makes them.

Code written as Google's samples are, ``tasks_v2.CloudTasksClient()`` with no arguments, talks
to Google with the application's default credentials, and Google's client library reads no
emulator variable. :func:`route_clients` changes what such a constructor builds: every
``CloudTasksClient`` and ``CloudTasksAsyncClient`` (v2 and v2beta3) made afterwards talks to
the opentasks server at ``endpoint`` with anonymous credentials (and the API token, if given).
A client built with a transport of its own (an object or a factory) keeps it. It is only ever
active when asked for: the ``opentasks_route_clients`` pytest fixture, ``opentasks run -- CMD``,
or a call.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from opentasks import endpoints

CLIENT_MODULES = ("google.cloud.tasks_v2", "google.cloud.tasks_v2beta3")
Undo = Callable[[], None]


def route_clients_on_import(endpoint: str, api_token: str = "") -> None:
    """:func:`route_clients` once the client library is imported, not before: a process that
    never uses Cloud Tasks does not pay for importing it (``opentasks run`` starts every Python
    process with this)."""
    if any(name in sys.modules for name in CLIENT_MODULES):
        route_clients(endpoint, api_token)
        return
    sys.meta_path.insert(0, _RouteOnImport(endpoint, api_token))


class _RouteOnImport(importlib.abc.MetaPathFinder):
    """Finds the client modules as the other finders do, and routes their clients once loaded."""

    def __init__(self, endpoint: str, api_token: str) -> None:
        self._endpoint = endpoint
        self._api_token = api_token

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in CLIENT_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        load = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            load(module)
            _route(module.CloudTasksClient, endpoints.host_port(self._endpoint), self._api_token)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def route_clients(endpoint: str, api_token: str = "") -> Undo:
    """Make every Cloud Tasks client built from now on talk to opentasks at ``endpoint``
    (``host:port``, best the HTTP port, which serves gRPC and REST); returns what undoes it."""
    undo: list[Undo] = []
    for name in CLIENT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - both ship in google-cloud-tasks
            continue
        undo.append(_route(module.CloudTasksClient, endpoints.host_port(endpoint), api_token))

    def undo_all() -> None:
        for step in reversed(undo):
            step()

    return undo_all


def _route(client_class: Any, endpoint: str, api_token: str) -> Undo:
    from opentasks.clients import rest_credentials  # noqa: PLC0415 - imported with the client library

    original = client_class.__init__
    rest_url: list[str] = []  # found once (it may probe the endpoint), when a REST client is made

    def __init__(
        self: Any,
        *,
        credentials: Any = None,
        transport: Any = None,
        client_options: Any = None,
        **rest: Any,
    ) -> None:
        if transport is None or isinstance(transport, str):
            kind = transport or "grpc"
            if kind == "rest":
                rest_url[:] = rest_url or [endpoints.rest_url(endpoint)]
                credentials = rest_credentials(api_token)
                client_options = {"api_endpoint": rest_url[0]}
            else:
                transport = _grpc_transport(client_class, kind, endpoint, api_token)
                credentials = client_options = None
        original(self, credentials=credentials, transport=transport, client_options=client_options, **rest)

    client_class.__init__ = __init__

    def undo() -> None:
        client_class.__init__ = original

    return undo


def _grpc_transport(client_class: Any, kind: str, endpoint: str, api_token: str) -> Any:
    from opentasks.clients import aio_channel, channel  # noqa: PLC0415 - imported with the client library

    make = aio_channel if kind == "grpc_asyncio" else channel
    return client_class.get_transport_class(kind)(channel=make(endpoint, api_token))
