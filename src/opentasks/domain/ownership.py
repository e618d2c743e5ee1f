"""Which node dispatches which queue (pure): rendezvous hashing over the live nodes.

Every node computes the same answer from the same list of live nodes, so queues spread evenly
and, when a node joins or leaves, only the queues it gains or held move (about 1/N of them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta


def _weight(node_id: str, queue: str) -> int:
    digest = hashlib.blake2b(f"{node_id}\x00{queue}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_owner(queue: str, nodes: Iterable[str]) -> str | None:
    """The node that should dispatch ``queue`` (the highest weight); None without nodes.
    Ties (astronomically unlikely) go to the smaller node ID, so every node agrees."""
    best: tuple[int, str] | None = None
    for node in nodes:
        key = (_weight(node, queue), node)
        if best is None or key[0] > best[0] or (key[0] == best[0] and node < best[1]):
            best = key
    return None if best is None else best[1]


def preferred_queues(node_id: str, queues: Iterable[str], nodes: Iterable[str]) -> set[str]:
    """The queues among ``queues`` that ``node_id`` should dispatch, given the live ``nodes``
    (``node_id`` counts as live)."""
    live = sorted(set(nodes) | {node_id})
    return {queue for queue in queues if preferred_owner(queue, live) == node_id}


@dataclass(frozen=True)
class LeaseTiming:
    """How a node keeps its queues: it renews every ``heartbeat`` and its leases run for
    ``ttl`` from each renewal; it stops dispatching ``margin`` before a lease it could not
    renew ends (self-fencing), so it has stopped before another node may take the queue."""

    ttl: timedelta = timedelta(seconds=6)

    @property
    def heartbeat(self) -> timedelta:
        return self.ttl / 4

    @property
    def margin(self) -> timedelta:
        return self.ttl / 4

    def fenced_after(self, renewal_started: float) -> float:
        """The monotonic time at which a node whose last successful renewal was *sent* at
        ``renewal_started`` must stop claiming."""
        return renewal_started + (self.ttl - self.margin).total_seconds()
