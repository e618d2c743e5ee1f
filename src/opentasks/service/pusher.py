"""Outbound HTTP: sends one attempt's request and reports how it ended."""

from __future__ import annotations

import socket
from typing import Any, Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from opentasks.domain.outbound import OutboundRequest
from opentasks.domain.target_policy import TargetPolicy
from opentasks.domain.task import AttemptFailure, AttemptOutcome

# aiohttp adds these unless told not to; Cloud Tasks sends a task's headers as stored.
_NO_AUTO_HEADERS = ("User-Agent", "Content-Type", "Accept", "Accept-Encoding")
_MAX_REDIRECTS = 5
_DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=600.0)  # Cloud Tasks' default dispatch deadline


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return _DEFAULT_TIMEOUT if seconds == _DEFAULT_TIMEOUT.total else aiohttp.ClientTimeout(total=seconds)


class Pusher(Protocol):
    """Delivers attempts; the dispatcher needs nothing else from HTTP."""

    async def push(self, request: OutboundRequest) -> AttemptOutcome:
        """Send ``request`` and report the status, a timeout, or why it could not be sent."""
        ...

    async def close(self) -> None: ...


class GuardedResolver(AbstractResolver):
    """Resolves host names, refusing any whose addresses the target policy denies (so a name
    cannot smuggle a task to a metadata server; checked on every fresh lookup)."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._policy = policy

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._policy.check_address(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


class AiohttpPusher:
    """One shared aiohttp session with unlimited pooled connections (concurrency is capped per
    queue by the dispatcher, not here)."""

    def __init__(self, targets: TargetPolicy | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._targets = targets or TargetPolicy()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, ttl_dns_cache=300, resolver=GuardedResolver(self._targets)
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=_DEFAULT_TIMEOUT,
                auto_decompress=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
            )
        return self._session

    async def push(self, request: OutboundRequest) -> AttemptOutcome:
        try:
            async with self._client().request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body or None,
                timeout=_timeout(request.timeout_s),
                allow_redirects=request.follow_redirects,
                max_redirects=_MAX_REDIRECTS,
            ) as response:
                await response.read()
                return AttemptOutcome(http_status=response.status)
        except TimeoutError:
            return AttemptOutcome(failure=AttemptFailure.TIMEOUT)
        except aiohttp.TooManyRedirects as error:
            return AttemptOutcome(http_status=error.history[-1].status if error.history else 310)
        except (aiohttp.ClientError, OSError, ValueError) as error:
            return AttemptOutcome(
                failure=AttemptFailure.UNREACHABLE, detail=str(error) or type(error).__name__
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
