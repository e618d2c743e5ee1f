"""Run a real opentasks server in a subprocess: for integration tests, benchmarks, and your own tests.

Example::

    with ServerProcess("memory://") as server:
        client = server.client()
        parent = "projects/p/locations/l"
        client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"})
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import grpc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from opentasks.clock import SystemClock

OPENTASKS = str(Path(sys.executable).parent / "opentasks")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One server process; ``start`` returns once its gRPC port answers."""

    def __init__(self, storage: str, *extra: str, log_path: Path | None = None) -> None:
        self.storage = storage
        self.extra = extra
        self.port = free_port()
        self.http_port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout_s: float = 30) -> ServerProcess:
        args = [
            OPENTASKS,
            "serve",
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--storage",
            self.storage,
            *self.extra,
        ]
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            args, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env={**os.environ}
        )
        with grpc.insecure_channel(self.address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=timeout_s)
            except grpc.FutureTimeoutError:
                self.kill()
                raise RuntimeError(f"opentasks did not start; exit code {self.process.poll()}") from None
        return self

    @property
    def address(self) -> str:
        """host:port of the gRPC API."""
        return f"127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self, transport: str = "grpc") -> tasks_v2.CloudTasksClient:
        """The official client, as the README tells users to build it (``transport`` grpc or rest)."""
        if transport == "rest":
            return tasks_v2.CloudTasksClient(
                transport="rest",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options=ClientOptions(api_endpoint=self.rest_url),
            )
        channel = grpc.insecure_channel(self.address)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self._close_log()
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()


def wait_until_drained(client: tasks_v2.CloudTasksClient, queue: str, timeout_s: float = 30) -> None:
    """Wait until ``queue`` holds no task (all were delivered, or gave up); AssertionError on timeout."""
    clock = SystemClock()
    deadline = clock.monotonic() + timeout_s
    while True:
        if not list(client.list_tasks(request={"parent": queue, "page_size": 1})):
            return
        if clock.monotonic() > deadline:
            raise AssertionError(f"{queue} still has tasks after {timeout_s} s")
        time.sleep(0.05)
