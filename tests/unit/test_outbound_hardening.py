"""Outbound hardening, in process: hosts judged as the HTTP client sees them, the address of every
connection checked (IP literals, Unicode digits, redirects), hop-by-hop headers never forwarded,
unsendable headers refused, bounded reads of answers, asynchronous bounded DNS, Retry-After."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given, settings
from hypothesis import strategies as st

from opentasks.clock import FakeClock
from opentasks.domain.attempt import after_attempt, claim, parse_retry_after
from opentasks.domain.headers import check_headers, reserved_http_header, sendable_headers
from opentasks.domain.limits import LATEST_TIME, MAX_RETRY_DELAY, Limits
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.outbound import OutboundRequest, outbound_request
from opentasks.domain.queue import HttpTarget, Queue, RetryConfig, resolve_queue
from opentasks.domain.routing import AppEngineRoutes, apply_http_target
from opentasks.domain.target_policy import TargetDenied, TargetPolicy
from opentasks.domain.task import (
    AppEngineHttpRequest,
    AttemptFailure,
    AttemptOutcome,
    HttpRequest,
    Task,
    TaskDraft,
    new_task,
)
from opentasks.errors import InvalidArgument
from opentasks.service.pusher import AiohttpPusher, GuardedResolver, Http1Pusher

QUEUE = QueueName.parse("projects/p/locations/l/queues/q")
NOW = datetime(2030, 1, 1, tzinfo=UTC)
METADATA_LOOKALIKES = [
    "１６９.２５４.１６９.２５４",  # full-width digits  # noqa: RUF001
    "169。254。169。254",  # ideographic full stops
    "169．254．169．254",  # full-width full stops  # noqa: RUF001
    "169｡254｡169｡254",  # half-width ideographic full stops
    "\U0001d7cf\U0001d7d4\U0001d7d7.254.169.254",  # mathematical bold digits
    "①⑥⑨.254.169.254",  # circled digits
    "2852039166",  # one number, as inet_aton reads it
    "0xa9.0xfe.0xa9.0xfe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "[::ffff:169.254.169.254]",
    "[::169.254.169.254]",  # IPv4-compatible
    "[2002:a9fe:a9fe::1]",  # 6to4
    "[64:ff9b::a9fe:a9fe]",  # NAT64
    "[::ffff:0:a9fe:a9fe]",  # IPv4-translated
    "ＭＥＴＡＤＡＴＡ.ＧＯＯＧ",  # noqa: RUF001
    "metadata.google.internal.",
]

PusherType = type[AiohttpPusher] | type[Http1Pusher]


@pytest.fixture(params=[AiohttpPusher, Http1Pusher], ids=["aiohttp", "http1"])
def pusher_type(request: pytest.FixtureRequest) -> PusherType:
    """Every behaviour holds for both the general client and the lean HTTP/1.1 one."""
    return request.param  # type: ignore[no-any-return]


# -- the target policy, as the HTTP client sees hosts ---------------------------------------------


@pytest.mark.parametrize("host", METADATA_LOOKALIKES)
def test_hosts_that_the_client_maps_to_a_denied_target_are_refused(host: str) -> None:
    policy = TargetPolicy()
    with pytest.raises(TargetDenied, match="is not allowed on this server"):
        policy.check_url(f"http://{host}/computeMetadata/v1/")
    with pytest.raises(TargetDenied, match="is not allowed on this server"):
        policy.check_host(host, "HttpTarget.uriOverride.host")


def test_the_refusal_shows_the_host_as_written_and_as_it_would_be_sent() -> None:
    with pytest.raises(TargetDenied, match=r"１６９\.254\.169\.254 \(169\.254\.169\.254\) is not allowed"):  # noqa: RUF001
        TargetPolicy().check_url("http://１６９.254.169.254/")  # noqa: RUF001


@pytest.mark.parametrize(
    "url",
    [
        "http://bücher.example/",
        "https://例え.jp/",
        "http://127.0.0.1:8080/",
        "http://12345/",
        "http://[::1]:8080/",
        "http://[64:ff9b::808:808]/",
        "http://[2001:db8::1]/",
    ],
)
def test_international_names_and_other_addresses_stay_allowed(url: str) -> None:
    TargetPolicy().check_url(url)


@pytest.mark.parametrize("host", ["0.0.0.0", "0", "0.1.2.3", "[::]", "[::ffff:0.0.0.0]"])
def test_addresses_that_connect_to_this_machine_are_judged_as_loopback(host: str) -> None:
    policy = TargetPolicy(deny=("127.0.0.0/8", "::1"))
    with pytest.raises(TargetDenied, match="is not allowed"):
        policy.check_url(f"http://{host}:8080/")
    if host != "0":  # a connection's address is always written out in full
        with pytest.raises(TargetDenied, match="is not allowed"):
            policy.check_address("h", host.strip("[]"))
    TargetPolicy().check_url(f"http://{host}:8080/")  # loopback is allowed by default


def test_name_entries_match_the_normalised_name() -> None:
    policy = TargetPolicy(deny=("*.corp.example",))
    for host in ("api.corp.example", "API.CORP.EXAMPLE", "ａｐｉ.ｃｏｒｐ.ｅｘａｍｐｌｅ"):  # noqa: RUF001
        with pytest.raises(TargetDenied):
            policy.check_url(f"http://{host}/")


def test_hosts_the_client_cannot_send_to_are_refused() -> None:
    with pytest.raises(TargetDenied, match="does not name a host"):
        TargetPolicy().check_url("http://meta\u200bdata.goog/")


# -- headers ------------------------------------------------------------------------------------

HOP_BY_HOP = {
    "Transfer-Encoding": "chunked",
    "Connection": "keep-alive, X-CloudTasks-TaskName",
    "Keep-Alive": "timeout=5",
    "Upgrade": "websocket",
    "TE": "trailers",
    "Trailer": "X-Forged",
    "Expect": "100-continue",
    "Proxy-Authorization": "Basic eDp5",
    "Proxy-Connection": "keep-alive",
}


@pytest.mark.parametrize("name", [*HOP_BY_HOP, "Host", "Content-Length"])
def test_hop_by_hop_and_framing_headers_are_reserved(name: str) -> None:
    assert reserved_http_header(name)
    assert reserved_http_header(name.upper())
    assert sendable_headers({name: "x", "X-Kept": "1"}) == {"X-Kept": "1"}


def test_hop_by_hop_headers_are_dropped_from_http_and_app_engine_tasks() -> None:
    headers = {**HOP_BY_HOP, "X-Kept": "1"}
    http = new_task(
        TaskDraft(http_request=HttpRequest("http://h/", headers=headers)), QUEUE, NOW, "a", Limits()
    )
    assert http.http_request is not None
    assert set(http.http_request.headers) == {"X-Kept", "User-Agent"}
    engine = new_task(
        TaskDraft(app_engine_http_request=AppEngineHttpRequest(headers=headers, body=b"x")),
        QUEUE,
        NOW,
        "b",
        Limits(),
    )
    assert engine.app_engine_http_request is not None
    assert {k.lower() for k in engine.app_engine_http_request.headers} == {
        "x-kept",
        "user-agent",
        "content-length",
        "content-type",
    }


def test_queue_header_overrides_cannot_set_hop_by_hop_headers() -> None:
    target = HttpTarget(header_overrides=(*HOP_BY_HOP.items(), ("X-Kept", "2")))
    request = apply_http_target(HttpRequest("http://h/", headers={"X-Kept": "1"}), target)
    assert request.headers == {"X-Kept": "2"}


def test_rows_stored_with_hop_by_hop_headers_send_none() -> None:
    """Rows stored before the rule carry them; the request built for an attempt drops them."""
    stored = {**HOP_BY_HOP, "Host": "evil", "Content-Length": "0", "X-Kept": "1"}
    http = Task(TaskName(QUEUE, "a"), NOW, NOW, http_request=HttpRequest("http://h/", headers=stored))
    engine = Task(
        TaskName(QUEUE, "b"), NOW, NOW, app_engine_http_request=AppEngineHttpRequest(headers=stored)
    )
    for task in (http, engine):
        request = outbound_request(claim(task, NOW), Queue(QUEUE), app_engine=AppEngineRoutes())
        assert not {k.lower() for k in request.headers} & {
            k.lower() for k in [*HOP_BY_HOP, "Host", "Content-Length"]
        }
        assert request.headers["X-Kept"] == "1"


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-A": "a\x00b"}, "X-A"),
        ({"X-B": "a\x01b"}, "X-B"),
        ({"X-C": "a\x7fb"}, "X-C"),
        ({"X-D": "a\rb"}, "X-D"),
        ({"X-E": "\udcff"}, "X-E"),
        ({"X(E)": "1"}, "X(E)"),
        ({"Xé": "1"}, "Xé"),
        ({"X:F": "1"}, "X:F"),
        ({"": "1"}, '""'),
        ({"X G": "1"}, "X G"),
    ],
)
def test_headers_that_can_never_be_sent_are_refused_by_name(headers: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_headers(headers)
    assert named.strip('"') in str(caught.value)
    draft = TaskDraft(http_request=HttpRequest("http://h/", headers=headers))
    with pytest.raises(InvalidArgument):
        new_task(draft, QUEUE, NOW, "a", Limits())
    with pytest.raises(InvalidArgument):
        resolve_queue(Queue(QUEUE, http_target=HttpTarget(header_overrides=tuple(headers.items()))), Limits())


def test_tabs_and_non_ascii_values_are_accepted() -> None:
    check_headers({"X-A": "a\tb", "X-B": "café ☃", "X-C": "!#$%&'*+-.^_`|~"})


# -- Retry-After --------------------------------------------------------------------------------

RETRY = RetryConfig(
    max_attempts=10,
    min_backoff=timedelta(seconds=1),
    max_backoff=timedelta(minutes=5),
    max_doublings=3,
)


def failed(task: Task, status: int, retry_after: timedelta | None, clock: FakeClock) -> Task:
    claimed = claim(task, clock.now())
    after = after_attempt(
        claimed, AttemptOutcome(http_status=status, retry_after=retry_after), clock.now(), RETRY
    )
    assert after is not None
    return after


@pytest.mark.parametrize(
    ("status", "retry_after", "delay"),
    [
        (503, timedelta(seconds=30), timedelta(seconds=30)),  # longer than the backoff: wins
        (429, timedelta(seconds=30), timedelta(seconds=30)),
        (503, timedelta(0), timedelta(seconds=1)),  # shorter: the backoff stays
        (503, timedelta(days=3650), timedelta(minutes=5)),  # capped at max_backoff
        (500, timedelta(seconds=30), timedelta(seconds=1)),  # only 429 and 503 count
        (503, None, timedelta(seconds=1)),
    ],
)
def test_retry_after_is_a_lower_bound_capped_at_max_backoff(
    status: int, retry_after: timedelta | None, delay: timedelta
) -> None:
    clock = FakeClock(NOW)
    task = Task(TaskName(QUEUE, "a"), NOW, NOW, http_request=HttpRequest("http://h/"))
    after = failed(task, status, retry_after, clock)
    assert after.schedule_time == clock.now() + delay
    assert after.previous_outcome == AttemptOutcome(http_status=status)  # nothing extra stored


def test_app_engine_targets_consider_retry_after_on_503_only() -> None:
    clock = FakeClock(NOW)
    task = Task(TaskName(QUEUE, "a"), NOW, NOW, app_engine_http_request=AppEngineHttpRequest())
    assert failed(task, 429, timedelta(seconds=30), clock).schedule_time == NOW + timedelta(seconds=1)
    assert failed(task, 503, timedelta(seconds=30), clock).schedule_time == NOW + timedelta(seconds=30)


def test_retry_after_never_passes_the_retry_ceiling_nor_overflows() -> None:
    forever = RetryConfig(max_attempts=10, max_backoff=timedelta(days=3_650_000), max_doublings=3)
    task = Task(TaskName(QUEUE, "a"), NOW, NOW, http_request=HttpRequest("http://h/"))
    outcome = AttemptOutcome(
        http_status=503, retry_after=parse_retry_after("Fri, 31 Dec 2500 00:00:00 GMT", NOW)
    )
    after = after_attempt(claim(task, NOW), outcome, NOW, forever)
    assert after is not None and after.schedule_time == NOW + timedelta(seconds=10**9)  # parse's cap
    assert timedelta(seconds=10**9) < MAX_RETRY_DELAY
    late = datetime(9999, 12, 1, tzinfo=UTC)
    outcome = AttemptOutcome(
        http_status=503, retry_after=parse_retry_after("Fri, 31 Dec 9999 23:59:59 -1200", late)
    )
    after = after_attempt(claim(task, late), outcome, late, forever)
    assert after is not None and after.schedule_time == LATEST_TIME


def test_retry_after_forms() -> None:
    assert parse_retry_after("120", NOW) == timedelta(seconds=120)
    assert parse_retry_after("Tue, 01 Jan 2030 00:01:00 GMT", NOW) == timedelta(minutes=1)
    assert parse_retry_after("Mon, 31 Dec 2029 00:00:00 GMT", NOW) == timedelta(0)
    assert parse_retry_after("9" * 40, NOW) == timedelta(seconds=10**9)
    for junk in (None, "", "soon", "-5", "1.5", "١٢"):
        assert parse_retry_after(junk, NOW) is None


# -- the pusher against real sockets ------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler, host: str = "127.0.0.1") -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def metadata() -> AsyncIterator[tuple[int, list[str]]]:
    """A stand-in metadata server on 127.0.0.2, which the tests' policy denies."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="secret")

    runner, port = await serve(answer, "127.0.0.2")
    yield port, seen
    await runner.cleanup()


