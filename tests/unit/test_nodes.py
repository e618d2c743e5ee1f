"""Several nodes sharing one store, in one process on a fake clock: ownership by rendezvous
hashing, hand-over when a node leaves or dies, fencing, limits across the hand-over, and
wake-ups between nodes."""

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta

import pytest

from opentasks.clock import FakeClock
from opentasks.domain.names import QueueName
from opentasks.domain.ownership import LeaseTiming, preferred_owner, preferred_queues
from opentasks.domain.queue import Queue, QueueState, RateLimits
from opentasks.errors import Unavailable
from opentasks.service.dispatcher import DispatchSettings
from opentasks.service.ownership import NodeSettings
from opentasks.storage.base import Fence, NodeInfo
from opentasks.storage.memory import MemoryStore
from tests.unit.test_dispatcher import PARENT, Q, ScriptedPusher, World
from tests.unit.test_dispatcher_resilience import until

TTL_S = LeaseTiming().ttl.total_seconds()


def node(store: MemoryStore, clock: FakeClock, node_id: str, pusher: ScriptedPusher | None = None) -> World:
    return World(
        pusher,
        clock=clock,
        store=store,
        node=NodeSettings(node_id, f"{node_id}:8123"),
        settings=DispatchSettings(claim_batch=50),
    )


class Cluster:
    def __init__(self, *node_ids: str) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.nodes = {node_id: node(self.store, self.clock, node_id) for node_id in node_ids}

    async def start(self, *, loop: bool = False) -> None:
        for world in self.nodes.values():
            await world.dispatcher.start(loop=loop)
        await self.rounds()

    async def rounds(self, *node_ids: str) -> None:
        for node_id in node_ids or tuple(self.nodes):
            await self.nodes[node_id].dispatcher.ownership.round()

    async def queue(self, **fields: object) -> tuple[str, str]:
        """Create queue Q through node "a" and let the nodes share it out: (its holder, another
        node)."""
        await self.nodes["a"].queue(**fields)
        await self.rounds()
        [holder] = self.holders()[Q]
        return holder, next(node_id for node_id in self.nodes if node_id != holder)

    def holders(self) -> dict[QueueName, list[str]]:
        held: dict[QueueName, list[str]] = {}
        for node_id, world in self.nodes.items():
            for name in world.dispatcher.ownership.held:
                held.setdefault(name, []).append(node_id)
        return held


def test_rendezvous_spreads_queues_evenly_and_moves_few_when_a_node_leaves() -> None:
    queues = [f"projects/p/locations/l/queues/q{i}" for i in range(3000)]
    nodes = ["alpha", "beta", "gamma"]
    owners = {queue: preferred_owner(queue, nodes) for queue in queues}
    counts = Counter(owners.values())
    assert all(abs(count - 1000) <= 200 for count in counts.values()), counts
    after = {queue: preferred_owner(queue, ["alpha", "gamma"]) for queue in queues}
    moved = [queue for queue in queues if after[queue] != owners[queue]]
    assert all(owners[queue] == "beta" for queue in moved)  # only beta's queues move
    assert preferred_queues("alpha", queues, random.sample(nodes, 3)) == {
        q for q, owner in owners.items() if owner == "alpha"
    }
    assert preferred_owner("q", []) is None


async def test_every_queue_has_exactly_one_holder() -> None:
    cluster = Cluster("a", "b", "c")
    await cluster.start()
    admin = cluster.nodes["a"]
    for i in range(60):
        await admin.queues.create_queue(PARENT, Queue(QueueName("p", "l", f"q{i}")))
    await cluster.rounds()
    await cluster.rounds()  # the second round sees every node's heartbeat
    holders = cluster.holders()
    assert len(holders) == 60 and all(len(held) == 1 for held in holders.values())
    assert set(Counter(held[0] for held in holders.values())) == {"a", "b", "c"}


async def test_tasks_created_on_any_node_are_dispatched_once_by_the_holder() -> None:
    cluster = Cluster("a", "b", "c")
    await cluster.start()
    holder, _ = await cluster.queue()
    for world in cluster.nodes.values():
        for _ in range(3):
            await world.task()
    for world in cluster.nodes.values():
        await world.step()
    sent = {node_id: len(world.pusher.sent) for node_id, world in cluster.nodes.items()}
    assert sent == {node_id: 9 if node_id == holder else 0 for node_id in cluster.nodes}


async def test_a_node_that_leaves_hands_its_queues_over_at_once() -> None:
    cluster = Cluster("a", "b")
    await cluster.start()
    holder, other = await cluster.queue()
    await cluster.nodes[holder].dispatcher.stop()
    await cluster.rounds(other)
    assert cluster.holders() == {Q: [other]}
    await cluster.nodes[other].task()
    cluster.clock.advance(0.1)  # a bucket taken over starts empty
    assert await cluster.nodes[other].step() == 1


