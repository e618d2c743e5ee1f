"""Memory under an HTTP/2 stream-reset flood (each stream opened and reset at once, as in the
"rapid reset" attack), opentasks against a bare grpc.aio server with no handlers in the same run.

Each round opens a fresh connection and sends ``--resets`` HEADERS+DATA+RST_STREAM triples for
GetQueue; the server's resident memory is read after every round. Traffic stays on 127.0.0.1.

Usage: python bench/http2_resets.py [--rounds 6] [--resets 25000]
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.exceptions
import psutil
from google.cloud.tasks_v2.types import cloudtasks

from opentasks.testing import ServerProcess, free_port

METHOD = "/google.cloud.tasks.v2.CloudTasks/GetQueue"
BARE_SERVER = textwrap.dedent(
    """
    import asyncio, sys, grpc
    async def main():
        server = grpc.aio.server()
        server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()
    asyncio.run(main())
    """
)


def _frame() -> bytes:
    request = cloudtasks.GetQueueRequest(name="projects/p/locations/l/queues/q")
    message = cloudtasks.GetQueueRequest.serialize(request)
    return b"\x00" + struct.pack(">I", len(message)) + message


def flood(port: int, resets: int) -> None:
    """One connection: ``resets`` streams, each reset right after its request is sent."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", METHOD),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    frame = _frame()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        stream_id = 1
        for sent in range(resets):
            connection.send_headers(stream_id, headers)
            connection.send_data(stream_id, frame)
            connection.reset_stream(stream_id)
            stream_id += 2
            if sent % 100 == 99:
                sock.sendall(connection.data_to_send())
                _drain(sock, connection)
        sock.sendall(connection.data_to_send())


def _drain(sock: socket.socket, connection: h2.connection.H2Connection) -> None:
    sock.setblocking(False)
    try:
        while data := sock.recv(1 << 16):
            connection.receive_data(data)
    except (BlockingIOError, h2.exceptions.ProtocolError):
        pass
    finally:
        sock.setblocking(True)


def measure(label: str, port: int, pid: int, rounds: int, resets: int) -> float:
    process = psutil.Process(pid)
    start = process.memory_info().rss / 2**20
    readings = []
    for _ in range(rounds):
        flood(port, resets)
        time.sleep(0.5)  # let the server finish the round's resets before reading its memory
        readings.append(process.memory_info().rss / 2**20)
    growth = readings[-1] - start
    shown = ", ".join(f"{r:.0f}" for r in readings)
    print(f"  {label:<10}: {start:.0f} MiB -> {readings[-1]:.0f} MiB (+{growth:.0f}); rounds: {shown}")
    return growth


def with_bare_server(run: Callable[[int, int], float]) -> float:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        return run(port, process.pid)
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--resets", type=int, default=25_000)
    args = parser.parse_args()
    total = args.rounds * args.resets
    print(f"HTTP/2 reset flood: {args.rounds} connections x {args.resets} reset streams ({total:,})")
    bare = with_bare_server(lambda port, pid: measure("bare gRPC", port, pid, args.rounds, args.resets))
    with ServerProcess("memory://") as server:
        ours = measure("opentasks", server.port, server.pid, args.rounds, args.resets)
    print(f"  growth    : opentasks {ours:.0f} MiB vs bare gRPC {bare:.0f} MiB ({ours / max(bare, 1):.2f}x)")


if __name__ == "__main__":
    main()
