"""Nodes, queue ownership with fencing, and signals between nodes. One contract, every backend."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue, resolve_queue
from opentasks.domain.task import HttpRequest, TaskDraft, new_task
from opentasks.errors import FailedPrecondition
from opentasks.storage.base import Fence, Store, Windows
from tests.contract.conftest import StoreFactory, shares_database

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TTL = timedelta(seconds=6)
GRACE = timedelta(seconds=30)
A, B, C = "node-a", "node-b", "node-c"
WINDOWS = Windows(task_tombstone_until=T0 + timedelta(hours=1), queue_tombstone_until=T0 + timedelta(days=7))


def queue_name(queue_id: str) -> QueueName:
    return QueueName("p", "l", queue_id)


Q1, Q2, MISSING = queue_name("q1"), queue_name("q2"), queue_name("missing")


@pytest.fixture
async def queues(store: Store) -> list[Queue]:
    """Queues Q1 and Q2, and nodes A and B registered (as process "i1") for a day."""
    for node_id in (A, B):
        await store.heartbeat(node_id, "i1", node_id, T0, timedelta(days=1))
    return [await store.create_queue(resolve_queue(Queue(name), Limits()), T0) for name in (Q1, Q2)]


async def add_task(store: Store, queue: QueueName, task_id: str) -> None:
    draft = TaskDraft(name=f"{queue}/tasks/{task_id}", http_request=HttpRequest(url="https://example.com/x"))
    await store.create_task(new_task(draft, queue, T0, task_id, Limits()), T0)


async def test_heartbeats_register_and_refresh_nodes(store: Store) -> None:
    await store.heartbeat(A, "i1", "10.0.0.1:8123", T0, TTL)
    await store.heartbeat(B, "i1", "10.0.0.2:8123", T0, TTL)
    await store.heartbeat(A, "i1", "10.0.0.1:9000", T0 + timedelta(seconds=2), TTL)
    nodes = {n.node_id: n for n in await store.nodes()}
    assert sorted(nodes) == [A, B]
    a = nodes[A]
    assert (a.address, a.started, a.heartbeat) == ("10.0.0.1:9000", T0, T0 + timedelta(seconds=2))
    assert a.expires == T0 + timedelta(seconds=2) + TTL
    assert a.queues == 0


async def test_a_queue_has_one_holder_until_its_lease_ends(store: Store, queues: list[Queue]) -> None:
    held = await store.own_queues(A, "i1", [Q1, Q2, MISSING], T0, TTL)
    assert held == {Q1: Fence(A, 1), Q2: Fence(A, 1)}  # a queue that does not exist is not taken
    assert await store.own_queues(B, "i1", [Q1], T0 + timedelta(seconds=1), TTL) == {}
    # A renews at +4 s: its leases now run to +10 s, so B cannot take them at +8 s.
    assert await store.own_queues(A, "i1", [], T0 + timedelta(seconds=4), TTL) == held
    assert await store.own_queues(B, "i1", [Q1], T0 + timedelta(seconds=8), TTL) == {}
    # A stops renewing: at +10 s its leases have ended and Q1 changes hands, one epoch up.
    assert await store.own_queues(B, "i1", [Q1], T0 + timedelta(seconds=10), TTL) == {Q1: Fence(B, 2)}
    assert await store.own_queues(A, "i1", [Q1, Q2], T0 + timedelta(seconds=11), TTL) == {Q2: Fence(A, 1)}


async def test_a_released_queue_can_be_taken_at_once(store: Store, queues: list[Queue]) -> None:
    await store.own_queues(A, "i1", [Q1, Q2], T0, TTL)
    await store.release_queues(A, [Q1])
    assert await store.own_queues(B, "i1", [Q1, Q2], T0 + timedelta(seconds=1), TTL) == {Q1: Fence(B, 2)}
    # Releasing a queue one does not hold changes nothing.
    await store.release_queues(A, [Q1])
    assert await store.own_queues(B, "i1", [], T0 + timedelta(seconds=2), TTL) == {Q1: Fence(B, 2)}


async def test_a_node_that_leaves_frees_its_queues(store: Store, queues: list[Queue]) -> None:
    await store.heartbeat(A, "i1", "a", T0, TTL)
    await store.heartbeat(B, "i1", "b", T0, TTL)
    await store.own_queues(A, "i1", [Q1, Q2], T0, TTL)
    assert {n.node_id: n.queues for n in await store.nodes()} == {A: 2, B: 0}
    await store.leave(A, "another process")  # not this node's incarnation: nothing happens
    assert {n.node_id: n.queues for n in await store.nodes()} == {A: 2, B: 0}
    await store.leave(A, "i1")
    assert [n.node_id for n in await store.nodes()] == [B]
    assert await store.own_queues(B, "i1", [Q1, Q2], T0 + timedelta(seconds=1), TTL) == {
        Q1: Fence(B, 2),
        Q2: Fence(B, 2),
    }


async def test_claims_under_a_stale_fence_take_nothing(store: Store, queues: list[Queue]) -> None:
    await add_task(store, Q1, "t1")
    await add_task(store, Q1, "t2")
    fence_a = (await store.own_queues(A, "i1", [Q1], T0, TTL))[Q1]
    first = await store.claim_due_tasks(Q1, T0, 1, GRACE, fence_a)
    assert [t.name.task_id for t in first.tasks] == ["t1"] and not first.fenced
    # A's lease runs out at +6 s: A may no longer claim, even before anyone takes the queue.
    late = await store.claim_due_tasks(Q1, T0 + TTL, 1, GRACE, fence_a)
    assert late.tasks == [] and late.fenced
    fence_b = (await store.own_queues(B, "i1", [Q1], T0 + TTL, TTL))[Q1]
    stale = await store.claim_due_tasks(Q1, T0 + TTL, 1, GRACE, fence_a)
    assert stale.tasks == [] and stale.fenced
    taken = await store.claim_due_tasks(Q1, T0 + TTL, 5, GRACE, fence_b)
    assert [t.name.task_id for t in taken.tasks] == ["t2"]  # t1 stays leased to A's attempt


async def test_leased_tasks_counts_attempts_whose_lease_runs(store: Store, queues: list[Queue]) -> None:
    for task_id in ("t1", "t2", "t3"):
        await add_task(store, Q1, task_id)
    assert await store.leased_tasks(Q1, T0) == 0
    claim = await store.claim_due_tasks(Q1, T0, 2, GRACE)
    assert await store.leased_tasks(Q1, T0 + timedelta(seconds=1)) == 2
    assert await store.leased_tasks(Q2, T0 + timedelta(seconds=1)) == 0
    assert await store.leased_tasks(MISSING, T0) == 0
    lease_end = T0 + timedelta(minutes=10) + GRACE  # the default dispatch deadline plus the grace
    assert await store.leased_tasks(Q1, lease_end) == 0
    await store.delete_task(claim.tasks[0].name, T0, WINDOWS)
    assert await store.leased_tasks(Q1, T0 + timedelta(seconds=1)) == 1


async def test_a_deleted_queue_is_no_longer_held(store: Store, queues: list[Queue]) -> None:
    await store.heartbeat(A, "i1", "a", T0, TTL)
    await store.own_queues(A, "i1", [Q1, Q2], T0, TTL)
    await store.delete_queue(Q1, T0, WINDOWS)
    assert await store.own_queues(A, "i1", [Q1], T0 + timedelta(seconds=1), TTL) == {Q2: Fence(A, 1)}
    assert {n.node_id: n.queues for n in await store.nodes()} == {A: 1, B: 0}


async def test_published_messages_reach_subscribers(store: Store) -> None:
    received: list[list[str]] = []
    arrived = asyncio.Event()

    def listener(messages: list[str]) -> None:
        received.append(messages)
        arrived.set()

    await store.subscribe(listener, lambda: None)
    await store.notify(["t p/l/q", "q p/l/r"])
    await asyncio.wait_for(arrived.wait(), 5)
    assert received == [["t p/l/q", "q p/l/r"]]


async def test_a_second_live_process_with_the_same_node_id_is_refused(
    store: Store, queues: list[Queue]
) -> None:
    await store.heartbeat(C, "first", "a", T0, TTL)
    await store.own_queues(C, "first", [Q1], T0, TTL)
    with pytest.raises(FailedPrecondition, match="--node-id node-c is in use by another running server"):
        await store.heartbeat(C, "second", "a", T0 + timedelta(seconds=1), TTL)
    # Once the first is gone (its heartbeat ran out), a new process takes the node ID over;
    # the queues the old one held are released, so taking them again counts the epoch up.
    await store.heartbeat(C, "second", "a2", T0 + TTL, TTL)
    node = {n.node_id: n for n in await store.nodes()}[C]
    assert (node.address, node.started, node.queues) == ("a2", T0 + TTL, 0)
    assert await store.own_queues(C, "first", [Q1], T0 + TTL, TTL) == {}  # the old process: nothing
    assert await store.own_queues(C, "second", [Q1], T0 + TTL, TTL) == {Q1: Fence(C, 2)}
    with pytest.raises(FailedPrecondition):
        await store.heartbeat(C, "first", "a", T0 + TTL + timedelta(seconds=1), TTL)


async def test_due_queues_are_those_with_a_task_due_now(store: Store, queues: list[Queue]) -> None:
    await add_task(store, Q1, "t1")  # due at T0
    assert await store.due_queues([Q1, Q2, MISSING], T0) == {Q1}
    assert await store.due_queues([Q2], T0) == set()
    await store.claim_due_tasks(Q1, T0, 5, GRACE)  # leased: due again when its lease ends
    assert await store.due_queues([Q1], T0 + timedelta(seconds=1)) == set()
    assert await store.due_queues([Q1], T0 + timedelta(minutes=10) + GRACE) == {Q1}
    assert await store.due_queues([], T0) == set()


async def test_every_store_of_a_database_shares_one_page_token_key(store_factory: StoreFactory) -> None:
    first, second = store_factory(), store_factory()
    await first.open()
    try:
        key = await first.page_token_key()
        assert len(key) >= 32 and await first.page_token_key() == key
        if shares_database(first):
            await second.open()
            try:
                assert await second.page_token_key() == key
            finally:
                await second.close()
    finally:
        await first.close()
