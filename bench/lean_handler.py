"""A lean task handler: the interface of handler.py (answers 200, ``/slow/MS`` after MS
milliseconds, GET /__stats, POST /__reset)
and GET /__stats?by_queue=1 (requests and the last one's time by X-CloudTasks-QueueName)
on a bare asyncio protocol with just enough HTTP/1.1 for keep-alive requests that carry a
Content-Length, at a fraction of aiohttp's CPU per request. For benchmarks where the handler's
CPU would otherwise take the cores the server under test needs.

Run: python bench/lean_handler.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

arrivals: list[tuple[float, float, str, str]] = []  # (monotonic, wall, task name, ETA header)
queues: dict[str, list[float]] = {}  # queue name -> [requests, monotonic time of the last one]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
MAX_HEAD = 65536


def _headers(head: bytes) -> dict[bytes, bytes]:
    """The request's headers by lower-case name."""
    found = {}
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        found[key.strip().lower()] = value.strip()
    return found


def _json(payload: object) -> bytes:
    body = json.dumps(payload).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class Handler(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are no asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._close()
                return
            head = bytes(self.buffer[:end])
            headers = _headers(head)
            length = int(headers.get(b"content-length", 0))
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            del self.buffer[: end + 4 + length]
            self._answer(head, headers)

    def _answer(self, head: bytes, headers: dict[bytes, bytes]) -> None:
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0]
        if path.startswith(b"/__stats"):
            if b"by_queue" in path:
                self.transport.write(_json(queues))
            elif b"count_only" in path:
                self.transport.write(_json({"count": len(arrivals)}))
            else:
                self.transport.write(_json({"count": len(arrivals), "arrivals": arrivals}))
        elif path == b"/__reset" and method == b"POST":
            arrivals.clear()
            queues.clear()
            self.transport.write(_json({}))
        elif path.startswith(b"/slow/"):  # answered, and counted, after that many ms
            delay = int(path.rsplit(b"/", 1)[1]) / 1000
            asyncio.get_running_loop().call_later(delay, self._task_answered, headers)
        else:
            self._task_answered(headers)

    def _task_answered(self, headers: dict[bytes, bytes]) -> None:
        name = headers.get(b"x-cloudtasks-taskname", b"").decode("latin-1")
        eta = headers.get(b"x-cloudtasks-tasketa", b"").decode("latin-1")
        now = time.monotonic()
        arrivals.append((now, time.time(), name, eta))
        queue = headers.get(b"x-cloudtasks-queuename", b"").decode("latin-1")
        seen = queues.get(queue)
        if seen is None:
            queues[queue] = [1, now]
        else:
            seen[0] += 1
            seen[1] = now
        if not self.transport.is_closing():
            self.transport.write(OK)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Handler, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def run() -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1])))


if __name__ == "__main__":
    run()
