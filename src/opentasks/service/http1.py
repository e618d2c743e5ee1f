"""A lean HTTP/1.1 client for attempts: one request per keep-alive connection at a time, from
a pool of idle connections per origin.

An attempt needs little of HTTP: send a method, a path, headers and a body, then learn the
answer's status (and ``Retry-After``) and read a bounded part of its body so the connection can
be reused. A general client spends most of a fast handler's round trip on things an attempt
never uses (cookie jars, tracing hooks, header multidicts, response objects, payload
registries, per-request timers), so this module does only that: it writes one buffer per
request and parses answers with ``httptools`` (llhttp). Redirects are not followed here; the
pusher hands requests that follow them to aiohttp.

Where connections go is decided by the caller, who opens them (applying the target policy to
every address); the pool only reuses what it was given back.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple

import httptools
from yarl import URL

MAX_HEADER_BYTES = 8192  # of an answer's headers kept when asked to keep them
MAX_HEAD_BYTES = 65536  # of an answer's status line and headers read at all
IDLE_TIMEOUT_S = 15.0  # how long an unused connection is kept (aiohttp's keep-alive default)
_TIMER_SLACK_S = 0.001  # how early the deadline timer may fire (see Deadlines._fire)
# Methods that carry no Content-Length when their body is empty (as aiohttp sends them).
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class Origin(NamedTuple):
    """Where a connection goes: ``("http" | "https", host, port)``, host as the URL normalises it."""

    scheme: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart once for every request sent to it."""

    origin: Origin
    path: str  # the request target, percent-encoded as it goes on the wire
    host_header: str


class UnsupportedUrl(ValueError):
    """A URL this client does not send (another scheme, or credentials in it)."""


@functools.lru_cache(maxsize=1024)
def target(url: str) -> Target:
    """``url`` taken apart the way aiohttp takes it (yarl's normalisation, so the target policy
    judges the host this client connects to)."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise UnsupportedUrl(f"{url!r} is not an absolute http(s) URL")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UnsupportedUrl("URLs with credentials are sent by the general client")
    port = parsed.port
    assert port is not None, "http(s) URLs always have a port"
    host_header = parsed.host_port_subcomponent
    assert host_header is not None
    return Target(Origin(parsed.scheme, parsed.raw_host, port), parsed.raw_path_qs or "/", host_header)


def request_head(method: str, target: Target, headers: dict[str, str], body: bytes) -> bytes:
    """The request line and headers: ``Host`` first, then ``headers`` as given, then
    ``Content-Length`` (for a body, or an empty one where the method expects a body)."""
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"the header {name!r} holds a line break or colon and cannot be sent")
        lines.append(f"{name}: {value}\r\n")
    if body or method not in _BODYLESS_METHODS:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


class Answer(NamedTuple):
    """What an attempt learns of a response: its status, ``Retry-After``, and (when asked to
    keep them) its headers and the start of its body."""

    status: int
    retry_after: str | None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class ConnectionClosed(ConnectionError):
    """The peer closed the connection before its answer ended."""


class Exchange(asyncio.Protocol):
    """One connection: sends a request, parses the answer, and tells whether it can be reused.

    Reads at most ``max_body`` bytes of an answer's body; a longer answer ends the exchange at
    once and the connection is dropped rather than read. With ``keep`` (bytes of body, 0 or
    more) an exchange also keeps the answer's headers (up to ``MAX_HEADER_BYTES``) and the start
    of its body.
    """

    def __init__(self, origin: Origin, max_body: int) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = False  # true only between two exchanges on a healthy connection
        self._max_body = max_body
        self._keep: int | None = None
        self._parser: Any = None
        self._answer: asyncio.Future[Answer] | None = None
        self._head_only = False
        self._reset()
        self._closed = False

    def _reset(self) -> None:
        self._status = 0
        self._retry_after: str | None = None
        self._headers: list[tuple[str, str]] | None = None if self._keep is None else []
        self._header_bytes = 0
        self._head_bytes = 0
        self._body = bytearray()
        self._body_left = self._max_body
        self._framed = False  # the answer says where its body ends (length or chunks)
        self._got_bytes = False
        self._headers_done = False

    @property
    def closed(self) -> bool:
        return self._closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are no subclasses

    def exchange(
        self,
        head: bytes,
        body: bytes,
        *,
        head_only: bool,
        keep: int | None = None,
        deadline: tuple[Deadlines, float] | None = None,
    ) -> asyncio.Future[Answer]:
        """Send one request; the future ends with the answer or the error that ended it
        (``TimeoutError`` once ``deadline``, a time of the loop's clock, has passed)."""
        assert self.transport is not None and self._answer is None
        self.reusable = False
        self._keep = keep
        self._reset()
        self._head_only = head_only
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self._answer = asyncio.get_running_loop().create_future()
        if deadline is not None:
            deadline[0].add(deadline[1], self, self._answer)
        if len(body) <= 16384:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        return self._answer

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # nothing asked: a peer talking out of turn is not reused
            self.close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(reusable=False)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"the answer is not valid HTTP/1.1: {error}"))
        if self._answer is not None and not self._headers_done:
            # Still in the status line and headers (which the parser buffers): bounded, as a
            # general client bounds them too (aiohttp: 8 KiB a line).
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(
                    ConnectionError(f"the answer's status line and headers exceed {MAX_HEAD_BYTES} bytes")
                )

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._answer is None:  # a second answer to one request: the connection is out of step
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lower in (b"content-length", b"transfer-encoding"):
            self._framed = True
        if self._headers is not None:
            self._header_bytes += len(name) + len(value)
            if self._header_bytes <= MAX_HEADER_BYTES:
                self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if 100 <= self._status < 200 and self._status != 101:
            return  # informational: the real answer follows
        self._headers_done = True
        if self._head_only or self._status in (204, 304):
            # No body follows, whatever the headers say; the parser cannot be told, so it is
            # replaced for the next exchange.
            keep_alive = self._keep_alive()
            self._parser = None
            self._finish(reusable=keep_alive)

    def on_body(self, body: bytes) -> None:
        if self._keep and len(self._body) < self._keep:
            self._body += body[: self._keep - len(self._body)]
        self._body_left -= len(body)
        if self._body_left < 0 and self._answer is not None:
            self._finish(reusable=False)

    def on_message_complete(self) -> None:
        if not self._headers_done:  # an informational answer ended
            self._reset()
            return
        if self._answer is not None:
            self._finish(reusable=self._keep_alive())

    def _keep_alive(self) -> bool:
        return self._parser is None or bool(self._parser.should_keep_alive())

    def _finish(self, *, reusable: bool) -> None:
        answer, self._answer = self._answer, None
        if answer is None:
            return
        self.reusable = reusable and not self._closed
        if not self.reusable:
            self.close()
        if not answer.done():
            kept = () if self._headers is None else tuple(self._headers)
            answer.set_result(Answer(self._status, self._retry_after, kept, bytes(self._body)))

    def _fail(self, error: Exception) -> None:
        answer, self._answer = self._answer, None
        self.close()
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.reusable = False
        if self._answer is None:
            return
        if self._headers_done and not self._framed:
            self._finish(reusable=False)  # a body that ends with the connection has ended
        else:
            self._fail(ConnectionClosed(self._closed_message(exc)))

    def _closed_message(self, exc: Exception | None) -> str:
        where = "in the middle of its answer" if self._got_bytes else "before answering"
        return f"the server closed the connection {where}" + (f" ({exc})" if exc else "")

    @property
    def answered_nothing(self) -> bool:
        """No byte of an answer arrived: the request may be sent again on a new connection."""
        return not self._got_bytes

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    def time_out(self, answer: asyncio.Future[Answer]) -> None:
        """End the exchange whose answer is ``answer``, if it is still waiting, with
        ``TimeoutError`` (the caller drops the connection)."""
        if self._answer is answer:
            self._answer = None
            if not answer.done():
                answer.set_exception(TimeoutError())

    def abort(self) -> None:
        """Drop the connection at once (a timed-out or cancelled exchange)."""
        self._answer = None
        self.reusable = False
        if self.transport is not None:
            self._closed = True
            self.transport.abort()