DENY_METADATA = TargetPolicy(deny=("127.0.0.2/32",))


def post(
    url: str, headers: dict[str, str] | None = None, body: bytes = b"", **fields: Any
) -> OutboundRequest:
    return OutboundRequest("POST", url, headers or {}, body, 5.0, **fields)


@pytest.mark.parametrize("host", ["127.0.0.2", "１２７.０.０.２", "127。0。0。2", "[::ffff:127.0.0.2]"])  # noqa: RUF001
async def test_connections_to_denied_addresses_are_refused_however_the_host_is_written(
    metadata: tuple[int, list[str]], host: str, pusher_type: PusherType
) -> None:
    port, seen = metadata
    pusher = pusher_type(DENY_METADATA)
    try:
        with pytest.raises(TargetDenied, match=r"(127\.0\.0\.2|::ffff:7f00:2) is not allowed"):
            await pusher.push(post(f"http://{host}:{port}/latest/meta-data"))
    finally:
        await pusher.close()
    assert seen == []


async def test_every_redirect_hop_is_checked(
    metadata: tuple[int, list[str]], pusher_type: PusherType
) -> None:
    port, seen = metadata

    async def redirect(request: web.Request) -> web.Response:
        target = request.query["to"]
        raise web.HTTPFound(target)

    runner, redirector = await serve(redirect)
    pusher = pusher_type(DENY_METADATA)
    try:
        for target in (f"http://127.0.0.2:{port}/", f"http://１２７.0.0.2:{port}/"):  # noqa: RUF001
            url = f"http://127.0.0.1:{redirector}/?to={target}"
            with pytest.raises(TargetDenied, match=r"127\.0\.0\.2"):
                await pusher.push(post(url, follow_redirects=True))
            assert (await pusher.push(post(url))).http_status == 302  # not followed by default
        name_policy = pusher_type(TargetPolicy(deny=("*.denied.test",)))
        try:
            with pytest.raises(TargetDenied, match=r"x\.denied\.test"):
                await name_policy.push(
                    post(f"http://127.0.0.1:{redirector}/?to=http://x.denied.test/", follow_redirects=True)
                )
        finally:
            await name_policy.close()
    finally:
        await pusher.close()
        await runner.cleanup()
    assert seen == []


