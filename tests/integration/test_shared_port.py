"""gRPC and REST on one port: the official clients, raw connections that look like one and
then the other, and the limits that hold for relayed connections."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

from opentasks.api.shared_port import PREFACE
from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/shared/locations/l"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("memory://", "--read-timeout", "2s", "--max-connections", "20") as running:
        yield running


def shared(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.http_port}"


def grpc_client(server: ServerProcess) -> tasks_v2.CloudTasksClient:
    channel = grpc.insecure_channel(shared(server))
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def test_the_official_grpc_client_and_rest_share_the_http_port(server: ServerProcess) -> None:
    client = grpc_client(server)
    queue = client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/one"}).name
    body = bytes(range(256)) * 3500  # 875 KiB: many frames through the relay, both ways
    created = client.create_task(
        parent=queue, task={"http_request": {"url": "http://127.0.0.1:9/x", "body": body}}
    )
    assert client.get_task(request={"name": created.name, "response_view": "FULL"}).http_request.body == body
    with urllib.request.urlopen(f"{server.rest_url}/v2/{created.name}") as answer:  # the same port, REST
        assert json.loads(answer.read())["name"] == created.name
    rest = server.client("rest")
    assert [t.name for t in rest.list_tasks(parent=queue)] == [created.name]
    client.delete_task(name=created.name)
    with pytest.raises(exceptions.NotFound):
        client.get_task(name=created.name)


def test_the_async_client_many_calls_at_once(server: ServerProcess) -> None:
    async def run() -> list[str]:
        channel = grpc.aio.insecure_channel(shared(server))
        client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
        queue = (await client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/many"})).name
        task = {"http_request": {"url": "http://127.0.0.1:9/x"}}
        made = await asyncio.gather(*(client.create_task(parent=queue, task=task) for _ in range(200)))
        await channel.close()
        return [t.name for t in made]

    assert len(set(asyncio.run(run()))) == 200


def raw(server: ServerProcess, data: bytes, *, wait_s: float = 5.0) -> bytes:
    """What the HTTP port answers to ``data`` on a new connection (until it closes or
    ``wait_s`` passes)."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=wait_s) as sock:
        sock.sendall(data)
        answer = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize(
    "opening",
    [
        # a method that starts like the preface
        b"PRI / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",  # almost the preface
        b"POST /v2/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ],
)
def test_what_is_not_the_http2_preface_is_answered_by_the_http_server(
    server: ServerProcess, opening: bytes
) -> None:
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", raw(server, opening))


def closed_after(server: ServerProcess, data: bytes, *, half_close: bool = False) -> tuple[bytes, float]:
    """What the port answers to ``data`` and how many seconds pass until it closes the
    connection (at most 10)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def test_a_broken_or_silent_connection_is_closed_and_the_port_still_serves(server: ServerProcess) -> None:
    answer, seconds = closed_after(server, PREFACE + b"\x00" * 64)  # the preface, then no HTTP/2 frames
    assert seconds < 2 and b"HTTP/1." not in answer  # the gRPC server ends it (GOAWAY)
    answer, seconds = closed_after(server, b"PRI * HT")  # never shows what it speaks
    assert answer == b"" and 1.5 < seconds < 5  # closed after --read-timeout (2 s)
    answer, seconds = closed_after(server, PREFACE[:10], half_close=True)  # cut short: closed at once
    assert seconds < 2 and answer == b""
    client = grpc_client(server)
    assert client.get_queue(name=f"{PARENT}/queues/one").name.endswith("/one")


SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty HTTP/2 SETTINGS frame


def test_relayed_connections_count_toward_max_connections() -> None:
    with ServerProcess("memory://", "--max-connections", "5") as server:  # no other client on it
        held = []
        try:
            for _ in range(5):
                sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
                sock.sendall(PREFACE + SETTINGS)  # relayed, a finished HTTP/2 handshake, kept open
                assert sock.recv(9)  # the gRPC server's SETTINGS: relayed and accepted
                held.append(sock)
            assert raw(server, b"").startswith(b"HTTP/1.1 503")  # refused as it connects
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 10
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        while raw(server, request).startswith(b"HTTP/1.1 503"):
            assert time.monotonic() < deadline, "the relayed connections were not let go"
            time.sleep(0.1)


def test_connections_that_end_politely_give_their_place_back(server: ServerProcess) -> None:
    """Clients that half-close (FIN, no reset) after talking HTTP/2: more of them than
    --max-connections, one after another, and the port still serves."""
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
            sock.sendall(PREFACE + SETTINGS)
            sock.recv(65536)  # the server's SETTINGS
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # the server closes: the relay ended both sides
                pass
    ok = raw(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200"), ok[:80]
    for _ in range(30):  # the official client, closing its channel each time
        channel = grpc.insecure_channel(shared(server))
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        client.get_queue(name=f"{PARENT}/queues/one")
        channel.close()
    assert grpc_client(server).get_queue(name=f"{PARENT}/queues/one").name.endswith("/one")


def test_a_temporary_directory_too_long_for_a_socket_does_not_stop_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(deep))
    with ServerProcess("memory://") as server:
        assert grpc_client(server).list_queues(parent=PARENT) is not None
