# ruff: noqa: RUF001 - confusable digits and full stops are what these tests are about
"""Outbound hardening against a real server process: a stand-in metadata server on 127.0.0.2
(denied with --dispatch-deny) must never be reached, whether the task's host is written with
Unicode digits or a handler redirects there; a task's hop-by-hop headers cannot smuggle a second
request; headers that can never be sent are refused at CreateTask."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/hardening/locations/us-central1"


class Recorder(http.server.ThreadingHTTPServer):
    """A handler that records the paths it is asked for; ``redirect_to`` makes it answer 302."""

    def __init__(self, host: str, redirect_to: str = "") -> None:
        self.paths: list[str] = []
        self.redirect_to = redirect_to
        super().__init__((host, 0), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        self.server.paths.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


def running(server: Recorder) -> Recorder:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def metadata() -> Iterator[Recorder]:
    with running(Recorder("127.0.0.2")) as server:
        yield server
        server.shutdown()


@pytest.fixture(scope="module")
def redirector(metadata: Recorder) -> Iterator[Recorder]:
    with running(Recorder("127.0.0.1", f"http://127.0.0.2:{metadata.port}/computeMetadata/v1/")) as server:
        yield server
        server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder: Path = tmp_path_factory.mktemp("hardening")
    with ServerProcess(
        "memory://", "--dispatch-deny", "127.0.0.2/32", "--follow-redirects", log_path=folder / "server.log"
    ) as process:
        yield process


@pytest.fixture(scope="module", params=["grpc", "rest"])
def client(server: ServerProcess, request: pytest.FixtureRequest) -> tasks_v2.CloudTasksClient:
    return server.client(request.param)


def make_queue(client: tasks_v2.CloudTasksClient, queue_id: str) -> str:
    name = f"{PARENT}/queues/{queue_id}-{int(time.monotonic() * 1000)}"
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    return name


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.2",
        "１２７.０.０.２",
        "127。0。0。2",
        "127．0．0．2",
        "\U0001d7cf\U0001d7d0\U0001d7d5.0.0.2",
        "2130706434",
    ],
)
def test_hosts_that_mean_a_denied_address_are_refused(
    client: tasks_v2.CloudTasksClient, metadata: Recorder, host: str
) -> None:
    queue = make_queue(client, "unicode")
    with pytest.raises(exceptions.BadRequest, match=r"127\.0\.0\.2.* is not allowed"):
        client.create_task(parent=queue, task={"http_request": {"url": f"http://{host}:{metadata.port}/"}})
    override = tasks_v2.HttpTarget(uri_override=tasks_v2.UriOverride(host=host))
    with pytest.raises(exceptions.BadRequest, match=r"127\.0\.0\.2.* is not allowed|not a host name"):
        client.update_queue(
            queue=tasks_v2.Queue(name=queue, http_target=override),
            update_mask=field_mask_pb2.FieldMask(paths=["http_target"]),
        )
    assert metadata.paths == []


def wait_for_refusal(client: tasks_v2.CloudTasksClient, name: str, timeout_s: float = 20) -> tasks_v2.Task:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = client.get_task(name=name)
        if task.last_attempt.response_status.code:
            return task
        time.sleep(0.05)
    raise AssertionError(f"{name} was not attempted within {timeout_s} s")


def test_redirects_to_a_denied_address_are_refused(
    client: tasks_v2.CloudTasksClient, metadata: Recorder, redirector: Recorder
) -> None:
    queue = make_queue(client, "redirect")
    task = client.create_task(
        parent=queue, task={"http_request": {"url": f"http://127.0.0.1:{redirector.port}/hop"}}
    )
    attempted = wait_for_refusal(client, task.name)
    status = attempted.last_attempt.response_status
    assert status.code == 9, status  # FAILED_PRECONDITION: refused by the server, not unreachable
    assert "127.0.0.2 is not allowed" in status.message
    assert "/hop" in redirector.paths
    assert metadata.paths == []


SMUGGLED = b"0\r\n\r\nPOST /smuggled HTTP/1.1\r\nX-CloudTasks-TaskName: forged\r\nContent-Length: 0\r\n\r\n"
HOP_BY_HOP = {
    "Transfer-Encoding": "chunked",
    "Connection": "keep-alive",
    "Keep-Alive": "timeout=5",
    "Upgrade": "h2c",
    "TE": "trailers",
    "Trailer": "X-Forged",
    "Expect": "100-continue",
    "Proxy-Authorization": "Basic eDp5",
}


class NaiveHandler:
    """A raw HTTP/1.1 handler that honours Transfer-Encoding over Content-Length (as a backend
    open to request smuggling does) and records every request it parses."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self.sock:
            connection, _ = self.sock.accept()
        with connection, connection.makefile("rb") as reader:
            connection.settimeout(10)
            self._parse(reader, connection)  # the request the task sends
            connection.settimeout(1)  # then whatever else arrived on the connection
            try:
                while self._parse(reader, connection):
                    pass
            except (TimeoutError, OSError):
                pass
        self.done.set()

    def _parse(self, reader: BinaryIO, connection: socket.socket) -> bool:
        line = reader.readline().decode().rstrip("\r\n")
        if not line:
            return False
        headers: dict[str, str] = {}
        while (field := reader.readline().decode("utf-8").rstrip("\r\n")) != "":
            key, _, value = field.partition(":")
            headers[key.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while size := int(reader.readline().strip() or b"0", 16):
                body += reader.read(size + 2)
            reader.readline()
        else:
            body = reader.read(int(headers.get("content-length", "0")))
        self.requests.append((line, headers, body))
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True


def test_task_headers_cannot_smuggle_a_second_request(client: tasks_v2.CloudTasksClient) -> None:
    handler = NaiveHandler()
    queue = make_queue(client, "smuggle")
    headers = {**HOP_BY_HOP, "X-Name": "café ☃"}
    task = {
        "http_request": {"url": f"http://127.0.0.1:{handler.port}/", "headers": headers, "body": SMUGGLED}
    }
    client.create_task(parent=queue, task=task)
    assert handler.done.wait(20)
    [(line, received, body)] = handler.requests
    assert line == "POST / HTTP/1.1"
    assert body == SMUGGLED
    assert received["x-name"] == "café ☃"  # non-ASCII values are sent, as UTF-8
    assert not set(received) & {k.lower() for k in HOP_BY_HOP}


@pytest.mark.parametrize(
    ("name", "value"), [("X-Nul", "a\x00b"), ("X-Bell", "a\x07b"), ("X-Del", "a\x7f"), ("X(Bad)", "1")]
)
def test_headers_that_can_never_be_sent_are_refused(
    client: tasks_v2.CloudTasksClient, name: str, value: str
) -> None:
    queue = make_queue(client, "unsendable")
    with pytest.raises(exceptions.BadRequest, match=name.replace("(", r"\(").replace(")", r"\)")):
        client.create_task(
            parent=queue, task={"http_request": {"url": "http://127.0.0.1:9/", "headers": {name: value}}}
        )