async def test_redirect_hops_must_match_the_allow_list_too(
    metadata: tuple[int, list[str]], pusher_type: PusherType
) -> None:
    port, seen = metadata

    async def redirect(request: web.Request) -> web.Response:
        if "to" not in request.query:
            return web.Response(text="landed")
        raise web.HTTPFound(request.query["to"])

    runner, redirector = await serve(redirect)
    pusher = pusher_type(TargetPolicy(allow=("127.0.0.1",)))
    try:
        for target in (
            f"http://127.0.0.2:{port}/",
            f"http://[::ffff:127.0.0.2]:{port}/",
            f"http://0x7f.2:{port}/",
        ):
            url = f"http://127.0.0.1:{redirector}/?to={target}"
            with pytest.raises(TargetDenied, match="a redirect of the task's URL"):
                await pusher.push(post(url, follow_redirects=True))
        ok = await pusher.push(post(f"http://127.0.0.1:{redirector}/?to=/", follow_redirects=True))
        assert ok.http_status == 200  # hops within the allow list are followed
    finally:
        await pusher.close()
        await runner.cleanup()
    assert seen == []


async def test_allowed_addresses_still_work(metadata: tuple[int, list[str]], pusher_type: PusherType) -> None:
    port, seen = metadata
    pusher = pusher_type(TargetPolicy(deny=()))
    try:
        assert (await pusher.push(post(f"http://１２７.0.0.2:{port}/x"))).http_status == 200  # noqa: RUF001
    finally:
        await pusher.close()
    assert seen == ["/x"]


