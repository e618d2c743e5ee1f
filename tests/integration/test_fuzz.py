"""Property-based fuzzing of the gRPC and REST APIs against one real server process.

The property, for any generated request: the server answers with a client-error status (gRPC:
not INTERNAL, UNKNOWN or another server-side code; REST: a 4xx with Google's JSON error envelope)
carrying a non-empty message, or it succeeds; and it still answers a simple call afterwards. The
last test checks that the server logged no traceback while being fuzzed.

Generated tasks cannot leave the machine: the server only dispatches to 127.0.0.1
(``--dispatch-allow``), the URLs point to a closed port there, and App Engine tasks go to that
same closed port.

Profiles (tests/conftest.py): ``ci`` by default, ``HYPOTHESIS_PROFILE=long`` for a deeper run.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import random
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.cloud import tasks_v2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from opentasks.testing import ServerProcess, free_port
from tests.integration import fuzz_strategies as fs

pytestmark = pytest.mark.integration

SERVICE = "google.cloud.tasks.v2.CloudTasks"
TIMEOUT_S = 10.0
# Every status that blames the request (or reports success). INTERNAL, UNKNOWN, UNAVAILABLE,
# DEADLINE_EXCEEDED (the server hung), UNIMPLEMENTED (these RPCs exist), CANCELLED and DATA_LOSS fail.
CLIENT_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
HTTP_BODY_LIMIT = 8 * 2**20
CLOSED_PORT = free_port()  # nothing listens there: every generated task URL points to it
RPC_REQUESTS = fs.rpc_requests(CLOSED_PORT)
REST_CALLS = fs.rest_calls(CLOSED_PORT)


def scaled(factor: float) -> int:
    """Examples for one test: the profile's max_examples times ``factor``."""
    return max(1, int(settings().max_examples * factor))


# ---------------------------------------------------------------- the server


