"""The node half of the PostgreSQL store: nodes, queue leases with epochs, and signals.

* Nodes and queue leases are rows (``nodes``, ``queue_owners``); every node reads and writes
  them with the time of its own clock, so node clocks must agree to well within the lease's
  margin (NTP does; docs/deploying.md).
* Signals travel with ``NOTIFY``, sent in their own short statement, never inside a task's
  transaction, and are received on one dedicated ``LISTEN`` connection. When that connection
  is lost the node is told (``on_gap``) at once and again at each reconnection attempt, so it
  looks for work itself until signals flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import asyncpg

from opentasks.domain.limits import later
from opentasks.domain.names import QueueName
from opentasks.storage import codec
from opentasks.storage.base import FORGET_NODES_AFTER, Fence, NodeInfo, SignalListener, node_id_in_use
from opentasks.storage.postgres_sql import DRIVER_ERRORS, Conn, reason

T = TypeVar("T")
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
Run = Callable[[str, Callable[[Conn], Awaitable[T]]], Awaitable[T]]

CHANNEL = "opentasks"
PAYLOAD_LIMIT = 7900  # bytes; PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more
LISTEN_CHECK_S = 10.0  # how often the listening connection is asked whether it still answers
RECONNECT_MAX_S = 10.0
_log = logging.getLogger("opentasks.nodes")

NODE_FOR_UPDATE = "SELECT incarnation, heartbeat_us, expire_us FROM nodes WHERE node_id = $1 FOR UPDATE"
REGISTER = """
INSERT INTO nodes AS n (node_id, incarnation, address, started_us, heartbeat_us, expire_us)
VALUES ($1, $2, $3, $4, $4, $5)
ON CONFLICT (node_id) DO UPDATE SET incarnation = EXCLUDED.incarnation, address = EXCLUDED.address,
    started_us = EXCLUDED.started_us, heartbeat_us = EXCLUDED.heartbeat_us, expire_us = EXCLUDED.expire_us
"""
NODE_IS = "SELECT 1 FROM nodes WHERE node_id = $1 AND incarnation = $2 FOR SHARE"
BEAT = "UPDATE nodes SET address = $2, heartbeat_us = $3, expire_us = $4 WHERE node_id = $1"
FORGET_NODES = "DELETE FROM nodes WHERE expire_us < $1"
NODES = """
SELECT n.node_id, n.address, n.started_us, n.heartbeat_us, n.expire_us,
    (SELECT count(*) FROM queue_owners o WHERE o.node_id = n.node_id) AS queues
