"""gRPC on the HTTP port: one ``host:port`` for every client.

Google's emulators serve gRPC and REST on one port, and ``CLOUD_TASKS_EMULATOR_HOST`` names
one ``host:port`` for every client that reads it. Each connection to the HTTP port is looked
at before anything is parsed: one that opens with HTTP/2's connection preface (what a gRPC
client sends, with prior knowledge) is relayed byte for byte to the gRPC server's private Unix
socket; any other goes to the REST server as before. The gRPC server then answers it exactly
as on its own port (the same services, authentication and limits). The relay costs a copy of
each chunk in each direction; the dedicated gRPC port stays the fastest path
(``bench/create_tasks.py --shared-port`` measures the difference).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HIGH_WATER = 256 * 1024  # bytes waiting to be written to one side before the other pauses

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class PortSniffer(asyncio.Protocol):
    """Decides what a new connection speaks from its first bytes, then hands it over: to
    ``http()``'s protocol, or (HTTP/2 preface) to a relay to the gRPC server's socket at
    ``grpc_path``. A connection that has not shown which within ``timeout_s`` is closed.

    ``undecided`` and ``relayed`` hold the connections being looked at and those relayed, so
    that a limit on connections can count them beside the HTTP server's own."""

    def __init__(
        self,
        http: ProtocolFactory,
        grpc_path: str,
        timeout_s: float,
        undecided: set[asyncio.BaseProtocol],
        relayed: set[asyncio.BaseProtocol],
    ) -> None:
        self._http = http
        self._grpc_path = grpc_path
        self._timeout_s = timeout_s
        self._undecided = undecided
        self._relayed = relayed
        self._transport: asyncio.Transport | None = None
        self._seen = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._undecided.add(self)
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._transport.close)

    def data_received(self, data: bytes) -> None:
        self._seen += data
        if not PREFACE.startswith(self._seen[: len(PREFACE)]):
            self._hand_over(self._http())
        elif len(self._seen) >= len(PREFACE):
            self._hand_over(_ClientSide(self._grpc_path, self._relayed))

    def eof_received(self) -> bool | None:
        if self._seen:  # a request cut short: the HTTP server sees it (and its end) as it would
            self._hand_over(self._http())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._decided()

    def _decided(self) -> None:
        self._undecided.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hand_over(self, protocol: asyncio.BaseProtocol) -> None:
        transport = self._transport
        assert transport is not None
        self._decided()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        seen, self._seen = self._seen, b""
        if not transport.is_closing():
            cast(asyncio.Protocol, protocol).data_received(seen)


class _Half(asyncio.Protocol):
    """One side of a relayed connection: what it receives is written to the other side's
    transport (``peer``), and it stops reading while the other side's writes are behind."""

    upstream = False  # True for the gRPC server's side

    def __init__(self, peer: asyncio.Transport | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def attach(self, peer: asyncio.Transport) -> None:
        """Start writing to ``peer`` (with what arrived before it was there)."""
        self.peer = peer
        for chunk in self._pending:
            peer.write(chunk)
        self._pending = []
        if self._eof and peer.can_write_eof():
            peer.write_eof()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._pending.append(data)
            if sum(map(len, self._pending)) > _HIGH_WATER and self.transport is not None:
                self.transport.pause_reading()  # until the other side is there
        elif not self.peer.is_closing():
            self.peer.write(data)

    def eof_received(self) -> bool | None:
        if self.upstream:  # the gRPC server has said all it will: what it said goes, then both close
            if self.peer is not None:
                self.peer.close()
            return False
        # The client has: the gRPC server is told so, answers what it still owes and closes,
        # which closes the client (connection_lost below).
        if self.peer is None:
            self._eof = True
        elif not self.peer.is_closing() and self.peer.can_write_eof():
            self.peer.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and not self.peer.is_closing():
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.is_closing():
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


class _Upstream(_Half):
    """The gRPC server's side."""

    upstream = True


class _ClientSide(_Half):
    """The client's side: opens the gRPC server's socket once it knows the client speaks
    HTTP/2."""

    def __init__(self, grpc_path: str, relayed: set[asyncio.BaseProtocol]) -> None:
        super().__init__()
        self._grpc_path = grpc_path
        self._relayed = relayed
        self._opening: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._relayed.add(self)
        self._opening = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        client = self.transport
        assert client is not None
        try:
            server, _ = await asyncio.get_running_loop().create_unix_connection(
                lambda: _Upstream(client), self._grpc_path
            )
        except OSError:
            client.close()
            return
        if client.is_closing():
            server.close()
            return
        self.attach(server)

    def connection_lost(self, exc: Exception | None) -> None:
        self._relayed.discard(self)
        super().connection_lost(exc)


_DIR_PREFIX = "opentasks-grpc-"
_MAX_UNIX_PATH = 100  # bytes; the system's limit is 104 to 108


def socket_dir() -> Path | None:
    """A new directory only this user may enter, for the gRPC server's relay socket, in the
    temporary directory (or /tmp when that one's path is too long for a Unix socket); None
    when neither can be made. Directories left by servers of this user that are no longer
    running (killed with SIGKILL) are removed first."""
    _remove_stale_dirs()
    for parent in (tempfile.gettempdir(), "/tmp"):
        if len(os.fsencode(parent)) + len(_DIR_PREFIX) + 30 > _MAX_UNIX_PATH:
            continue
        try:
            return Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=parent))
        except OSError:
            continue
    return None


def _remove_stale_dirs() -> None:
    for parent in {tempfile.gettempdir(), "/tmp"}:
        try:
            found = list(Path(parent).glob(f"{_DIR_PREFIX}*"))
        except OSError:
            continue
        for folder in found:
            pid = folder.name.removeprefix(_DIR_PREFIX).split("-", 1)[0]
            with contextlib.suppress(OSError):
                if pid.isdigit() and folder.stat().st_uid == os.getuid() and not _running(int(pid)):
                    shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
