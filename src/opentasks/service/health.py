"""Readiness: may this server take traffic? Shared by ``GET /readyz`` and the gRPC health service.

Ready means the store answers (a store with a ``probe()`` also checks its own files, e.g. that
SQLite's file is still the one it opened) within ``timeout_s``, and the dispatcher runs (unless
the server was started without one). Liveness needs no check: a process that answers is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from opentasks.clock import Clock
from opentasks.storage.base import Store

PROBE_TIMEOUT_S = 2.0


@runtime_checkable
class Probed(Protocol):
    """A store that can say why it cannot serve (None when it can)."""

    async def probe(self) -> str | None: ...


class Readiness:
    """``await reason()`` is None when ready, else why not (one line, for operators)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        dispatching: Callable[[], bool] | None = None,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._dispatching = dispatching
        self._timeout_s = timeout_s
        self._running: asyncio.Future[str | None] | None = None
        self.stopping = False  # set when the server starts shutting down

    async def reason(self) -> str | None:
        """Callers that ask while a check runs share its answer (probes never pile up)."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._check())
        return await asyncio.shield(self._running)

    async def _check(self) -> str | None:
        if self.stopping:
            return "the server is shutting down"
        store_reason = await self._store_reason()
        if store_reason is not None:
            return store_reason
        if self._dispatching is not None and not self._dispatching():
            return "the dispatcher is stopped"
        return None

    async def _store_reason(self) -> str | None:
        check = asyncio.ensure_future(self._ask_store())
        finished = asyncio.Event()
        check.add_done_callback(lambda _: finished.set())
        if not await self._clock.wait_for(finished, self._timeout_s):
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await check
            return f"the store did not answer within {self._timeout_s:g} s"
        try:
            return check.result()
        except Exception as error:  # whatever the store raises means it cannot serve
            return f"the store does not answer: {error}"

    async def _ask_store(self) -> str | None:
        if isinstance(self._store, Probed):
            return await self._store.probe()
        await self._store.list_locations("opentasks-readiness")  # any read shows the store answers
        return None
