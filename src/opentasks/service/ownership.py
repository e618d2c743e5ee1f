"""This node's share of the queues: heartbeats, leases on the queues it should dispatch, and
self-fencing when it can no longer prove them.

Each round the node renews its heartbeat, reads the live nodes and the queues, computes by
rendezvous hashing which queues it should hold, renews and takes leases on them, and hands
back the ones another node should now hold. It tells the dispatcher which queues it holds,
with their fences, after every round. When rounds fail for longer than the lease allows, it
tells the dispatcher it holds nothing, before any other node may take those queues.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opentasks.clock import Clock
from opentasks.domain.names import QueueName
from opentasks.domain.ownership import LeaseTiming, preferred_queues
from opentasks.domain.queue import Queue
from opentasks.storage.base import Fence, Store
from opentasks.throttled_log import ThrottledLog

_log = logging.getLogger("opentasks.nodes")


def default_node_id() -> str:
    """``host-pid-xxxx``: unique per process, readable in ``opentasks nodes list``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass(frozen=True)
class NodeSettings:
    """Who this node is and how it keeps its queues."""

    node_id: str = field(default_factory=default_node_id)
    address: str = ""
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)
    """This process: another live process with the same node ID is refused."""


@dataclass(frozen=True)
class Holdings:
    """The queues this node holds after a round, with their fences and current settings."""

    fences: dict[QueueName, Fence]
    queues: dict[QueueName, Queue]


OnHoldings = Callable[[Holdings], Awaitable[None]]


class Ownership:
    """Keeps this node's leases; :meth:`run` loops, :meth:`round` is one step (for tests)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: NodeSettings,
        on_holdings: OnHoldings,
        on_nodes_changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings
        self.address = settings.address  # set once the server's ports are known
        self._on_holdings = on_holdings
        self._on_nodes_changed = on_nodes_changed
        self._poke = asyncio.Event()
        self._fenced_after: float | None = None  # monotonic; None until the first round
        self._joined = False
        self.held: dict[QueueName, Fence] = {}
        self.known: set[QueueName] = set()  # the queues that existed at the last round
        self._errors = ThrottledLog(_log, clock.monotonic, interval_s=30.0)

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    def proven(self) -> bool:
        """Whether this node's leases are still provably its own (it may dispatch)."""
        return self._fenced_after is not None and self._clock.monotonic() < self._fenced_after

    def poke(self) -> None:
        """Run a round now (nodes changed, a queue appeared)."""
        self._poke.set()

    async def round(self) -> None:
        """Compute the wanted queues, renew and take leases, hand back the rest, heartbeat.

        The heartbeat comes last: a node whose rounds fail halfway is soon seen as gone, so its
        share of the queues goes to nodes that can dispatch it."""
        store, timing, me = self._store, self.settings.timing, self.node_id
        started = self._clock.monotonic()
        now = self._clock.now()
        incarnation = self.settings.incarnation
        if not self._joined:  # register first: refused while another process has this node ID
            await store.heartbeat(me, incarnation, self.address, now, timing.ttl)
        live = [node.node_id for node in await store.nodes() if node.expires > now]
        queues = {queue.name: queue for queue in await store.all_queues()}
        self.known = set(queues)
        wanted = preferred_queues(me, [str(name) for name in queues], live)
        held = await store.own_queues(
            me, incarnation, [n for n in queues if str(n) in wanted], now, timing.ttl
        )
        surplus = [name for name in held if str(name) not in wanted]
        kept = {name: fence for name, fence in held.items() if str(name) in wanted and name in queues}
        self._fenced_after = timing.fenced_after(started)
        self.held = kept
        await self._on_holdings(Holdings(kept, {name: queues[name] for name in kept}))
        if surplus:  # the dispatcher has stopped claiming them: let their new owners take them
            await store.release_queues(me, surplus)
        await store.heartbeat(me, incarnation, self.address, now, timing.ttl)
        if surplus or not self._joined:
            self._joined = True
            self._on_nodes_changed()

    async def run(self) -> None:
        """Rounds every heartbeat (or sooner when poked) until cancelled. A failed round is
        retried; once the leases can no longer be proven, the dispatcher is told it holds
        nothing."""
        timing = self.settings.timing
        heartbeat, limit = timing.heartbeat.total_seconds(), (timing.ttl - timing.margin).total_seconds()
        while True:
            self._poke.clear()
            try:
                # A round that hangs (a database that stopped answering) counts as failed.
                async with asyncio.timeout(limit):
                    await self.round()
            except Exception as error:
                reason = str(error) or f"no answer within {limit:g} s"
                self._errors.warning("node %s could not renew its queues: %s", self.node_id, reason)
                if self.held and not self.proven():
                    _log.error(
                        "node %s stops dispatching its %d queue(s): it could not renew their leases",
                        self.node_id,
                        len(self.held),
                    )
                    self.held = {}
                    await self._on_holdings(Holdings({}, {}))
            await self._clock.wait_for(self._poke, heartbeat)

    async def leave(self) -> None:
        """Hand every queue back at once and leave the list of nodes (a clean stop)."""
        self.held = {}
        self._fenced_after = None
        await self._store.leave(self.node_id, self.settings.incarnation)
        self._on_nodes_changed()