class RawHandler:
    """A naive HTTP/1.1 server that honours Transfer-Encoding over Content-Length, as a backend
    open to request smuggling would; it records every request it parses on a connection."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("utf-8", "replace")
                line, *fields = head.split("\r\n")[:-2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
                body = await self._body(reader, headers)
                self.requests.append((line, headers, body))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed.set()

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).strip() or b"0", 16):
                body += await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
            return body
        return await reader.readexactly(int(headers.get("content-length", "0")))


SMUGGLED = b"0\r\n\r\nPOST /smuggled HTTP/1.1\r\nX-CloudTasks-TaskName: forged\r\nContent-Length: 0\r\n\r\n"


async def test_a_task_cannot_smuggle_a_second_request(pusher_type: PusherType) -> None:
    raw = RawHandler()
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pusher = pusher_type()
    # A row stored with hop-by-hop headers, sent the way the dispatcher sends it.
    stored = HttpRequest(f"http://127.0.0.1:{port}/", headers={**HOP_BY_HOP, "X-Kept": "1"}, body=SMUGGLED)
    task = Task(TaskName(QUEUE, "s"), NOW, NOW, http_request=stored)
    try:
        request = outbound_request(claim(task, NOW), Queue(QUEUE), app_engine=AppEngineRoutes())
        outcome = await pusher.push(request)
        assert outcome.http_status == 200
    finally:
        await pusher.close()
        await asyncio.wait_for(raw.closed.wait(), 5)
        server.close()
        await server.wait_closed()
    [(line, headers, body)] = raw.requests
    assert line == "POST / HTTP/1.1"
    assert body == SMUGGLED
    assert headers["x-kept"] == "1"
    assert not set(headers) & {k.lower() for k in HOP_BY_HOP}


async def test_non_ascii_header_values_are_delivered_as_utf8(pusher_type: PusherType) -> None:
    raw = RawHandler()
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pusher = pusher_type()
    try:
        assert (await pusher.push(post(f"http://127.0.0.1:{port}/", {"X-Name": "café ☃"}))).http_status == 200
    finally:
        await pusher.close()
        server.close()
        await server.wait_closed()
    assert raw.requests[0][1]["x-name"] == "café ☃"


async def test_endless_answers_are_cut_short_and_short_ones_reuse_the_connection(
    pusher_type: PusherType,
) -> None:
    sent = {"endless": 0}
    peers: list[int] = []
    disconnected = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        if request.path == "/short":
            return web.Response(status=201, text="ok" * 1000)
        response = web.StreamResponse(status=200 if request.path == "/endless" else 202)
        if request.path == "/declared":
            response.content_length = 10**12
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while True:
                await response.write(chunk)
                sent["endless"] += len(chunk)
        except (ConnectionError, RuntimeError):
            disconnected.set()
        return response

    runner, port = await serve(answer)
    pusher = pusher_type()
    try:
        started = time.monotonic()
        outcome = await asyncio.wait_for(pusher.push(post(f"http://127.0.0.1:{port}/endless")), 10)
        assert outcome.http_status == 200
        assert time.monotonic() - started < 3  # not held until the 5 s deadline
        await asyncio.wait_for(disconnected.wait(), 10)
        assert (
            await asyncio.wait_for(pusher.push(post(f"http://127.0.0.1:{port}/declared")), 10)
        ).http_status == 202
        assert (await pusher.push(post(f"http://127.0.0.1:{port}/short"))).http_status == 201
        assert (await pusher.push(post(f"http://127.0.0.1:{port}/short"))).http_status == 201
        assert peers[-1] == peers[-2]  # read to its end: the connection went back to the pool
    finally:
        await pusher.close()
        await runner.cleanup()


async def test_the_pusher_reads_retry_after_on_429_and_503(pusher_type: PusherType) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(
            status=int(request.query["status"]), headers={"Retry-After": request.query["after"]}
        )

    runner, port = await serve(answer)
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    pusher = pusher_type(clock=clock)
    try:
        base = f"http://127.0.0.1:{port}/"
        assert (await pusher.push(post(f"{base}?status=429&after=7"))).retry_after == timedelta(seconds=7)
        date = "Tue, 01 Jan 2030 00:02:00 GMT"
        assert (await pusher.push(post(f"{base}?status=503&after={date}"))).retry_after == timedelta(
            minutes=2
        )
        assert (await pusher.push(post(f"{base}?status=500&after=7"))).retry_after is None
        assert (await pusher.push(post(f"{base}?status=503&after=soon"))).retry_after is None
    finally:
        await pusher.close()
        await runner.cleanup()


# -- DNS ----------------------------------------------------------------------------------------


@pytest.fixture
def silent_dns() -> Any:
    """A name server on a loopback UDP port that never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