class Fuzzed:
    """The server under test, with the helpers the properties need."""

    def __init__(self, server: ServerProcess, log_path: Path, closed_port: int) -> None:
        self.server = server
        self.log_path = log_path
        self.closed_port = closed_port
        self.channel = grpc.insecure_channel(
            server.address,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self.client = server.client()
        self._log_offset = 0

    def new_log(self) -> str:
        """What the server logged since the last call."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read()
        self._log_offset += len(text)
        return text.decode("utf-8", "replace")

    def log_excerpt(self) -> str:
        new = self.new_log()
        lines = [line for line in new.splitlines() if line.strip()]
        return "\n".join(lines[-25:]) if lines else "(nothing logged)"

    def raw(self, method: str, body: bytes) -> tuple[grpc.StatusCode, str]:
        """Call ``method`` of the CloudTasks service (or a full /service/method) with raw bytes."""
        path = method if method.startswith("/") else f"/{SERVICE}/{method}"
        stub = self.channel.unary_unary(path)  # no serializers: bytes in, bytes out
        try:
            stub(body, timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return grpc.StatusCode.OK, ""

    def answers_simple_call(self, what: str) -> None:
        """After each example: the first page of ListQueues (fuzzed RPCs may delete any queue)."""
        try:
            self.client.list_queues(
                request={"parent": fs.PARENT, "page_size": 1}, retry=None, timeout=TIMEOUT_S
            )
        except core_exceptions.GoogleAPICallError as error:
            raise AssertionError(
                f"after {what}\n -> ListQueues failed: {error!r}\n--- server log:\n{self.log_excerpt()}"
            ) from None

    def still_answers(self) -> None:
        """ListQueues, every page."""
        list(self.client.list_queues(parent=fs.PARENT, timeout=TIMEOUT_S))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    folder = tmp_path_factory.mktemp("fuzz")
    closed_port = CLOSED_PORT
    log_path = folder / "server.log"
    server = ServerProcess(
        f"sqlite:///{folder}/opentasks.db",
        "--dispatch-allow",
        "127.0.0.1/32",
        "--app-engine-url",
        f"http://127.0.0.1:{closed_port}",
        log_path=log_path,
    )
    with server:
        target = Fuzzed(server, log_path, closed_port)
        client = target.client
        running, paused = (f"{fs.PARENT}/queues/{q}" for q in fs.TASK_QUEUES)
        client.create_queue(
            parent=fs.PARENT,
            queue={
                "name": running,
                "rate_limits": {"max_dispatches_per_second": 5, "max_concurrent_dispatches": 2},
                "retry_config": {"max_attempts": 2, "min_backoff": {"seconds": 5}},
            },
        )
        client.create_queue(parent=fs.PARENT, queue={"name": paused})
        client.pause_queue(name=paused)
        for queue_id in fs.UPDATE_QUEUES:
            client.create_queue(parent=fs.PARENT, queue={"name": f"{fs.PARENT}/queues/{queue_id}"})
        target.new_log()
        yield target
        target.channel.close()


# ---------------------------------------------------------------- the properties


def _describe(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# gRPC's client core ends a call whose trailers are too large with RESOURCE_EXHAUSTED and a message
# of its own: the server's status (often an error message echoing a long input) never arrives.
_TRAILERS_TOO_LARGE = "metadata size exceeds"


# gRPC refuses a request whose own metadata passes its soft limit (8 KiB) the same way, and that
# answer is right: the official client copies the resource name into x-goog-request-params.
_REQUEST_METADATA_SOFT_LIMIT = 8 * 1024


def routing_header_bytes(rpc: str, message: Any) -> int:
    """The size of the routing header the official client sends for ``message``."""
    value = message.queue.name if rpc == "UpdateQueue" else message.parent
    return len(quote(value, safe=""))


def check_grpc(
    fuzzed: Fuzzed, what: str, code: grpc.StatusCode, message: str, request_metadata_bytes: int = 0
) -> None:
    oversized_request = request_metadata_bytes > _REQUEST_METADATA_SOFT_LIMIT
    if (
        code in CLIENT_CODES
        and (code is grpc.StatusCode.OK or message.strip())
        and (_TRAILERS_TOO_LARGE not in message or oversized_request)
    ):
        fuzzed.answers_simple_call(what)
        return
    raise AssertionError(
        f"{what}\n -> gRPC {code.name}: {message!r}\n--- server log:\n{fuzzed.log_excerpt()}"
    )


def call_client(client: tasks_v2.CloudTasksClient, rpc: str, request: Any) -> None:
    """One RPC through the official client (no retries); the first page only for List RPCs."""
    method = {
        "CreateQueue": client.create_queue,
        "UpdateQueue": client.update_queue,
        "CreateTask": client.create_task,
        "ListTasks": client.list_tasks,
        "ListQueues": client.list_queues,
    }[rpc]
    method(request=request, retry=None, timeout=TIMEOUT_S)


# Inputs that once broke the property, tried first on every run.
LONG_PARENT = ("ListQueues", {"parent": "projects/" + "u" * 9000})  # echoed in trailers over 16 KiB


@settings(max_examples=scaled(1.5))
@given(request=RPC_REQUESTS)
@example(request=LONG_PARENT)
def test_grpc_official_client(fuzzed: Fuzzed, request: tuple[str, dict[str, Any]]) -> None:
    rpc, spec = request
    message = fs.build(rpc, spec)
    wrapped = fs.REQUEST_CLASSES[rpc].wrap(message)  # proto-plus view of the raw message, unchecked
    sent = routing_header_bytes(rpc, message)
    try:
        call_client(fuzzed.client, rpc, wrapped)
    except core_exceptions.GoogleAPICallError as error:
        code = error.grpc_status_code or grpc.StatusCode.UNKNOWN
        check_grpc(fuzzed, f"client {rpc} {_describe(spec)}", code, error.message, sent)
    except grpc.RpcError as error:  # a code the client library does not map
        check_grpc(fuzzed, f"client {rpc} {_describe(spec)}", error.code(), error.details() or "", sent)
    except (TypeError, ValueError) as error:
        answer = error.__context__
        if not isinstance(answer, grpc.RpcError):
            return  # the client library refused the request: nothing reached the server
        raise AssertionError(
            f"client {rpc} {_describe(spec)}\n -> the official client raised {error!r} on the answer "
            f"{answer.code().name}: {_describe(answer.details(), 300)}"
            f"\n--- server log:\n{fuzzed.log_excerpt()}"
        ) from None


def test_grpc_official_client_still_answers(fuzzed: Fuzzed) -> None:
    fuzzed.still_answers()


@settings(max_examples=scaled(2))
@given(request=RPC_REQUESTS)
@example(request=LONG_PARENT)
def test_grpc_raw_requests(fuzzed: Fuzzed, request: tuple[str, dict[str, Any]]) -> None:
    rpc, spec = request
    body = fs.build(rpc, spec).SerializeToString()
    code, message = fuzzed.raw(rpc, body)
    check_grpc(fuzzed, f"raw {rpc} {_describe(spec)}", code, message)


def test_grpc_raw_requests_still_answers(fuzzed: Fuzzed) -> None:
    fuzzed.still_answers()


# ---------------------------------------------------------------- malformed gRPC frames

RAW_METHODS = (
    *(
        f"/{SERVICE}/{name}"
        for name in (
            "ListQueues",
            "GetQueue",
            "CreateQueue",
            "UpdateQueue",
            "DeleteQueue",
            "PurgeQueue",
            "PauseQueue",
            "ResumeQueue",
            "ListTasks",
            "GetTask",
            "CreateTask",
            "DeleteTask",
            "RunTask",
            "BatchCreateTasks",
            "BatchDeleteTasks",
            "GetIamPolicy",
            "SetIamPolicy",
            "TestIamPermissions",
            "GetCmekConfig",
            "UpdateCmekConfig",
        )
    ),
    "/google.cloud.location.Locations/ListLocations",
    "/google.cloud.location.Locations/GetLocation",
    "/google.longrunning.Operations/GetOperation",
)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


CRAFTED_FRAMES = (
    b"",
    b"\x00",
    b"\xff" * 16,
    _length_delimited(1, b"\xff\xfe\xc0\xaf"),  # invalid UTF-8 in field 1 (parent/name: a string)
    _length_delimited(1, b"ok") + _length_delimited(1, b"\xed\xa0\x80"),  # UTF-8 surrogate
    _field(1, 2, _varint(2**31)),  # length beyond the frame
    _field(1, 2, _varint(2**64 - 1)),
    _field(0, 0, b"\x01"),  # field number 0
    _field(1, 6, b"\x00"),  # wire type 6
    _field(1, 7),  # wire type 7
    _field(2, 0, b"\xff" * 10 + b"\x01"),  # 11-byte varint
    _field(2, 0, b"\x80" * 9),  # truncated varint
    _field(1, 3),  # start group without end
    _field(1, 4),  # end group without start
    _field(2**29 - 1, 0, b"\x01"),  # the largest field number
    _field(2**29, 0, b"\x01"),  # beyond it
    _length_delimited(2, _length_delimited(2, _length_delimited(2, b"\xff"))),  # nested junk
    _field(1, 1, b"\x00" * 4),  # truncated fixed64
    _field(1, 5, b"\x00" * 2),  # truncated fixed32
)


def _nested_task(depth: int) -> bytes:
    """CreateTaskRequest.task (field 2) with ``depth`` nested unknown groups (recursion limits)."""
    inner = b""
    for _ in range(depth):
        inner = _field(99, 3) + inner + _field(99, 4)
    return _length_delimited(2, inner)


def _frames(closed_port: int) -> st.SearchStrategy[bytes]:
    valid = RPC_REQUESTS.map(lambda r: fs.build(*r).SerializeToString())

    def truncate(data: bytes, cut: float) -> bytes:
        return data[: int(len(data) * cut)]

    def corrupt(data: bytes, seed: int, flips: int) -> bytes:
        if not data:
            return b"\xff"
        rng = random.Random(seed)
        out = bytearray(data)
        for _ in range(flips):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)

    return st.one_of(
        st.binary(max_size=200),
        st.sampled_from(CRAFTED_FRAMES),
        st.sampled_from((50, 101, 1000, 20_000)).map(_nested_task),
        st.builds(truncate, valid, st.floats(0, 0.999)),
        st.builds(corrupt, valid, st.integers(0, 2**32), st.integers(1, 4)),
        st.builds(bytes.__add__, valid, st.sampled_from(CRAFTED_FRAMES)),
    )


FRAMES = _frames(CLOSED_PORT)


@settings(max_examples=scaled(2))
@given(method=st.sampled_from(RAW_METHODS), body=FRAMES)
def test_grpc_malformed_frames(fuzzed: Fuzzed, method: str, body: bytes) -> None:
    code, message = fuzzed.raw(method, body)
    check_grpc(fuzzed, f"frame to {method}: {_describe(body)}", code, message)


def test_grpc_malformed_frames_still_answers(fuzzed: Fuzzed) -> None:
    fuzzed.still_answers()


# ---------------------------------------------------------------- REST


def http(
    fuzzed: Fuzzed,
    method: str,
    /,
    target: bytes | str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    content_length: int | None = None,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte (any path, any header), over its own connection."""
    target_bytes = target.encode() if isinstance(target, str) else target
    lines = [
        method.encode() + b" " + target_bytes + b" HTTP/1.1",
        f"Host: 127.0.0.1:{fuzzed.server.http_port}".encode(),
        b"Connection: close",
        f"Content-Length: {len(body) if content_length is None else content_length}".encode(),
        *(f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()),
    ]
    request = b"\r\n".join(lines) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", fuzzed.server.http_port), timeout=TIMEOUT_S) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request + body)  # the server may answer and close before reading everything
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(
                f"{method} {target_bytes[:300]!r} ({len(body)} bytes, headers {headers})"
                f"\n -> no answer within {TIMEOUT_S} s\n--- server log:\n{fuzzed.log_excerpt()}"
            ) from None
    raw = b"".join(chunks)
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/"), (
        f"no HTTP answer to {method} {target_bytes[:300]!r}: {raw[:300]!r}"
    )
    if b"transfer-encoding: chunked" in head.lower():
        payload = _dechunk(payload)
    return int(status_line.split()[1]), payload


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def check_http(fuzzed: Fuzzed, what: str, status: int, payload: bytes) -> None:
    """2xx, or a 4xx carrying a non-empty message: Google's JSON error envelope when the body is
    JSON (with ``error.code`` equal to the HTTP status), else a non-empty text body."""
    problem = ""
    if 200 <= status < 300:
        fuzzed.answers_simple_call(what)
        return
    if not 400 <= status < 500:
        problem = "not a 4xx"
    else:
        try:
            document = json.loads(payload)
        except ValueError:
            if not payload.decode("utf-8", "replace").strip():
                problem = "an empty body"
        else:
            error = document.get("error") if isinstance(document, dict) else None
            if not isinstance(error, dict):
                problem = "JSON without an error envelope"
            elif not (isinstance(error.get("message"), str) and error["message"].strip()):
                problem = "an empty message"
            elif error.get("code") != status:
                problem = f"error.code {error.get('code')} differs from the HTTP status"
    if problem:
        raise AssertionError(
            f"{what}\n -> HTTP {status} ({problem}): {payload[:500]!r}"
            f"\n--- server log:\n{fuzzed.log_excerpt()}"
        )
    fuzzed.answers_simple_call(what)