FROM nodes n ORDER BY n.node_id
"""
RELEASE_ALL = "UPDATE queue_owners SET node_id = NULL WHERE node_id = $1"
LEAVE = "DELETE FROM nodes WHERE node_id = $1 AND incarnation = $2 RETURNING 1"
# A round: renew the node's own leases, take the wanted queues whose lease is free (released, or
# ended) and create the leases of wanted queues never held. Rows another session has locked are
# skipped, never waited for: a node frozen inside a claim (which locks its lease row) must not
# stall the rounds, and so the leases, of the others; its queue is taken in a later round.
RENEW = "UPDATE queue_owners SET expire_us = $2 WHERE node_id = $1"
TAKE = """
WITH free AS (
    SELECT o.queue_pk FROM queue_owners o
        JOIN queues q ON q.pk = o.queue_pk
        JOIN unnest($4::text[], $5::text[]) AS w (parent, queue_id)
        ON q.parent = w.parent AND q.queue_id = w.queue_id
    WHERE o.node_id IS NULL OR (o.node_id <> $1 AND o.expire_us <= $3)
    ORDER BY o.queue_pk
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE queue_owners o SET node_id = $1, epoch = o.epoch + 1, expire_us = $2
FROM free WHERE o.queue_pk = free.queue_pk
"""
CREATE = """
INSERT INTO queue_owners (queue_pk, node_id, epoch, expire_us)
SELECT q.pk, $1, 1, $2 FROM queues q
    JOIN unnest($3::text[], $4::text[]) AS w (parent, queue_id)
    ON q.parent = w.parent AND q.queue_id = w.queue_id
ORDER BY q.pk
ON CONFLICT (queue_pk) DO NOTHING
"""
HELD = """
SELECT q.parent, q.queue_id, o.epoch FROM queue_owners o JOIN queues q ON q.pk = o.queue_pk
WHERE o.node_id = $1
"""
RELEASE = """
UPDATE queue_owners o SET node_id = NULL
FROM queues q, unnest($2::text[], $3::text[]) AS w (parent, queue_id)
WHERE q.pk = o.queue_pk AND q.parent = w.parent AND q.queue_id = w.queue_id AND o.node_id = $1
"""
NOTIFY = f"SELECT pg_notify('{CHANNEL}', $1)"


class NodeRows:
    """Nodes and queue leases in the database, through the store's ``run`` (pool, errors)."""

    def __init__(self, run: Run[Any]) -> None:
        self._run = run

    async def heartbeat(
        self, node_id: str, incarnation: str, address: str, now: datetime, ttl: timedelta
    ) -> None:
        now_us, until = codec.to_micros(now), codec.to_micros(later(now, ttl))
        forget_us = codec.to_micros(now - FORGET_NODES_AFTER)

        async def run(conn: Conn) -> None:
            async with conn.transaction():
                row = await conn.fetchrow(NODE_FOR_UPDATE, node_id)
                if row is not None and row["incarnation"] == incarnation:
                    await conn.execute(BEAT, node_id, address, now_us, until)
                else:
                    if row is not None and row["expire_us"] > now_us:
                        raise node_id_in_use(node_id, codec.from_micros(row["heartbeat_us"]))
                    await conn.execute(RELEASE_ALL, node_id)  # what a gone incarnation held
                    await conn.execute(REGISTER, node_id, incarnation, address, now_us, until)
            await conn.execute(FORGET_NODES, forget_us)

        await self._run("record the node's heartbeat", run)

    async def leave(self, node_id: str, incarnation: str) -> None:
        async def run(conn: Conn) -> None:
            async with conn.transaction():
                if await conn.fetchval(LEAVE, node_id, incarnation) is not None:
                    await conn.execute(RELEASE_ALL, node_id)

        await self._run("remove the node", run)

    async def nodes(self) -> list[NodeInfo]:
        async def run(conn: Conn) -> list[NodeInfo]:
            return [
                NodeInfo(
                    row["node_id"],
                    row["address"],
                    codec.from_micros(row["started_us"]),
                    codec.from_micros(row["heartbeat_us"]),
                    codec.from_micros(row["expire_us"]),
                    int(row["queues"]),
                )
                for row in await conn.fetch(NODES)
            ]

        result: list[NodeInfo] = await self._run("list the nodes", run)
        return result

    async def own_queues(
        self, node_id: str, incarnation: str, wanted: Collection[QueueName], now: datetime, ttl: timedelta
    ) -> dict[QueueName, Fence]:
        until, now_us = codec.to_micros(later(now, ttl)), codec.to_micros(now)
        parents, ids = _columns(wanted)

        async def run(conn: Conn) -> dict[QueueName, Fence]:
            async with conn.transaction():
                if await conn.fetchval(NODE_IS, node_id, incarnation) is None:
                    return {}  # another process has this node ID now
                await conn.execute(RENEW, node_id, until)
                if ids:
                    await conn.execute(TAKE, node_id, until, now_us, parents, ids)
                    await conn.execute(CREATE, node_id, until, parents, ids)
                held = await conn.fetch(HELD, node_id)
            return {QueueName.in_location(row[0], row[1]): Fence(node_id, int(row[2])) for row in held}

        result: dict[QueueName, Fence] = await self._run("renew the node's queues", run)
        return result

    async def release_queues(self, node_id: str, queues: Collection[QueueName]) -> None:
        parents, ids = _columns(queues)
        if not ids:
            return

        async def run(conn: Conn) -> None:
            await conn.execute(RELEASE, node_id, parents, ids)

        await self._run("release queues", run)

    async def notify(self, messages: list[str]) -> None:
        payloads = _payloads(messages)

        async def run(conn: Conn) -> None:
            for payload in payloads:
                await conn.execute(NOTIFY, payload)

        await self._run("signal other nodes", run)


class Listener:
    """One connection that LISTENs for signals, kept open: checked every
    :data:`LISTEN_CHECK_S`, reconnected with backoff when lost, and ``on_gap`` called whenever
    signals may have been missed."""

    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection[asyncpg.Record]]], where: str
    ) -> None:
        self._connect = connect
        self._where = where
        self._listeners: list[tuple[SignalListener, Callable[[], None]]] = []
        self._conn: Connection | None = None
        self._lost = asyncio.Event()
        self._closing = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def add(self, listener: SignalListener, on_gap: Callable[[], None]) -> None:
        """Deliver signals to ``listener`` from now on (connecting first if needed)."""
        self._listeners.append((listener, on_gap))
        if self._keeper is None:
            await self._listen()  # the first connection is made before returning: no signal missed
            self._keeper = asyncio.ensure_future(self._keep())

    async def close(self) -> None:
        self._closing.set()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        await self._drop()

    async def _listen(self) -> None:
        self._lost.clear()
        conn = await self._connect()
        conn.add_termination_listener(lambda _: self._lost.set())
        await conn.add_listener(CHANNEL, self._notified)
        self._conn = conn

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        messages = str(payload).split("\n")
        for listener, _ in self._listeners:
            listener(messages)

    def _gap(self) -> None:
        for _, on_gap in self._listeners:
            on_gap()

    async def _keep(self) -> None:
        while not self._closing.is_set():
            try:
                if not await self._alive():
                    await self._reconnect()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the keeper die: without it gaps go unreported
                _log.exception("the listener of other nodes' signals failed; reconnecting")
                await self._reconnect()

    async def _alive(self) -> bool:
        """Wait a check interval (or until the connection is lost); whether it still answers."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LISTEN_CHECK_S):
                await self._lost.wait()
        conn = self._conn
        if self._lost.is_set() or conn is None or conn.is_closed():
            return False
        try:
            await conn.execute("SELECT 1", timeout=LISTEN_CHECK_S / 2)
        except DRIVER_ERRORS:
            return False
        return True

    async def _reconnect(self) -> None:
        await self._drop()
        wait = 0.5
        while not self._closing.is_set():
            self._gap()  # until signals flow again, the node looks for work by itself
            try:
                await self._listen()
            except DRIVER_ERRORS as error:
                _log.warning(
                    "lost the signals of other nodes (%s: %s); looking for work every %g s meanwhile",
                    self._where,
                    reason(error),
                    wait,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._closing.wait()
                wait = min(wait * 2, RECONNECT_MAX_S)
                continue
            self._gap()  # what was sent while reconnecting is lost: look once more
            return

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(*DRIVER_ERRORS):
                async with asyncio.timeout(2):
                    await conn.close()
            if not conn.is_closed():
                conn.terminate()


def _columns(names: Collection[QueueName]) -> tuple[list[str], list[str]]:
    return [str(name.parent) for name in names], [name.queue_id for name in names]


def _payloads(messages: list[str]) -> list[str]:
    """``messages`` joined by newlines into as few payloads as PostgreSQL accepts."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for message in messages:
        length = len(message.encode()) + 1
        if current and size + length > PAYLOAD_LIMIT:
            payloads.append("\n".join(current))
            current, size = [], 0
        current.append(message)
        size += length
    if current:
        payloads.append("\n".join(current))
    return payloads