class Deadlines:
    """Ends exchanges that outlive their deadline, with one timer for all of them.

    A timer per request (``asyncio.timeout``) costs a timer handle made, armed and cancelled per
    attempt, a tenth of a fast handler's round trip. Here a deadline is an entry in a heap; the
    one timer is armed again only for a sooner deadline, and entries whose answer came are
    dropped when they reach the top or when the heap has doubled since it was last cleaned.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Exchange, asyncio.Future[Answer]]] = []
        self._order = itertools.count()  # ties never compare exchanges
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")
        self._compact_at = 1024

    def add(self, when: float, exchange: Exchange, answer: asyncio.Future[Answer]) -> None:
        heapq.heappush(self._heap, (when, next(self._order), exchange, answer))
        if len(self._heap) >= self._compact_at:  # as often as the heap doubles: O(1) per entry
            self._heap = [entry for entry in self._heap if not entry[3].done()]
            heapq.heapify(self._heap)
            self._compact_at = 2 * len(self._heap) + 1024
        if when < self._armed_for:
            self._arm(when)

    def entries(self) -> int:
        """Deadlines held, of exchanges answered or not (for tests)."""
        return len(self._heap)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_for = None, float("inf")
        # uvloop rounds timers to the millisecond and may fire up to half of one early: an
        # entry due within a millisecond is due now, or the timer would be armed again at once.
        now = asyncio.get_running_loop().time() + _TIMER_SLACK_S
        heap = self._heap
        while heap and (heap[0][0] <= now or heap[0][3].done()):
            _, _, exchange, answer = heapq.heappop(heap)
            if not answer.done():
                exchange.time_out(answer)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        """Stop the timer; exchanges still waiting end with ``TimeoutError`` now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        heap, self._heap = self._heap, []
        self._armed_for = float("inf")
        for _, _, exchange, answer in heap:
            if not answer.done():
                exchange.time_out(answer)


class ConnectionPool:
    """Idle keep-alive connections by origin, the most recently used first; connections unused
    for ``idle_timeout_s`` are closed. There is no cap here: the dispatcher caps attempts per
    queue and per node."""

    def __init__(self, *, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self._idle: dict[Origin, list[Exchange]] = {}
        self._idle_timeout_s = idle_timeout_s
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def idle(self, origin: Origin) -> Exchange | None:
        """An idle open connection to ``origin``, taken out of the pool; None if there is none."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    def release(self, connection: Exchange) -> None:
        """Give back a connection after its exchange (it is kept only if it can be reused)."""
        if not connection.reusable or self._closed:
            connection.close()
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self._idle.setdefault(connection.origin, []).append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._idle_timeout_s, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        oldest_kept = loop.time() - self._idle_timeout_s
        for origin, idle in list(self._idle.items()):
            kept = [c for c in idle if not c.closed and c.idle_since > oldest_kept]
            for connection in idle:
                if connection.closed or connection.idle_since <= oldest_kept:
                    connection.close()
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if self._idle:
            self._sweeper = loop.call_later(self._idle_timeout_s / 2, self._sweep)

    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
