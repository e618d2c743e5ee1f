"""Slow or numerous clients cannot hold the server's ports: connection caps and read deadlines on
both transports, checked against a real server with raw sockets (each wait bounded)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
MAX_CONNECTIONS = 8
READ_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder: Path = tmp_path_factory.mktemp("limits")
    with ServerProcess(
        "memory://",
        "--max-connections",
        str(MAX_CONNECTIONS),
        "--read-timeout",
        f"{READ_TIMEOUT_S}s",
        log_path=folder / "server.log",
    ) as running:
        yield running


def _connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection.settimeout(READ_TIMEOUT_S * 4)
    return connection


def _read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received


def _still_answers(server: ServerProcess) -> None:
    deadline = time.monotonic() + 10  # the server notices closed connections in its own time
    while time.monotonic() < deadline:
        with _connect(server.http_port) as probe:
            probe.sendall(b"GET /v2/projects/p/locations/l/queues HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if not probe.recv(64).startswith(b"HTTP/1.1 503"):
                break
    assert list(server.client().list_queues(parent="projects/p/locations/l")) == []
    assert list(server.client("rest").list_queues(parent="projects/p/locations/l")) == []


def test_http_connection_that_never_finishes_its_headers_is_closed(bounded: ServerProcess) -> None:
    with _connect(bounded.http_port) as connection:
        connection.sendall(b"GET /v2/projects/p/locations/l/queues HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        assert _read_until_closed(connection) == b""
    assert time.monotonic() - started < READ_TIMEOUT_S * 3
    _still_answers(bounded)


def test_http_body_trickled_slower_than_the_read_timeout_gets_408(bounded: ServerProcess) -> None:
    with _connect(bounded.http_port) as connection:
        connection.sendall(
            b"POST /v2/projects/p/locations/l/queues HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = _read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"DEADLINE_EXCEEDED" in answer
    assert time.monotonic() - started < READ_TIMEOUT_S * 3
    _still_answers(bounded)


def test_http_connections_beyond_the_cap_are_refused_with_503(bounded: ServerProcess) -> None:
    held = [_connect(bounded.http_port) for _ in range(MAX_CONNECTIONS)]
    try:
        for connection in held:  # each is accepted and waits for a request
            connection.sendall(b"GET /v2/")
        with _connect(bounded.http_port) as extra:
            answer = _read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"Too many connections" in answer
    finally:
        for connection in held:
            connection.close()
    _still_answers(bounded)


def test_grpc_connection_that_never_starts_http2_is_closed(bounded: ServerProcess) -> None:
    with _connect(bounded.port) as connection:
        started = time.monotonic()
        received = _read_until_closed(connection)
    assert b"handshake timeout" in received  # the GOAWAY's debug text
    assert time.monotonic() - started < READ_TIMEOUT_S * 3
    _still_answers(bounded)


def test_grpc_connections_beyond_the_cap_are_closed_at_once(bounded: ServerProcess) -> None:
    held = [_connect(bounded.port) for _ in range(MAX_CONNECTIONS)]
    try:
        for connection in held:
            assert connection.recv(9)  # the server's SETTINGS: the connection was accepted
        with _connect(bounded.port) as extra:
            started = time.monotonic()
            assert _read_until_closed(extra) == b""
        assert time.monotonic() - started < READ_TIMEOUT_S / 2  # refused, not timed out
    finally:
        for connection in held:
            connection.close()
    _still_answers(bounded)


def test_a_burst_of_calls_on_a_new_channel_is_all_served(bounded: ServerProcess) -> None:
    """A client may open many streams before the server's HTTP/2 settings reach it: a cap on
    streams per connection made gRPC refuse some of them (UNAVAILABLE) instead of serving them."""

    async def burst() -> list[BaseException | None]:
        parent = "projects/p/locations/l"
        async with grpc.aio.insecure_channel(bounded.address) as channel:
            client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
            queue = await client.create_queue(parent=parent, queue={"name": f"{parent}/queues/burst"})
            await client.pause_queue(name=queue.name)
        async with grpc.aio.insecure_channel(bounded.address) as channel:  # a new connection
            client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
            task = {"http_request": {"url": "http://127.0.0.1:9/"}}
            calls = (client.create_task(parent=queue.name, task=task) for _ in range(300))
            return await asyncio.gather(*calls, return_exceptions=True)  # type: ignore[arg-type]

    assert [e for e in asyncio.run(burst()) if isinstance(e, BaseException)] == []
