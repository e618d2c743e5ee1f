"""The listening side of the HTTP port, bounded: a flood of connections cannot exhaust file
descriptors (the keep-alive timer closes connections that send no complete request). With a
gRPC socket given, gRPC clients are served on this port too (:mod:`opentasks.api.shared_port`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from aiohttp import web

from opentasks.api.shared_port import PortSniffer
from opentasks.throttled_log import ThrottledLog

_log = logging.getLogger(__name__)
_REFUSAL_BODY = b"Too many connections to this server; retry shortly.\n"
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


class BoundedSite(web.BaseSite):
    """A TCP site holding at most ``max_connections`` connections: one more is answered 503 and
    closed at once, so a flood of idle or slow connections cannot exhaust file descriptors.

    With ``grpc_path`` (the gRPC server's Unix socket), a connection that opens with HTTP/2's
    preface is relayed there; it counts toward the same limit, and one that shows nothing in
    ``read_timeout_s`` is closed."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        monotonic: Callable[[], float],
        grpc_path: str | None = None,
        read_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._refusals = ThrottledLog(_log, monotonic, interval_s=10.0)
        self._grpc_path = grpc_path
        self._read_timeout_s = read_timeout_s
        self._undecided: set[asyncio.BaseProtocol] = set()
        self._relayed: set[asyncio.BaseProtocol] = set()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "the runner is set up before its sites start"

        def protocol() -> asyncio.BaseProtocol:
            held = len(server.connections) + len(self._undecided) + len(self._relayed)
            if held >= self._max_connections:
                self._refusals.warning(
                    "HTTP connection limit (%d) reached; refusing connections", self._max_connections
                )
                return _Refuse()
            if self._grpc_path is None:
                return server()
            return PortSniffer(server, self._grpc_path, self._read_timeout_s, self._undecided, self._relayed)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self._host, self._port, reuse_address=True)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.WriteTransport, transport)  # uvloop's are not subclasses
        transport.write(_REFUSAL)
        transport.close()
