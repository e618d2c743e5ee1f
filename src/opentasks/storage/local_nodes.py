"""Nodes, queue ownership and signals kept in the process, for stores no other process opens.

The memory and SQLite stores mix this in. With one server per store there is one node, which
holds every queue; several dispatchers sharing one :class:`~opentasks.storage.memory.MemoryStore`
behave as nodes of a cluster, which lets tests drive hand-overs in virtual time.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentasks.domain.limits import later
from opentasks.domain.names import QueueName
from opentasks.storage.base import FORGET_NODES_AFTER, Fence, NodeInfo, SignalListener, node_id_in_use


@dataclass
class _Lease:
    node_id: str | None  # None once released
    epoch: int
    expires: datetime


@dataclass
class _Node:
    incarnation: str
    address: str
    started: datetime
    heartbeat: datetime
    expires: datetime


class LocalNodes:
    """The node half of :class:`~opentasks.storage.base.Store`, in dictionaries."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}
        self._leases: dict[QueueName, _Lease] = {}
        self._listeners: list[SignalListener] = []
        self._page_token_key = secrets.token_bytes(32)

    async def _existing_queues(self, names: Collection[QueueName]) -> set[QueueName]:
        """Those of ``names`` that are queues of the store (the store mixing this in says)."""
        raise NotImplementedError

    def _forget_queue(self, name: QueueName) -> None:
        """A deleted queue's lease goes with it (a new queue of that name starts at epoch 1)."""
        self._leases.pop(name, None)

    def _forget_nodes(self) -> None:
        """Every server that ran on this store is gone (the only server restarted)."""
        self._leases.clear()
        self._nodes.clear()

    def _holds(self, fence: Fence | None, queue: QueueName, now: datetime) -> bool:
        if fence is None:
            return True
        lease = self._leases.get(queue)
        return (
            lease is not None
            and lease.node_id == fence.node_id
            and lease.epoch == fence.epoch
            and lease.expires > now
        )

    async def heartbeat(
        self, node_id: str, incarnation: str, address: str, now: datetime, ttl: timedelta
    ) -> None:
        node = self._nodes.get(node_id)
        if node is not None and node.incarnation != incarnation:
            if node.expires > now:
                raise node_id_in_use(node_id, node.heartbeat)
            await self.leave(node_id, node.incarnation)  # gone: its holds end with it
            node = None
        if node is None:
            self._nodes[node_id] = _Node(incarnation, address, now, now, later(now, ttl))
        else:
            node.address, node.heartbeat, node.expires = address, now, later(now, ttl)
        for gone in [n for n, info in self._nodes.items() if info.expires < now - FORGET_NODES_AFTER]:
            del self._nodes[gone]

    async def leave(self, node_id: str, incarnation: str) -> None:
        node = self._nodes.get(node_id)
        if node is None or node.incarnation != incarnation:
            return  # another process's node ID (one refused at start never joined)
        del self._nodes[node_id]
        for lease in self._leases.values():
            if lease.node_id == node_id:
                lease.node_id = None

    async def nodes(self) -> list[NodeInfo]:
        held: dict[str, int] = {}
        for lease in self._leases.values():
            if lease.node_id is not None:
                held[lease.node_id] = held.get(lease.node_id, 0) + 1
        return [
            NodeInfo(node_id, n.address, n.started, n.heartbeat, n.expires, held.get(node_id, 0))
            for node_id, n in sorted(self._nodes.items())
        ]

    async def own_queues(
        self, node_id: str, incarnation: str, wanted: Collection[QueueName], now: datetime, ttl: timedelta
    ) -> dict[QueueName, Fence]:
        node = self._nodes.get(node_id)
        if node is None or node.incarnation != incarnation:
            return {}
        until = later(now, ttl)
        unleased = await self._existing_queues([name for name in wanted if name not in self._leases])
        for name in wanted:
            lease = self._leases.get(name)
            if lease is None:
                if name in unleased:
                    self._leases[name] = _Lease(node_id, 1, until)
            elif lease.node_id != node_id and (lease.node_id is None or lease.expires <= now):
                lease.node_id, lease.epoch = node_id, lease.epoch + 1
        held: dict[QueueName, Fence] = {}
        for name, lease in self._leases.items():
            if lease.node_id == node_id:
                lease.expires = until
                held[name] = Fence(node_id, lease.epoch)
        return held

    async def release_queues(self, node_id: str, queues: Collection[QueueName]) -> None:
        for name in queues:
            lease = self._leases.get(name)
            if lease is not None and lease.node_id == node_id:
                lease.node_id = None

    async def page_token_key(self) -> bytes:
        return self._page_token_key

    async def notify(self, messages: list[str]) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.call_soon(listener, list(messages))

    async def subscribe(self, listener: SignalListener, on_gap: Callable[[], None]) -> None:
        del on_gap  # nothing sent in the process is ever lost
        self._listeners.append(listener)