def _path(name: str) -> str:
    return "/v2/" + quote(name, safe="/:")


def _query(params: dict[str, str]) -> str:
    return ("?" + urlencode(params)) if params else ""


@settings(max_examples=scaled(2))
@given(call=REST_CALLS, params=fs.query_params)
def test_rest_json_bodies(fuzzed: Fuzzed, call: tuple[str, str, Any], params: dict[str, Any]) -> None:
    method, name, body = call
    target = _path(name) + _query({k: str(v) for k, v in params.items()})
    payload = b"" if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, answer = http(fuzzed, method, target, payload, headers)
    check_http(fuzzed, f"{method} {target[:300]} {_describe(body)}", status, answer)


def test_rest_json_bodies_still_answers(fuzzed: Fuzzed) -> None:
    fuzzed.still_answers()


def _deep_json(depth: int, kind: str) -> bytes:
    return ("[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth).encode()


def _json_payloads(closed_port: int) -> st.SearchStrategy[bytes]:
    """Request bodies that are not well-formed JSON objects, or not UTF-8."""
    valid = REST_CALLS.map(lambda c: json.dumps(c[2] if c[2] is not None else {}).encode())
    return st.one_of(
        st.sampled_from(
            (
                b"",
                b"   ",
                b"{",
                b"[]",
                b"null",
                b"1",
                b'"x"',
                b"\xff\xfe{}",
                b'{"queue": "\xff"}',
                b'{"name": "\xc3\x28"}',
                b'{"name": "\\ud800"}',
                b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
                b'{"rateLimits": {"maxDispatchesPerSecond": NaN}}',
                b'{"rateLimits": {"maxDispatchesPerSecond": 1e999}}',
                b'{"retryConfig": {"maxAttempts": 1' + b"0" * 5000 + b"}}",
                b'{"a": 1, "a": 2}',
                b"{}" + b" " * 100 + b"{}",
                '{"name": "é"}'.encode("utf-16"),
                '{"name": "é"}'.encode("latin-1"),
            )
        ),
        st.builds(_deep_json, st.sampled_from((100, 1000, 100_000)), st.sampled_from(("list", "dict"))),
        st.binary(max_size=200),
        st.builds(lambda data, cut: data[: int(len(data) * cut)], valid, st.floats(0, 0.999)),
    )


_CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/json; charset=no-such-charset",
    "application/json; charset=",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "",
    "*/*",
    ";;;",
)


