"""Outbound HTTP: sends one attempt's request and reports how it ended.

Where a request may go is enforced at four points, all with the server's :class:`TargetPolicy`:

* the dispatcher checks the task's URL (its host as the HTTP client normalises it);
* a client middleware checks the URL of every redirect hop the same way (allow list included);
* :class:`GuardedResolver` checks every host name looked up (the task's, or a redirect's) and
  every address it resolves to;
* :class:`ConnectGuard` (aiohttp's ``socket_factory``) checks the address of every connection
  actually opened: after IDNA/Unicode normalisation and DNS, for IP-literal hosts (which aiohttp
  never passes to the resolver) and on every redirect hop. A refusal there fails the attempt
  with :class:`TargetDenied`, which the dispatcher records as a REFUSED outcome.

DNS lookups are asynchronous (c-ares through aiodns), bounded in time and cached in a small LRU,
so a queue whose host names never resolve cannot hold up another queue's deliveries.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import ipaddress
import logging
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

import aiohappyeyeballs
import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from opentasks.clock import Clock, SystemClock
from opentasks.domain.attempt import RETRY_AFTER_STATUSES, parse_retry_after
from opentasks.domain.outbound import OutboundRequest
from opentasks.domain.target_policy import TargetDenied, TargetPolicy
from opentasks.domain.task import AttemptFailure, AttemptOutcome
from opentasks.service.http1 import (
    MAX_HEADER_BYTES,
    Answer,
    ConnectionClosed,
    ConnectionPool,
    Deadlines,
    Exchange,
    Origin,
    Target,
    UnsupportedUrl,
    request_head,
    target,
)

_log = logging.getLogger(__name__)

# aiohttp adds these unless told not to; Cloud Tasks sends a task's headers as stored.
_NO_AUTO_HEADERS = ("User-Agent", "Content-Type", "Accept", "Accept-Encoding")
_MAX_REDIRECTS = 5
_DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=600.0)  # Cloud Tasks' default dispatch deadline
MAX_RESPONSE_BYTES = 64 * 1024  # of a handler's answer read (and discarded) to reuse the connection
DNS_TIMEOUT_S = 5.0
DNS_CACHE_SIZE = 1024
DNS_CACHE_TTL_S = 60.0
HAPPY_EYEBALLS_DELAY_S = 0.25  # before racing the next address of a name (aiohttp's, RFC 8305's)

# The refusals ConnectGuard made during the current push (a list per push, seen by the tasks
# aiohttp's happy-eyeballs race starts, since they copy the context).
_refusals: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("refusals", default=None)


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return _DEFAULT_TIMEOUT if seconds == _DEFAULT_TIMEOUT.total else aiohttp.ClientTimeout(total=seconds)


async def _guarded(sending: Awaitable[AttemptOutcome]) -> AttemptOutcome:
    """The outcome of ``sending``: a connection or protocol error is an UNREACHABLE outcome,
    unless the target policy refused a connection on the way (then TargetDenied)."""
    refusals: list[str] = []
    token = _refusals.set(refusals)
    try:
        return await sending
    except (aiohttp.ClientError, OSError, ValueError) as error:
        if refusals:
            raise TargetDenied(refusals[0]) from None
        return AttemptOutcome(failure=AttemptFailure.UNREACHABLE, detail=str(error) or type(error).__name__)
    finally:
        _refusals.reset(token)


class Pusher(Protocol):
    """Delivers attempts; the dispatcher needs nothing else from HTTP."""

    async def push(self, request: OutboundRequest) -> AttemptOutcome:
        """Send ``request`` and report the status, a timeout, or why it could not be sent.

        Raises TargetDenied when the target policy refuses a host or an address on the way.
        """
        ...

    async def close(self) -> None: ...


class DeniedConnection(OSError):
    """A connection the target policy refuses (an OSError, so aiohttp treats it as one more
    address that could not be connected to, and tries the others)."""


class ConnectGuard:
    """aiohttp's ``socket_factory``: sees the address of each connection before it is opened."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, address = addr_info
        try:
            self._policy.check_address(str(address[0]), str(address[0]))
        except TargetDenied as denied:
            refusals = _refusals.get()
            if refusals is not None:
                refusals.append(str(denied))
            raise DeniedConnection(errno.EACCES, str(denied)) from None
        return socket.socket(family=family, type=type_, proto=proto)


