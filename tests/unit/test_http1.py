"""How answers end, seen by both pushers: a scripted HTTP/1.1 server on loopback answers in every
framing a handler may use (lengths, chunks, until-close, no body, informational answers) and
misbehaves (closes early, idles out, talks garbage, never answers). Both the general client and
the lean one must report the same outcome and reuse connections only when that is safe."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opentasks.domain.outbound import OutboundRequest
from opentasks.domain.task import AttemptFailure, AttemptOutcome
from opentasks.service.http1 import Answer, ConnectionPool, Deadlines, Exchange, Origin, request_head, target
from opentasks.service.pusher import AiohttpPusher, Http1Pusher

PusherType = type[AiohttpPusher] | type[Http1Pusher]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture(params=[AiohttpPusher, Http1Pusher], ids=["aiohttp", "http1"])
def pusher_type(request: pytest.FixtureRequest) -> PusherType:
    return request.param  # type: ignore[no-any-return]


@dataclass
class Seen:
    """One request as the server parsed it, and the connection (its number) it came on."""

    line: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int


@dataclass
class Script:
    """Answers by path: bytes to write, then whether to close; ``None`` never answers."""

    answers: dict[str, tuple[bytes | None, bool]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        served = 0
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                line, *fields = head.split("\r\n")[:-2]
                headers = [(k.strip(), v.strip()) for k, _, v in (f.partition(":") for f in fields)]
                length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                body = await reader.readexactly(length)
                self.seen.append(Seen(line, headers, body, number))
                self.arrived.set()
                served += 1
                path = line.split()[1].split("?")[0]
                if path == "/drop-if-reused" and served > 1:
                    break  # as a server closing an idle connection just as a request arrives
                answer, close = self.answers.get(path, (OK, False))
                if answer is None:
                    await asyncio.Event().wait()  # never answers
                    return
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield script, f"http://127.0.0.1:{port}"
    server.close()


def post(url: str, body: bytes = b"", timeout_s: float = 5.0, method: str = "POST") -> OutboundRequest:
    return OutboundRequest(method, url, {"X-Test": "1"}, body, timeout_s)


async def push_all(pusher_type: PusherType, *requests: OutboundRequest) -> list[AttemptOutcome]:
    pusher = pusher_type()
    try:
        return [await asyncio.wait_for(pusher.push(r), 10) for r in requests]
    finally:
        await pusher.close()


FRAMINGS = {
    "/length": b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello",
    "/chunked": b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "/empty": b"HTTP/1.1 204 No Content\r\n\r\n",
    "/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
}


async def test_every_framing_ends_the_answer_and_keeps_the_connection(
    scripted: tuple[Script, str], pusher_type: PusherType
) -> None:
    script, base = scripted
    script.answers = {path: (answer, False) for path, answer in FRAMINGS.items()}
    outcomes = await push_all(pusher_type, *(post(base + path) for path in FRAMINGS for _ in range(2)))
    assert [o.http_status for o in outcomes] == [201, 201, 202, 202, 204, 204, 200, 200]
    assert script.connections == 1


async def test_a_head_answer_has_no_body_whatever_its_length_says(
    scripted: tuple[Script, str], pusher_type: PusherType
) -> None:
    script, base = scripted
    script.answers = {"/head": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", False)}
    outcomes = await push_all(pusher_type, post(base + "/head", method="HEAD"), post(base + "/next"))
    assert [o.http_status for o in outcomes] == [200, 200]
    assert [s.line.split()[0] for s in script.seen] == ["HEAD", "POST"]


async def test_answers_that_end_with_the_connection(
    scripted: tuple[Script, str], pusher_type: PusherType
) -> None:
    script, base = scripted
    script.answers = {
        "/until-close": (b"HTTP/1.1 200 OK\r\n\r\nthe body runs to the end", True),
        "/http10": (b"HTTP/1.0 203 OK\r\nContent-Length: 0\r\n\r\n", False),
        "/close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", True),
    }
    paths = ["/until-close", "/http10", "/close", "/after"]
    outcomes = await push_all(pusher_type, *(post(base + p) for p in paths))
    assert [o.http_status for o in outcomes] == [200, 203, 200, 200]
    assert script.connections == 4  # none of them was reused


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "cut short"),
        (b"", "no answer"),
        (b"SMTP ready\r\n\r\n", "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk"),
    ],
)
async def test_broken_answers_are_unreachable(
    scripted: tuple[Script, str], pusher_type: PusherType, answer: bytes, why: str
) -> None:
    script, base = scripted
    script.answers = {"/broken": (answer, True)}
    broken, after = await push_all(pusher_type, post(base + "/broken"), post(base + "/after"))
    assert broken.failure == AttemptFailure.UNREACHABLE, why
    assert broken.detail
    assert after.http_status == 200


async def test_a_deadline_ends_the_attempt_and_its_connection(
    scripted: tuple[Script, str], pusher_type: PusherType
) -> None:
    script, base = scripted
    script.answers = {"/hang": (None, False)}
    timed_out, after = await push_all(pusher_type, post(base + "/hang", timeout_s=0.3), post(base + "/after"))
    assert timed_out.failure == AttemptFailure.TIMEOUT
    assert after.http_status == 200
    assert [s.connection for s in script.seen] == [1, 2]


async def test_a_connection_the_server_idled_out_is_not_used_again(
    scripted: tuple[Script, str], pusher_type: PusherType
) -> None:
    script, base = scripted
    script.answers = {"/then-idle-out": (OK, True)}  # keep-alive said, then closed
    outcomes = await push_all(pusher_type, post(base + "/then-idle-out"), post(base + "/after"))
    assert [o.http_status for o in outcomes] == [200, 200]


async def test_a_request_lost_on_a_reused_connection_is_sent_again_on_a_new_one(
    scripted: tuple[Script, str],
) -> None:
    script, base = scripted
    outcomes = await push_all(Http1Pusher, post(base + "/first"), post(base + "/drop-if-reused"))
    assert [o.http_status for o in outcomes] == [200, 200]
    assert [(s.line.split()[1], s.connection) for s in script.seen] == [
        ("/first", 1),
        ("/drop-if-reused", 1),
        ("/drop-if-reused", 2),
    ]


async def test_a_request_lost_on_a_new_connection_is_not_sent_again(scripted: tuple[Script, str]) -> None:
    script, base = scripted
    script.answers = {"/lost": (b"", True)}
    [outcome] = await push_all(Http1Pusher, post(base + "/lost"))
    assert outcome.failure == AttemptFailure.UNREACHABLE
    assert "closed the connection before answering" in outcome.detail
    assert len(script.seen) == 1


async def test_the_request_is_framed_like_the_general_clients(scripted: tuple[Script, str]) -> None:
    script, base = scripted
    url = base + "/a%20b/c?q=1&r=%C3%A9"
    requests = [
        OutboundRequest("POST", url, {"X-B": "2", "x-a": "café"}, b"body", 5),
        OutboundRequest("POST", url, {}, b"", 5),
        OutboundRequest("GET", url, {}, b"", 5),
        OutboundRequest("DELETE", url, {}, b"", 5),
    ]
    for pusher_type in (AiohttpPusher, Http1Pusher):
        await push_all(pusher_type, *requests)
    general, lean = script.seen[:4], script.seen[4:]
    for one, other in zip(general, lean, strict=True):
        assert (one.line, one.headers, one.body) == (other.line, other.headers, other.body)
    assert general[0].line == "POST /a%20b/c?q=1&r=%C3%A9 HTTP/1.1"
    assert general[0].headers[0][0] == "Host"
    assert [h for h, _ in general[2].headers] == ["Host"]  # a GET without a body has no length


async def test_headers_with_line_breaks_are_never_sent(
    scripted: tuple[Script, str], pusher_type: PusherType
) -> None:
    script, base = scripted
    bad = OutboundRequest("POST", base + "/", {"X-Evil": "a\r\nX-Injected: 1"}, b"", 5)
    [outcome] = await push_all(pusher_type, bad)
    assert outcome.failure == AttemptFailure.UNREACHABLE
    assert script.seen == []


def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and localhost signed by a fresh CA, and
    a client context that trusts that CA."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


async def test_https_targets_are_verified(tmp_path: Path) -> None:
    server_tls, client_tls = tls_pair(tmp_path)
    script = Script()
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = Http1Pusher(tls=client_tls)
        try:
            for host in ("127.0.0.1", "localhost"):
                outcome = await asyncio.wait_for(trusting.push(post(f"https://{host}:{port}/x")), 10)
                assert outcome.http_status == 200
        finally:
            await trusting.close()
        assert script.connections == 2  # one per host name: connections never cross origins
        for pusher_type in (AiohttpPusher, Http1Pusher):
            [untrusted] = await push_all(pusher_type, post(f"https://127.0.0.1:{port}/x"))
            assert untrusted.failure == AttemptFailure.UNREACHABLE
            assert "certificate verify failed" in untrusted.detail
        [plain] = await push_all(Http1Pusher, post(f"https://127.0.0.1:{port}/x".replace("https", "http")))
        assert plain.failure == AttemptFailure.UNREACHABLE  # a TLS server does not speak plain HTTP
    finally:
        server.close()


def test_urls_are_taken_apart_once_the_way_aiohttp_does() -> None:
    where = target("http://Example.COM:8080/p?q")
    assert where.origin == Origin("http", "example.com", 8080)
    assert (where.path, where.host_header) == ("/p?q", "example.com:8080")
    assert target("https://[::1]/").host_header == "[::1]"
    assert target("http://h").path == "/"
    head = request_head("PUT", target("http://h/x"), {"A": "1"}, b"")
    assert head == b"PUT /x HTTP/1.1\r\nHost: h\r\nA: 1\r\nContent-Length: 0\r\n\r\n"


async def test_the_pool_closes_connections_left_idle() -> None:
    opened: list[Exchange] = []

    closed = asyncio.Event()

    class Transport:
        def close(self) -> None:
            closed.set()

    async def connect(origin: Origin) -> Exchange:
        connection = Exchange(origin, 100)
        connection.connection_made(Transport())  # type: ignore[arg-type]
        opened.append(connection)
        return connection

    pool = ConnectionPool(idle_timeout_s=0.05)
    origin = Origin("http", "h", 80)
    assert pool.idle(origin) is None
    first = await connect(origin)
    first.reusable = True
    pool.release(first)
    again = pool.idle(origin)
    assert again is first
    again.reusable = True
    pool.release(again)
    assert pool.idle_connections() == 1
    await asyncio.wait_for(closed.wait(), 5)
    assert first.closed
    assert pool.idle_connections() == 0
    pool.close()


async def test_answers_are_kept_for_history_only_when_asked(
    scripted: tuple[Script, str], pusher_type: PusherType
) -> None:
    script, base = scripted
    answer = b"HTTP/1.1 500 Oops\r\nX-Why: db down\r\nContent-Length: 11\r\n\r\nhello world"
    script.answers = {"/x": (answer, False)}
    keeping = pusher_type(keep_response_bytes=5)
    headers_only = pusher_type(keep_response_bytes=0)  # --history-response-bytes 0
    plain = pusher_type()
    try:
        kept = await keeping.push(post(base + "/x"))
        assert ("X-Why", "db down") in kept.response_headers
        assert kept.response_body == b"hello"
        bodiless = await headers_only.push(post(base + "/x"))
        assert ("X-Why", "db down") in bodiless.response_headers and bodiless.response_body == b""
        forgotten = await plain.push(post(base + "/x"))
        assert (forgotten.http_status, forgotten.response_headers, forgotten.response_body) == (500, (), b"")
    finally:
        await keeping.close()
        await headers_only.close()
        await plain.close()


async def test_endless_headers_are_refused(scripted: tuple[Script, str], pusher_type: PusherType) -> None:
    script, base = scripted
    script.answers = {"/big": (b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 200_000, False)}
    big, after = await push_all(pusher_type, post(base + "/big"), post(base + "/after"))
    assert big.failure == AttemptFailure.UNREACHABLE
    assert after.http_status == 200


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
    ],
    ids=["close-after-204", "two-answers-to-one-request"],
)
async def test_a_connection_out_of_step_or_closing_is_not_reused(
    scripted: tuple[Script, str], answer: bytes
) -> None:
    script, base = scripted
    script.answers = {"/odd": (answer, False)}
    first, after = await push_all(Http1Pusher, post(base + "/odd"), post(base + "/after"))
    assert first.http_status in (204, 500)
    assert after.http_status == 200
    assert [s.connection for s in script.seen] == [1, 2]


class _Waiting:
    """An exchange as Deadlines sees it: told when its answer timed out."""

    def __init__(self) -> None:
        self.timed_out: list[asyncio.Future[Answer]] = []

    def time_out(self, answer: asyncio.Future[Answer]) -> None:
        self.timed_out.append(answer)
        answer.set_exception(TimeoutError())


async def test_deadlines_end_only_the_exchanges_still_waiting_when_theirs_passes() -> None:
    loop = asyncio.get_running_loop()
    deadlines, exchange = Deadlines(), _Waiting()
    later, answered, overdue = (loop.create_future() for _ in range(3))
    deadlines.add(loop.time() + 3600, exchange, later)  # armed first, for an hour
    deadlines.add(loop.time() - 1, exchange, answered)  # a sooner one arms the timer again
    deadlines.add(loop.time() - 1, exchange, overdue)
    answered.set_result(Answer(200, None))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(overdue, 5)
    assert exchange.timed_out == [overdue]
    assert not later.done()
    assert deadlines.entries() == 1  # the answered and the timed-out ones are gone
    deadlines.close()
    assert isinstance(later.exception(), TimeoutError)


async def test_answered_exchanges_leave_no_pile_of_deadlines() -> None:
    loop = asyncio.get_running_loop()
    deadlines, exchange = Deadlines(), _Waiting()
    waiting = [loop.create_future() for _ in range(100)]
    for answer in waiting:
        deadlines.add(loop.time() + 3600, exchange, answer)
    for _ in range(50_000):  # answered long before their deadline, as fast handlers answer
        answer = loop.create_future()
        deadlines.add(loop.time() + 3600, exchange, answer)
        answer.set_result(Answer(200, None))
    assert deadlines.entries() <= 2 * len(waiting) + 1024
    assert not any(answer.done() for answer in waiting)
    deadlines.close()  # the pusher closes: what still waits ends now
    assert all(isinstance(answer.exception(), TimeoutError) for answer in waiting)