def _encode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    return body


def _encodings() -> st.SearchStrategy[tuple[str, str]]:
    """(Content-Encoding header, how to damage the encoded body)."""
    return st.tuples(
        st.sampled_from(("", "gzip", "deflate", "br", "zstd", "identity", "gzip, gzip", "x-unknown")),
        st.sampled_from(("intact", "truncate", "garbage", "plain")),
    )


def _rpc_targets(closed_port: int) -> st.SearchStrategy[tuple[str, str]]:
    return REST_CALLS.map(lambda c: (c[0], _path(c[1])))


RPC_TARGETS = _rpc_targets(CLOSED_PORT)
JSON_PAYLOADS = _json_payloads(CLOSED_PORT)


@settings(max_examples=scaled(1.5))
@given(
    target=RPC_TARGETS,
    body=JSON_PAYLOADS,
    content_type=st.sampled_from(_CONTENT_TYPES),
    encoding=_encodings(),
)
@example(  # an unpaired surrogate, echoed in the error message
    target=("POST", _path(f"{fs.PARENT}/queues")),
    body=b'{"name": "\\ud800"}',
    content_type="application/json",
    encoding=("", "plain"),
)
@example(  # "deflate" data that inflates without end: 200 kB of it
    target=("POST", _path(f"{fs.PARENT}/queues")),
    body=b"[" * 100_000 + b"]" * 100_000,
    content_type="",
    encoding=("deflate", "plain"),
)
def test_rest_malformed_bodies(
    fuzzed: Fuzzed, target: tuple[str, str], body: bytes, content_type: str, encoding: tuple[str, str]
) -> None:
    method, target_path = target
    if method == "GET":
        method = "POST"  # a body only means something on a call that takes one
    encoding_name, damage = encoding
    sent = _encode(body, encoding_name) if damage != "plain" else body
    if damage == "truncate":
        sent = sent[: len(sent) // 2]
    elif damage == "garbage":
        sent = b"\x1f\x8b\x08\x00garbage" + sent[::-1]
    headers = {k: v for k, v in (("Content-Type", content_type), ("Content-Encoding", encoding_name)) if v}
    status, answer = http(fuzzed, method, target_path, sent, headers)
    check_http(
        fuzzed, f"{method} {target_path[:200]} {headers} {damage} {_describe(body, 300)}", status, answer
    )


def test_rest_malformed_bodies_still_answers(fuzzed: Fuzzed) -> None:
    fuzzed.still_answers()


_ODD_SEGMENTS = (
    "..",
    ".",
    "",
    "%2e%2e",
    "%2E",
    "%2F",
    "a%2Fb",
    "%00",
    "%",
    "%zz",
    "%C3%A9",
    "%FF",
    "%ED%A0%80",
    "é",
    "日本",
    ":",
    "a:b",
    ":run",
    "tasks:buffer",
    "q:pause",
    "x" * 5000,
    "*",
    "~",
    ";a=b",
    "?",
    "#",
)


def _raw_paths(closed_port: int) -> st.SearchStrategy[bytes]:
    segment = st.one_of(
        st.sampled_from(_ODD_SEGMENTS).map(lambda s: s.encode()),
        st.builds(lambda: b"x" * 70_000),
        st.sampled_from(_ODD_SEGMENTS[13:16]).map(lambda s: s.encode("utf-8")),
        fs.weird_text.map(lambda s: quote(s, safe="").encode()),
        st.binary(min_size=1, max_size=8).map(
            lambda b: bytes(c for c in b if c > 0x20 and c not in b"?# \x7f") or b"x"
        ),
    )
    real = REST_CALLS.map(lambda c: c[1].split("/"))

    def replace(parts: list[str], index: int, new: bytes) -> bytes:
        encoded = [quote(p, safe=":").encode() for p in parts]
        encoded[index % len(encoded)] = new
        return b"/v2/" + b"/".join(encoded)

    return st.one_of(
        st.builds(replace, real, st.integers(0, 10), segment),
        st.lists(segment, min_size=1, max_size=10).map(lambda s: b"/v2/" + b"/".join(s)),
        st.lists(segment, max_size=4).map(lambda s: b"/" + b"/".join(s)),
        st.sampled_from(
            (
                b"/v2/",
                b"/v2",
                b"//v2/projects",
                b"/v2/projects/../../etc/passwd",
                b"/v2/projects/p/locations/l/queues/q/tasks/t:run:run",
                b"/v2/projects/p/locations/l/queues/q/tasks:buffer?x=%FF",
                b"/v2/projects/p/locations/l/queues/q:getIamPolicy",
                b"*",
                b"http://127.0.0.1/v2/projects/p/locations/l/queues",
            )
        ),
    )


RAW_PATHS = _raw_paths(CLOSED_PORT)


@settings(max_examples=scaled(1.5))
@given(call=st.data())
def test_rest_paths_and_queries(fuzzed: Fuzzed, call: st.DataObject) -> None:
    path = call.draw(RAW_PATHS, label="path")
    params = call.draw(fs.query_params, label="query")
    raw_query = call.draw(
        st.one_of(
            st.just(b""),
            st.sampled_from(
                (b"?", b"?&&", b"?pageSize", b"?pageSize=%FF", b"?%FF=1", b"?a=%", b"?pageSize=1&pageSize=2")
            ),
        ),
        label="raw query",
    )
    method = call.draw(st.sampled_from(("GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "TRACE")))
    target = path + (raw_query or _query({k: str(v) for k, v in params.items()}).encode())
    body = b"{}" if method in ("POST", "PATCH", "PUT") else b""
    status, answer = http(fuzzed, method, target, body, {"Content-Type": "application/json"})
    if method == "HEAD" and 400 <= status < 500:
        answer = b'{"error": {"code": %d, "message": "(HEAD has no body)"}}' % status
    check_http(fuzzed, f"{method} {target[:300]!r}", status, answer)


def test_rest_paths_and_queries_still_answers(fuzzed: Fuzzed) -> None:
    fuzzed.still_answers()


@pytest.mark.parametrize("encoding", ["", "gzip"])
def test_rest_body_over_the_limit(fuzzed: Fuzzed, encoding: str) -> None:
    """Once per encoding: a body just over 8 MiB (or one that inflates beyond it) is refused with a 4xx."""
    task = {"task": {"httpRequest": {"url": f"http://127.0.0.1:{fuzzed.closed_port}/", "body": ""}}}
    padding = HTTP_BODY_LIMIT - len(json.dumps(task)) + 1024
    task["task"]["httpRequest"]["body"] = base64.b64encode(b"x" * (padding * 3 // 4)).decode()
    body = json.dumps(task).encode()
    assert len(body) > HTTP_BODY_LIMIT
    headers = {"Content-Type": "application/json"}
    if encoding:
        body = gzip.compress(body)
        headers["Content-Encoding"] = encoding
    target = _path(f"{fs.PARENT}/queues/{fs.TASK_QUEUES[1]}/tasks")
    status, answer = http(fuzzed, "POST", target, body, headers)
    check_http(fuzzed, f"POST {target} with {len(body)} bytes ({encoding or 'plain'})", status, answer)
    assert status == 413 or encoding, f"expected 413 for a plain body over the limit, got {status}"
    fuzzed.still_answers()


# ---------------------------------------------------------------- after everything


def test_server_still_answers_and_logged_no_traceback(fuzzed: Fuzzed) -> None:
    """Last: the server still answers, and nothing it did while fuzzed logged a traceback."""
    fuzzed.still_answers()
    log = fuzzed.log_path.read_text("utf-8", "replace")
    tracebacks = [
        "\n".join(block.splitlines()[-3:]) for block in log.split("Traceback (most recent call last):")[1:]
    ]
    assert not tracebacks, (
        f"{len(tracebacks)} tracebacks in the server log; the last lines of each distinct one:\n"
        + "\n---\n".join(sorted(set(tracebacks)))
    )