class GuardedResolver(AbstractResolver):
    """Resolves host names, refusing any name the target policy denies and any whose addresses
    it denies (so a name cannot smuggle a task to a metadata server).

    Lookups go through c-ares (aiodns), which reads /etc/hosts, so they use no thread; a name
    DNS does not know is then asked of the system's resolver (mDNS, NSS modules); each lookup is
    bounded by ``timeout_s``; concurrent lookups of one name share one query; answers are cached
    for ``cache_ttl_s`` in an LRU of ``cache_size`` names. ``nameservers`` (``"ip"`` or
    ``"ip:port"``) replace the system's; ``inner`` replaces c-ares altogether (tests).
    """

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        nameservers: Sequence[str] | None = None,
        timeout_s: float = DNS_TIMEOUT_S,
        cache_size: int = DNS_CACHE_SIZE,
        cache_ttl_s: float = DNS_CACHE_TTL_S,
        clock: Clock | None = None,
        inner: AbstractResolver | None = None,
    ) -> None:
        self._policy = policy
        self._timeout_s = timeout_s
        self._inner = inner or _async_resolver(nameservers, timeout_s)
        # The system's resolver (getaddrinfo in threads) answers what DNS does not, unless
        # tests replace the resolver or name servers are given.
        self._system = None if inner is not None or nameservers else aiohttp.ThreadedResolver()
        self._cache: OrderedDict[tuple[str, int], tuple[float, list[ResolveResult]]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock or SystemClock()
        self._pending: dict[tuple[str, int], asyncio.Future[list[ResolveResult]]] = {}

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        self._policy.check_host(host, "the task's URL")
        results = await self._cached_or_looked_up(host, int(family))
        for result in results:
            self._policy.check_address(host, result["host"])
        return [{**result, "port": port} for result in results]

    async def _cached_or_looked_up(self, host: str, family: int) -> list[ResolveResult]:
        key = (host, family)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self._clock.monotonic():
            self._cache.move_to_end(key)
            return cached[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(key))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._lookup_done(key, done))
        return await asyncio.shield(pending)

    async def _lookup(self, key: tuple[str, int]) -> list[ResolveResult]:
        host, family = key
        try:
            results = await self._bounded(self._inner, host, family)
        except TimeoutError:
            raise OSError(f"DNS lookup of {host} timed out after {self._timeout_s:g} s") from None
        except OSError:
            if self._system is None:
                raise
            # Not in DNS: names that only the system's resolver knows (mDNS ".local", NSS
            # modules) are looked up there, still bounded in time.
            results = await self._bounded(self._system, host, family)
        self._cache[key] = (self._clock.monotonic() + self._cache_ttl_s, results)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return results

    async def _bounded(self, resolver: AbstractResolver, host: str, family: int) -> list[ResolveResult]:
        return await asyncio.wait_for(
            resolver.resolve(host, 0, socket.AddressFamily(family)), self._timeout_s
        )

    def _lookup_done(self, key: tuple[str, int], done: asyncio.Future[list[ResolveResult]]) -> None:
        self._pending.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved, in case every caller stopped waiting

    async def close(self) -> None:
        for pending in list(self._pending.values()):
            pending.cancel()
        await self._inner.close()
        if self._system is not None:
            await self._system.close()


def _async_resolver(nameservers: Sequence[str] | None, timeout_s: float) -> AbstractResolver:
    try:
        # c-ares waits `timeout` on its first try and twice that on the second, so it gives up
        # (and forgets the query) at 3/4 of timeout_s; wait_for in GuardedResolver is the backstop.
        per_try = max(timeout_s / 4, 0.05)
        return aiohttp.AsyncResolver(
            nameservers=list(nameservers) if nameservers else None, timeout=per_try, tries=2
        )
    except Exception as error:  # aiodns/c-ares missing or unusable: lookups fall back to threads
        _log.warning("asynchronous DNS is unavailable (%s); using the system resolver in threads", error)
        return aiohttp.ThreadedResolver()