async def test_lookups_that_never_end_hold_up_nothing_else(silent_dns: str, pusher_type: PusherType) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response()

    runner, port = await serve(answer)
    pusher = pusher_type(nameservers=[silent_dns], dns_timeout_s=4.0)
    try:
        stuck = [asyncio.ensure_future(pusher.push(post(f"http://never-{i}.example/"))) for i in range(40)]
        for host in ("127.0.0.1", "localhost"):  # /etc/hosts names resolve without the name server
            assert (await asyncio.wait_for(pusher.push(post(f"http://{host}:{port}/")), 5)).http_status == 200
        assert not any(job.done() for job in stuck)  # delivered while every lookup still hung
        outcomes = await asyncio.wait_for(asyncio.gather(*stuck), 10)  # each lookup is bounded
        assert {o.failure for o in outcomes} == {AttemptFailure.UNREACHABLE}
        assert "never-0.example" in outcomes[0].detail
    finally:
        await pusher.close()
        await runner.cleanup()


class CountingResolver(AbstractResolver):
    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses
        self.lookups: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        self.lookups.append(host)
        await self.gate.wait()
        return [
            ResolveResult(
                hostname=host, host=self.addresses[host], port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


async def test_the_dns_cache_is_a_bounded_lru_with_a_ttl() -> None:
    clock = FakeClock()
    inner = CountingResolver({"a.test": "10.0.0.1", "b.test": "10.0.0.2", "c.test": "10.0.0.3"})
    resolver = GuardedResolver(TargetPolicy(), cache_size=2, cache_ttl_s=60, clock=clock, inner=inner)
    for host in ("a.test", "b.test", "a.test", "c.test", "a.test", "b.test"):
        await resolver.resolve(host, 80)
    assert inner.lookups == ["a.test", "b.test", "c.test", "b.test"]  # b was the least recent
    clock.advance(61)
    await resolver.resolve("a.test", 80)
    assert inner.lookups[-1] == "a.test"


async def test_concurrent_lookups_of_one_name_share_a_query_and_the_guard_checks_every_answer() -> None:
    inner = CountingResolver({"a.test": "10.0.0.1", "meta.test": "169.254.169.254"})
    inner.gate.clear()
    resolver = GuardedResolver(TargetPolicy(), inner=inner)
    waiting = [asyncio.ensure_future(resolver.resolve("a.test", 80)) for _ in range(10)]
    await asyncio.sleep(0)
    inner.gate.set()
    await asyncio.gather(*waiting)
    assert inner.lookups == ["a.test"]
    with pytest.raises(TargetDenied, match=r"meta\.test \(169\.254\.169\.254\)"):
        await resolver.resolve("meta.test", 80)
    with pytest.raises(TargetDenied, match=r"metadata\.goog"):
        await resolver.resolve("metadata.goog", 80)  # a denied name is never looked up
    assert "metadata.goog" not in inner.lookups


# -- every spelling of an address is judged as that address (generated) ---------------------------

_DIGITS = (0x30, 0xFF10, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6)  # ASCII, full-width, math
_SEPARATORS = (".", "。", "．", "｡")  # noqa: RUF001 - the separators IDNA reads as dots


@st.composite
def spelled_ipv4(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """``address`` as a URL host, in one of the forms a client or resolver reads as it."""
    octets = address.packed
    form = draw(st.sampled_from(["dotted", "integer", "short", "mapped"]))
    if form == "integer":
        return draw(st.sampled_from([str(int(address)), hex(int(address)), "0" + oct(int(address))[2:]]))
    if form == "short":  # a.b.c with the last part holding two octets
        return f"{octets[0]}.{octets[1]}.{octets[2] * 256 + octets[3]}"
    if form == "mapped":
        return f"[::ffff:{address}]"
    parts = [draw(_spelled_octet(octet)) for octet in octets]
    separator = draw(st.sampled_from(_SEPARATORS))
    return separator.join(parts) + draw(st.sampled_from(["", "."]))


@st.composite
def _spelled_octet(draw: st.DrawFn, octet: int) -> str:
    kind = draw(st.sampled_from(["decimal", "hex", "octal"]))
    if kind == "hex":
        return hex(octet)
    if kind == "octal":
        return "0" + oct(octet)[2:]
    zero = draw(st.sampled_from(_DIGITS))
    return "".join(chr(zero + int(digit)) for digit in str(octet))


_DENIED = ipaddress.IPv4Network("169.254.0.0/16")
_ALLOWED = ipaddress.IPv4Network("8.8.0.0/16")


@settings(max_examples=300, deadline=None)
@given(data=st.data(), value=st.integers(int(_DENIED[0]), int(_DENIED[-1])))
def test_every_spelling_of_a_denied_address_is_refused(data: st.DataObject, value: int) -> None:
    host = data.draw(spelled_ipv4(ipaddress.IPv4Address(value)))
    with pytest.raises(TargetDenied):
        TargetPolicy().check_url(f"http://{host}:80/x")


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    value=st.integers(int(ipaddress.IPv4Address("8.8.0.0")), int(ipaddress.IPv4Address("8.8.255.255"))),
)
def test_every_spelling_of_an_allowed_address_stays_allowed(data: st.DataObject, value: int) -> None:
    host = data.draw(spelled_ipv4(ipaddress.IPv4Address(value)))
    TargetPolicy().check_url(f"http://{host}:80/x")  # nothing denied by accident of spelling


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@settings(max_examples=500, deadline=None)
@given(name=st.text(max_size=12), value=st.text(max_size=12))
def test_a_header_is_accepted_exactly_when_it_can_be_sent(name: str, value: str) -> None:
    sendable = bool(_TOKEN.fullmatch(name)) and not any(
        (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in value
    )
    try:
        check_headers({name: value})
    except InvalidArgument:
        assert not sendable
    else:
        assert sendable
        value.encode("utf-8")  # what the client sends