async def test_a_dead_nodes_queues_move_when_its_lease_ends_and_it_is_fenced() -> None:
    cluster = Cluster("a", "b")
    await cluster.start()
    holder, other = await cluster.queue()
    dead, alive = cluster.nodes[holder], cluster.nodes[other]
    cluster.clock.advance(TTL_S - 0.5)  # the holder falls silent; its lease still runs
    await cluster.rounds(other)
    assert cluster.holders()[Q] == [holder]
    cluster.clock.advance(0.5)
    await cluster.rounds(other)
    assert alive.dispatcher.ownership.held[Q].epoch == 2
    # The silent node comes back believing it holds the queue: its claims are refused.
    await alive.task()
    [worker] = dead.dispatcher._workers.values()
    assert (await worker.pass_once())[0] == 0 and worker.fenced
    cluster.clock.advance(0.1)  # a bucket taken over starts empty
    assert await alive.step() == 1


async def test_the_new_holder_counts_the_previous_holders_attempts_against_the_cap() -> None:
    cluster = Cluster("a", "b")
    cluster.nodes = {
        node_id: node(cluster.store, cluster.clock, node_id, ScriptedPusher()) for node_id in ("a", "b")
    }
    await cluster.start()
    limits = RateLimits(max_concurrent_dispatches=5, max_dispatches_per_second=500, max_burst_size=100)
    holder, other = await cluster.queue(rate_limits=limits)
    old, new = cluster.nodes[holder], cluster.nodes[other]
    old.pusher.hold = True
    for _ in range(10):
        await old.task()
    assert (await old.dispatcher.run_once()).started == 5
    await old.dispatcher.ownership.leave()  # hands over while its five attempts are in flight
    await cluster.rounds(other)
    cluster.clock.advance(1)  # the taken-over bucket starts empty; let it earn tokens
    assert (await new.dispatcher.run_once()).started == 0  # all five slots are the old holder's
    runner = old.dispatcher._runner
    await old.pusher.release(2)
    await until(lambda: len(runner.jobs) == 3)
    await runner.results.flush()
    cluster.clock.advance(1)
    assert (await new.dispatcher.run_once()).started == 2
    await old.pusher.release(3)
    await old.dispatcher.settle()
    await new.dispatcher.settle()


@pytest.mark.parametrize("via", ["task", "queue"])
async def test_a_change_through_one_node_wakes_the_holder_on_another(via: str) -> None:
    cluster = Cluster("a", "b")
    await cluster.start(loop=True)
    admin = cluster.nodes["a"]
    await admin.queue()
    if via == "queue":
        await admin.queues.pause_queue(Q)
    await cluster.rounds()
    await cluster.rounds()
    [holder] = cluster.holders()[Q]
    other = cluster.nodes["b" if holder == "a" else "a"]
    if via == "queue":
        await other.task()
        await other.queues.resume_queue(Q)  # the resume reaches the holder through a signal
    else:
        await other.task()  # the new task reaches the holder through a signal
    sent = cluster.nodes[holder].pusher.sent
    await until(lambda: len(sent) == 1)
    for world in cluster.nodes.values():
        await world.dispatcher.stop()