class AiohttpPusher:
    """One shared aiohttp session with unlimited pooled connections (concurrency is capped per
    queue by the dispatcher, not here).

    ``nameservers`` and ``dns_timeout_s`` configure the resolver (the system's name servers and
    5 s by default); at most ``max_response_bytes`` of an answer are read: a longer one has its
    connection dropped rather than read.
    """

    def __init__(
        self,
        targets: TargetPolicy | None = None,
        *,
        nameservers: Sequence[str] | None = None,
        dns_timeout_s: float = DNS_TIMEOUT_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        clock: Clock | None = None,
        keep_response_bytes: int | None = None,
    ) -> None:
        self._keep = keep_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._targets = targets or TargetPolicy()
        self._nameservers = nameservers
        self._dns_timeout_s = dns_timeout_s
        self._max_response_bytes = max_response_bytes
        self._clock = clock or SystemClock()
        self._hop_checks = (self._check_hop,)

    async def _check_hop(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        self._targets.check_url(str(request.url), "a redirect of the task's URL")
        return await handler(request)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._resolver = resolver = GuardedResolver(
                self._targets, nameservers=self._nameservers, timeout_s=self._dns_timeout_s, clock=self._clock
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0,
                    use_dns_cache=False,  # aiohttp's cache is unbounded; GuardedResolver keeps an LRU
                    resolver=resolver,
                    socket_factory=ConnectGuard(self._targets),
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # a proxy from the environment would hide the real target
                timeout=_DEFAULT_TIMEOUT,
                auto_decompress=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
            )
        return self._session

    async def push(self, request: OutboundRequest) -> AttemptOutcome:
        return await _guarded(self._send(request))

    async def _send(self, request: OutboundRequest) -> AttemptOutcome:
        try:
            async with self._client().request(
                request.method,
                request.url,
                headers=request.headers,  # outbound_request left out hop-by-hop and framing ones
                data=request.body or None,
                timeout=_timeout(request.timeout_s),
                allow_redirects=request.follow_redirects,
                max_redirects=_MAX_REDIRECTS,
                # Each hop's URL is judged like the first one, allow list included (the
                # connection check alone cannot tell an IP literal from a resolved name).
                middlewares=self._hop_checks if request.follow_redirects else None,
            ) as response:
                kept = await self._discard_body(response)
                return AttemptOutcome(
                    http_status=response.status,
                    retry_after=self._retry_after(response),
                    response_headers=self._kept_headers(response),
                    response_body=kept,
                )
        except TimeoutError:
            return AttemptOutcome(failure=AttemptFailure.TIMEOUT)
        except aiohttp.TooManyRedirects as error:
            return AttemptOutcome(http_status=error.history[-1].status if error.history else 310)

    async def _discard_body(self, response: aiohttp.ClientResponse) -> bytes:
        """Read the answer to its end if it is short (so the connection can be reused), else
        drop the connection: a handler streaming an endless body must not hold the attempt or
        grow the server. Returns the start of the body if asked to keep it."""
        left, kept = self._max_response_bytes, bytearray()
        if response.content_length is not None and response.content_length > left:
            response.close()
            return b""
        while left >= 0:
            chunk = await response.content.readany()
            if self._keep and len(kept) < self._keep:
                kept += chunk[: self._keep - len(kept)]
            if not chunk:
                return bytes(kept)  # at its end: the connection goes back to the pool
            left -= len(chunk)
        response.close()
        return bytes(kept)

    def _kept_headers(self, response: aiohttp.ClientResponse) -> tuple[tuple[str, str], ...]:
        if self._keep is None:
            return ()
        kept, size = [], 0
        for name, value in response.raw_headers:
            size += len(name) + len(value)
            if size > MAX_HEADER_BYTES:
                break
            kept.append((name.decode("latin-1"), value.decode("latin-1")))
        return tuple(kept)

    def _retry_after(self, response: aiohttp.ClientResponse) -> timedelta | None:
        if response.status not in RETRY_AFTER_STATUSES:  # spares the 2xx path a header lookup
            return None
        return parse_retry_after(response.headers.get("Retry-After"), self._clock.now())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:  # aiohttp closes only the resolvers it made itself
            await self._resolver.close()
            self._resolver = None


class Http1Pusher:
    """Sends attempts with the lean HTTP/1.1 client of :mod:`opentasks.service.http1`: pooled
    keep-alive connections, each opened through the same resolver and :class:`ConnectGuard` as
    the general client's. Requests that follow redirects, and URLs with credentials in them, go
    to an :class:`AiohttpPusher` instead.

    A request sent on a reused connection that the server closed before answering a single byte
    (it timed the idle connection out as the request left) is sent once more on a new one.
    ``keep_response_bytes`` (None: nothing) keeps each answer's headers and the start of its
    body with the outcome, for the attempt's history.
    ``tls`` replaces the default context (system CAs, host names checked) for https targets.
    """

    def __init__(
        self,
        targets: TargetPolicy | None = None,
        *,
        nameservers: Sequence[str] | None = None,
        dns_timeout_s: float = DNS_TIMEOUT_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        clock: Clock | None = None,
        tls: ssl.SSLContext | None = None,
        keep_response_bytes: int | None = None,
    ) -> None:
        self._targets = targets or TargetPolicy()
        self._keep = keep_response_bytes
        self._clock = clock or SystemClock()
        self._max_body = max_response_bytes
        self._resolver = GuardedResolver(
            self._targets, nameservers=nameservers, timeout_s=dns_timeout_s, clock=self._clock
        )
        self._guard = ConnectGuard(self._targets)
        self._tls = tls or ssl.create_default_context()  # the system's CAs, as aiohttp's
        self._pool = ConnectionPool()
        self._deadlines = Deadlines()
        self._general = AiohttpPusher(
            self._targets,
            nameservers=nameservers,
            dns_timeout_s=dns_timeout_s,
            max_response_bytes=max_response_bytes,
            clock=self._clock,
            keep_response_bytes=keep_response_bytes,
        )

    async def push(self, request: OutboundRequest) -> AttemptOutcome:
        if request.follow_redirects:
            return await self._general.push(request)
        try:
            where = target(request.url)
        except UnsupportedUrl:
            return await self._general.push(request)
        except ValueError as error:
            return AttemptOutcome(failure=AttemptFailure.UNREACHABLE, detail=str(error))
        return await _guarded(self._send(request, where))

    async def _send(self, request: OutboundRequest, where: Target) -> AttemptOutcome:
        head = request_head(request.method, where, request.headers, request.body)
        head_only, origin = request.method == "HEAD", where.origin
        deadline = asyncio.get_running_loop().time() + request.timeout_s
        try:
            connection = self._pool.idle(origin)
            reused = connection is not None
            if connection is None:
                connection = await self._connect_by(origin, deadline)
            try:
                answer = await self._exchange(connection, head, request.body, head_only, deadline)
            except ConnectionClosed:
                if not (reused and connection.answered_nothing):
                    raise
                connection = await self._connect_by(origin, deadline)
                answer = await self._exchange(connection, head, request.body, head_only, deadline)
        except TimeoutError:
            return AttemptOutcome(failure=AttemptFailure.TIMEOUT)
        return AttemptOutcome(
            http_status=answer.status,
            retry_after=self._retry_after(answer),
            response_headers=answer.headers,
            response_body=answer.body,
        )

    async def _exchange(
        self, connection: Exchange, head: bytes, body: bytes, head_only: bool, deadline: float
    ) -> Answer:
        try:
            answer = await connection.exchange(
                head, body, head_only=head_only, keep=self._keep, deadline=(self._deadlines, deadline)
            )
        except BaseException:
            connection.abort()
            raise
        self._pool.release(connection)
        return answer

    async def _connect_by(self, origin: Origin, deadline: float) -> Exchange:
        """A new connection, opened before ``deadline`` (a time of the loop's clock) or not at
        all (``TimeoutError``)."""
        async with asyncio.timeout_at(deadline):
            return await self._connect(origin)

    async def _connect(self, origin: Origin) -> Exchange:
        try:
            return await self._open(origin)
        except OSError as error:  # said with the host, as the general client says it
            raise OSError(f"cannot connect to {origin.host}:{origin.port}: {error}") from error

    async def _open(self, origin: Origin) -> Exchange:
        addresses = await self._addresses(origin)
        sock = await aiohappyeyeballs.start_connection(
            addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S, interleave=1, socket_factory=self._guard
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self._tls if origin.scheme == "https" else None
            _, connection = await asyncio.get_running_loop().create_connection(
                self._new_exchange(origin), sock=sock, ssl=tls, server_hostname=origin.host if tls else None
            )
        except BaseException:
            sock.close()
            raise
        return connection

    def _new_exchange(self, origin: Origin) -> Callable[[], Exchange]:
        return lambda: Exchange(origin, self._max_body)

    async def _addresses(self, origin: Origin) -> list[tuple[Any, ...]]:
        """The addresses to try: an IP literal as it is (ConnectGuard judges it), a name as the
        guarded resolver answers."""
        try:
            literal = ipaddress.ip_address(origin.host)
        except ValueError:
            found = await self._resolver.resolve(origin.host, origin.port, socket.AF_UNSPEC)
            return [_address_info(result["family"], result["host"], origin.port) for result in found]
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [_address_info(family, origin.host, origin.port)]

    def _retry_after(self, answer: Answer) -> timedelta | None:
        if answer.status not in RETRY_AFTER_STATUSES:
            return None
        return parse_retry_after(answer.retry_after, self._clock.now())

    async def close(self) -> None:
        self._pool.close()
        self._deadlines.close()
        await self._general.close()
        await self._resolver.close()


def _address_info(family: int, host: str, port: int) -> tuple[Any, ...]:
    address = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)
