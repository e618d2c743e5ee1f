"""Test-side control of handler.py: start it, and wait for the requests it received."""

from __future__ import annotations

import base64
import json
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from opentasks.testing import free_port

HANDLER = Path(__file__).with_name("handler.py")


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class HandlerProcess:
    """The handler as a subprocess; ``url(path)`` is where tasks should point."""

    def __init__(self) -> None:
        self.port = free_port()
        self._received: queue.Queue[Received] = queue.Queue()
        self.process: subprocess.Popen[str] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set_status(self, key: str, code: int) -> None:
        """From now on, ``/switch/<key>`` answers ``code``."""
        request = urllib.request.Request(self.url(f"/_set/{key}/{code}"), method="POST")
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(request, timeout=10) as answer:
            assert answer.status == 204

    def __enter__(self) -> HandlerProcess:
        self.process = subprocess.Popen(
            [sys.executable, str(HANDLER), str(self.port)], stdout=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_listening()
        return self

    def _wait_listening(self, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the test handler did not start")

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.process.stdout:
            self._read_lines()

    def _read_lines(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            data = json.loads(line)
            self._received.put(
                Received(
                    data["method"],
                    data["path"],
                    [(k, v) for k, v in data["headers"]],
                    base64.b64decode(data["body"]),
                    data["t"],
                )
            )

    def take(self, count: int, timeout_s: float = 30) -> list[Received]:
        """The next ``count`` requests, waiting for them to arrive."""
        deadline = time.monotonic() + timeout_s
        got = []
        for _ in range(count):
            remaining = deadline - time.monotonic()
            try:
                got.append(self._received.get(timeout=max(remaining, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"only {len(got)} of {count} requests arrived within {timeout_s}s"
                ) from None
        return got

    def nothing_more(self, within_s: float) -> bool:
        """True if no further request arrives within ``within_s`` (for negative checks only)."""
        try:
            self._received.get(timeout=within_s)
        except queue.Empty:
            return True
        return False

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