class Unreachable(MemoryStore):
    """Its node half fails while ``down`` (a node cut off from the database)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise Unavailable("The database could not renew the node's queues: connection refused.")

    async def nodes(self) -> list[NodeInfo]:
        self._check()
        return await super().nodes()

    async def own_queues(
        self, node_id: str, incarnation: str, wanted: Collection[QueueName], now: datetime, ttl: timedelta
    ) -> dict[QueueName, Fence]:
        self._check()
        return await super().own_queues(node_id, incarnation, wanted, now, ttl)

    async def heartbeat(
        self, node_id: str, incarnation: str, address: str, now: datetime, ttl: timedelta
    ) -> None:
        self._check()
        await super().heartbeat(node_id, incarnation, address, now, ttl)


async def test_a_node_that_cannot_renew_stops_dispatching_before_its_lease_ends_and_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, store = FakeClock(), Unreachable()
    world = node(store, clock, "a")
    await world.dispatcher.start(loop=True)
    await world.queue(rate_limits=RateLimits(max_dispatches_per_second=1, max_burst_size=1))
    for _ in range(20):
        await world.task()
    await until(lambda: len(world.pusher.sent) > 0)
    await world.dispatcher.settle()
    burst = len(world.pusher.sent)  # the full bucket's burst went out at once
    store.down = True
    for _ in range(12):  # half a second at a time, for 6 s
        await clock.sleeping()
        clock.advance(0.5)
    # The last renewal was at t = 0; the node stops at 4.5 s (3/4 of the 6 s lease), and at
    # one dispatch per second at most five more went out before.
    assert 1 <= len(world.pusher.sent) - burst <= 5
    assert "stops dispatching its 1 queue(s)" in caplog.text
    assert world.dispatcher.ownership.held == {}
    stopped = len(world.pusher.sent)
    for _ in range(6):
        await clock.sleeping()
        clock.advance(1)
    assert len(world.pusher.sent) == stopped
    store.down = False
    for _ in range(6):
        await clock.sleeping()
        clock.advance(1)
    await until(lambda: len(world.pusher.sent) > stopped)
    await world.dispatcher.stop()


async def test_slots_freed_by_the_previous_holders_attempts_are_used() -> None:
    """Cap 10 (claims in twos): the old holder has 9 attempts in flight at the hand-over. When
    they end, nothing on the new holder is told; it counts them again by itself."""
    clock, store = FakeClock(), MemoryStore()
    old, new = node(store, clock, "old", ScriptedPusher()), node(store, clock, "new", ScriptedPusher())
    await old.dispatcher.start(loop=False)
    await old.queue(rate_limits=RateLimits(max_concurrent_dispatches=10, max_dispatches_per_second=500))
    old.pusher.hold = True
    for _ in range(30):
        await old.task()
    assert (await old.dispatcher.run_once()).started == 10
    runner = old.dispatcher._runner
    await old.pusher.release(1)  # one answers; nine stay in flight
    await until(lambda: len(runner.jobs) == 9)
    await runner.results.flush()
    in_flight = 9
    await old.dispatcher.ownership.leave()
    new.pusher.hold = True
    await new.dispatcher.start(loop=True)
    await clock.sleeping(count=2)  # its bucket starts empty (a queue taken over)
    clock.advance(0.1)
    await until(lambda: len(new.pusher.sent) == 10 - in_flight)  # what the cap leaves it
    await new.pusher.release(10)  # its own attempts end: no slot of its own frees enough
    await old.pusher.release(10)  # then the old holder's end, unbeknown to the new holder
    await old.dispatcher.settle()
    new.pusher.hold = False
    for _ in range(3):
        await clock.sleeping(count=2)
        clock.advance(1)  # the new holder counts the old holder's attempts again each second
    await until(lambda: len(new.pusher.sent) >= 10)
    await new.dispatcher.stop()


class Deaf(MemoryStore):
    """Signals between nodes are lost (a NOTIFY that failed)."""

    async def notify(self, messages: list[str]) -> None:
        return None


async def test_changes_whose_signals_are_lost_reach_the_holder_within_a_round() -> None:
    clock, store = FakeClock(), Deaf()
    a, b = node(store, clock, "a"), node(store, clock, "b")
    for world in (a, b):
        await world.dispatcher.start(loop=True)
    await a.queue()
    await a.dispatcher.ownership.round()
    await b.dispatcher.ownership.round()
    await a.dispatcher.ownership.round()
    [holder] = {n for n, w in (("a", a), ("b", b)) if Q in w.dispatcher.ownership.held}
    holding, other = (a, b) if holder == "a" else (b, a)
    await other.task()  # its signal is lost: the holder's next round finds the task due
    for _ in range(2):
        await clock.sleeping(count=2)
        clock.advance(1.5)
    await until(lambda: len(holding.pusher.sent) == 1)
    await other.queues.pause_queue(Q)  # lost too: the next round reads the queue paused
    for _ in range(2):
        await clock.sleeping(count=2)
        clock.advance(1.5)
    await until(lambda: holding.dispatcher._workers[Q].queue.state == QueueState.PAUSED)
    await other.task()
    for _ in range(2):
        await clock.sleeping(count=2)
        clock.advance(1.5)
    assert len(holding.pusher.sent) == 1
    for world in (a, b):
        await world.dispatcher.stop()


async def test_a_pause_made_while_a_round_takes_the_queue_is_applied() -> None:
    """The round read the queue running; the pause lands before the worker exists."""

    class PauseDuringRound(MemoryStore):
        pause: Callable[[], Awaitable[object]] | None = None

        async def own_queues(
            self, node_id: str, incarnation: str, wanted: Collection[QueueName], now: datetime, ttl: timedelta
        ) -> dict[QueueName, Fence]:
            if self.pause is not None:
                pause, self.pause = self.pause, None
                await pause()
                for _ in range(5):  # the pause's own reload runs now, before any worker exists
                    await asyncio.sleep(0)
            return await super().own_queues(node_id, incarnation, wanted, now, ttl)

    clock, store = FakeClock(), PauseDuringRound()
    world = node(store, clock, "a")
    await world.dispatcher.start(loop=False)
    await world.queues.create_queue(PARENT, Queue(Q))
    store.pause = lambda: world.queues.pause_queue(Q)
    await world.dispatcher.settle()  # the new queue's round runs, and the pause lands inside it
    await world.task()
    assert await world.step() == 0
    assert world.dispatcher._workers[Q].queue.state == QueueState.PAUSED
