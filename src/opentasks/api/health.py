"""Health checks for load balancers and orchestrators, without API authentication.

* HTTP: ``GET /healthz`` answers 200 while the process runs (liveness); ``GET /readyz`` answers
  200 when :class:`~opentasks.service.health.Readiness` finds the server ready, else 503 with
  the reason (``{"status": "not ready", "reason": "..."}``).
* gRPC: the standard ``grpc.health.v1.Health`` service. ``Check`` runs the same readiness check
  for the server as a whole (``""``) and for each API service it names; ``Watch`` streams are
  refreshed every few seconds by :meth:`GrpcHealth.run` and turn NOT_SERVING for good when the
  server starts shutting down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from opentasks.clock import Clock
from opentasks.service.health import Readiness

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
WATCH_REFRESH_S = 5.0
_NO_CACHE = {"Cache-Control": "no-store"}


def add_routes(app: web.Application, readiness: Readiness) -> None:
    """Serve ``/healthz`` and ``/readyz`` on the HTTP port (GET and HEAD)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers=_NO_CACHE)

    async def readyz(_: web.Request) -> web.Response:
        reason = await readiness.reason()
        if reason is None:
            return web.json_response({"status": "ready"}, headers=_NO_CACHE)
        return web.json_response({"status": "not ready", "reason": reason}, status=503, headers=_NO_CACHE)

    app.router.add_get(HEALTHZ_PATH, healthz)
    app.router.add_get(READYZ_PATH, readyz)


class GrpcHealth(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health ships no type hints
    """``grpc.health.v1.Health`` whose statuses follow :class:`Readiness`."""

    def __init__(self, readiness: Readiness, clock: Clock, services: Iterable[str]) -> None:
        super().__init__()
        self._readiness = readiness
        self._clock = clock
        self._services = ("", *services)
        self._stopped = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self, server)

    async def refresh(self) -> None:
        ready = await self._readiness.reason() is None
        serving = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in self._services:
            await self.set(service, serving)

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request.service in self._services:
            await self.refresh()
        return await super().Check(request, context)

    def start(self) -> None:
        """Keep the statuses that ``Watch`` streams see current."""
        self._refresher = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._stopped.is_set():
            await self.refresh()
            await self._clock.wait_for(self._stopped, WATCH_REFRESH_S)

    async def stop(self) -> None:
        """NOT_SERVING from now on (the server is shutting down)."""
        self._stopped.set()
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await self.enter_graceful_shutdown()
