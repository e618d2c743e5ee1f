"""What only the PostgreSQL store promises: a schema shared by nodes that start together, a refusal
of newer schemas, no blind lease release, bounded tombstone tables, and one-line errors."""

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import Queue, resolve_queue
from opentasks.domain.task import HttpRequest, TaskDraft, new_task
from opentasks.errors import AlreadyExists, Unavailable
from opentasks.storage.base import AttemptResult, Fence, StoreUnusable, Windows
from opentasks.storage.postgres import PostgresStore
from opentasks.storage.postgres_sql import latest_schema
from tests.contract.conftest import empty_postgres
from tests.contract.test_history_contract import KEEP, dead_letter
from tests.contract.test_store_contract import Q as HISTORY_Q
from tests.contract.test_store_contract import queue as history_queue

T0 = datetime(2030, 1, 1, tzinfo=UTC)
Q = QueueName("p", "l", "q")
GRACE = timedelta(seconds=30)
WINDOWS = Windows(task_tombstone_until=T0 + timedelta(hours=1), queue_tombstone_until=T0 + timedelta(days=7))


@pytest.fixture
async def fresh_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A DSN whose search_path is a new, empty schema (a database no server has opened yet)."""
    schema = f"fresh_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield f"{postgres_dsn}?search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    await empty_postgres(postgres_dsn)
    store = PostgresStore(postgres_dsn, pool_size=2)
    await store.open()
    yield store
    await store.close()


async def add(store: PostgresStore, task_id: str) -> None:
    draft = TaskDraft(name=f"{Q}/tasks/{task_id}", http_request=HttpRequest(url="https://example.com/x"))
    await store.create_task(new_task(draft, Q, T0, task_id, Limits()), T0)


async def schema_version(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row[0] for row in await conn.fetch("SELECT version FROM opentasks_schema")]
    finally:
        await conn.close()


async def test_nodes_opening_a_fresh_database_together_all_succeed(fresh_schema: str) -> None:
    """The advisory lock makes one migrate while the others wait and then find nothing to do."""
    stores = [PostgresStore(fresh_schema, pool_size=1) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        await stores[0].create_queue(resolve_queue(Queue(Q), Limits()), T0)
        assert [q.name for q in await stores[3].all_queues()] == [Q]
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    assert await schema_version(fresh_schema) == [latest_schema()]


async def test_opening_twice_keeps_one_schema_version(fresh_schema: str) -> None:
    for _ in range(2):
        store = PostgresStore(fresh_schema, pool_size=1)
        await store.open()
        await store.close()
    assert await schema_version(fresh_schema) == [latest_schema()]


async def test_a_schema_newer_than_the_code_is_refused(fresh_schema: str) -> None:
    store = PostgresStore(fresh_schema, pool_size=1)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(fresh_schema)
    await conn.execute("UPDATE opentasks_schema SET version = version + 1")
    await conn.close()
    newer = PostgresStore(fresh_schema, pool_size=1)
    with pytest.raises(StoreUnusable) as refused:
        await newer.open()
    message = str(refused.value)
    assert "\n" not in message
    assert f"schema version {latest_schema() + 1}, newer than this opentasks understands" in message
    assert "127.0.0.1:5432/" in message or "/opentasks_test" in message
    with pytest.raises(Unavailable, match="closed"):
        await newer.all_queues()


async def test_an_unreachable_database_is_one_line_naming_where() -> None:
    store = PostgresStore("postgresql://nobody@127.0.0.1:1/nowhere", connect_timeout=2)
    with pytest.raises(StoreUnusable) as refused:
        await store.open()
    message = str(refused.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1/nowhere: ")
    assert "\n" not in message


async def test_release_leases_releases_nothing_on_a_shared_database(pg: PostgresStore) -> None:
    """Other nodes may be sending the claimed tasks: their leases end by themselves."""
    await pg.create_queue(resolve_queue(Queue(Q), Limits()), T0)
    await add(pg, "a")
    assert [t.name.task_id for t in (await pg.claim_due_tasks(Q, T0, 10, GRACE)).tasks] == ["a"]
    assert await pg.release_leases() == 0
    assert (await pg.claim_due_tasks(Q, T0, 10, GRACE)).tasks == []


async def test_expired_tombstones_are_swept_and_live_ones_kept(pg: PostgresStore, postgres_dsn: str) -> None:
    await pg.create_queue(resolve_queue(Queue(Q), Limits()), T0)
    for task_id in ("old", "new"):
        await add(pg, task_id)
    await pg.delete_task(TaskName(Q, "old"), T0, WINDOWS)
    await pg.delete_task(TaskName(Q, "new"), T0, Windows(T0 + timedelta(days=1), T0))
    other = QueueName("p", "l", "gone")
    await pg.create_queue(resolve_queue(Queue(other), Limits()), T0)
    await pg.delete_queue(other, T0, WINDOWS)
    assert await pg.sweep_tombstones(T0 + timedelta(hours=1)) == 1  # "old" expired at exactly then
    assert await pg.sweep_tombstones(T0 + timedelta(days=7)) == 2  # "new" and the queue
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM task_tombstones") == 0
        assert await conn.fetchval("SELECT count(*) FROM queue_tombstones") == 0
    finally:
        await conn.close()


async def test_expired_history_is_swept_and_kept_history_stays(pg: PostgresStore, postgres_dsn: str) -> None:
    await pg.create_queue(history_queue(), T0)
    for task_id, keep in (("short", timedelta(hours=1)), ("long", timedelta(days=7))):
        await dead_letter(pg, task_id, dataclasses.replace(KEEP, history_until=T0 + keep))
    await pg.sweep_tombstones(T0 + timedelta(hours=2))
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT array_agg(task_id) FROM finished_tasks") == ["long"]
        assert await conn.fetchval("SELECT array_agg(task_id) FROM attempts") == ["long"]
    finally:
        await conn.close()
    assert await pg.dead_letter_counts(T0 + timedelta(hours=2)) == {HISTORY_Q: 1}


async def test_writes_sweep_expired_tombstones_in_the_background(
    pg: PostgresStore, postgres_dsn: str
) -> None:
    await pg.create_queue(resolve_queue(Queue(Q), Limits()), T0)
    await add(pg, "t")
    await pg.delete_task(TaskName(Q, "t"), T0, WINDOWS)
    later = T0 + timedelta(hours=2)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        for _ in range(100):  # a call more than a minute on starts a sweep, unless one is running
            await pg.claim_due_tasks(Q, later, 1, GRACE)
            if await conn.fetchval("SELECT count(*) FROM task_tombstones") == 0:
                break
            await conn.execute("SELECT pg_sleep(0.01)")
        assert await conn.fetchval("SELECT count(*) FROM task_tombstones") == 0
    finally:
        await conn.close()
    await add(pg, "t")  # the name is free again, as it was once the tombstone expired


async def test_driver_failures_are_unavailable_and_name_the_operation(
    fresh_schema: str,
) -> None:
    store = PostgresStore(fresh_schema, pool_size=1)
    await store.open()
    try:
        await store.create_queue(resolve_queue(Queue(Q), Limits()), T0)
        conn = await asyncpg.connect(fresh_schema)
        await conn.execute("DROP TABLE tasks CASCADE")
        await conn.close()
        draft = TaskDraft(name=f"{Q}/tasks/t", http_request=HttpRequest(url="https://example.com/x"))
        with pytest.raises(Unavailable) as failed:
            await store.create_task(new_task(draft, Q, T0, "t", Limits()), T0)
        assert str(failed.value).startswith("The database could not store the task: ")
        assert str(failed.value).endswith("Nothing was changed; retry.")
        with pytest.raises(Unavailable, match="could not record attempt results"):
            await store.finish_attempts([AttemptResult(TaskName(Q, "t"), 1, None)], WINDOWS)
    finally:
        await store.close()


async def test_a_terminated_connection_is_unavailable_then_replaced(
    pg: PostgresStore, postgres_dsn: str
) -> None:
    """A server restart or a killed backend: the call in progress fails as Unavailable, and the
    pool connects again for the next one."""
    await pg.create_queue(resolve_queue(Queue(Q), Limits()), T0)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'opentasks' AND datname = current_database()"
        )
    finally:
        await conn.close()
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(len(await pg.all_queues()))
        except Unavailable as error:
            assert "Nothing was changed; retry." in str(error)
            outcomes.append(-1)
    assert outcomes[-1] == 1
    assert await pg.probe() is None


async def test_a_reserved_name_and_a_live_one_are_both_already_exists(pg: PostgresStore) -> None:
    await pg.create_queue(resolve_queue(Queue(Q), Limits()), T0)
    await add(pg, "live")
    await add(pg, "done")
    await pg.delete_task(TaskName(Q, "done"), T0, WINDOWS)
    for task_id in ("live", "done"):
        with pytest.raises(AlreadyExists):
            await add(pg, task_id)


async def test_probe(pg: PostgresStore) -> None:
    assert await pg.probe() is None
    await pg.close()
    assert await pg.probe() == "the store is closed"


async def test_signals_reach_the_other_nodes_and_a_lost_listener_reports_the_gap(
    pg: PostgresStore, postgres_dsn: str
) -> None:
    other = PostgresStore(postgres_dsn, pool_size=1)
    await other.open()
    try:
        got: asyncio.Queue[list[str]] = asyncio.Queue()
        gaps = asyncio.Event()
        await other.subscribe(got.put_nowait, gaps.set)
        long = [f"t node-a 1 projects/p/locations/l/queues/q{i:04d}" + "x" * 60 for i in range(300)]
        await pg.notify(long)  # over PostgreSQL's payload limit: sent as several notifications
        received: list[str] = []
        while len(received) < len(long):
            received += await asyncio.wait_for(got.get(), 5)
        assert received == long
        # The listening connection dies (a database restart, a killed backend): the node hears
        # of the gap at once, and signals flow again on a new connection.
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        await asyncio.wait_for(gaps.wait(), 15)
        for _ in range(100):  # the new connection listens a moment after the gap is reported
            await pg.notify(["q node-a projects/p/locations/l/queues/again"])
            try:
                assert await asyncio.wait_for(got.get(), 0.2) == [
                    "q node-a projects/p/locations/l/queues/again"
                ]
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("signals did not flow again after the listener reconnected")
    finally:
        await other.close()


async def test_a_claim_waits_for_no_takeover_and_a_takeover_counts_its_tasks(pg: PostgresStore) -> None:
    await pg.create_queue(resolve_queue(Queue(Q), Limits()), T0)
    for task_id in ("a", "b", "c"):
        await add(pg, task_id)
    for node_id in ("n1", "n2"):
        await pg.heartbeat(node_id, "i1", node_id, T0, timedelta(days=1))
    fence = (await pg.own_queues("n1", "i1", [Q], T0, timedelta(seconds=6)))[Q]
    claimed = await pg.claim_due_tasks(Q, T0, 2, GRACE, fence)
    assert len(claimed.tasks) == 2 and not claimed.fenced
    taken = await pg.own_queues("n2", "i1", [Q], T0 + timedelta(seconds=6), timedelta(seconds=6))
    assert taken[Q].epoch == 2
    assert await pg.leased_tasks(Q, T0 + timedelta(seconds=6)) == 2
    assert (await pg.claim_due_tasks(Q, T0 + timedelta(seconds=6), 5, GRACE, fence)).fenced


async def test_a_frozen_session_holding_a_lease_row_does_not_stall_other_nodes(
    pg: PostgresStore, postgres_dsn: str
) -> None:
    """A node frozen inside a claim (SIGSTOP, a paused VM) keeps its lease row locked: other
    nodes' rounds skip that queue instead of waiting, and still renew their own leases."""
    other = QueueName("p", "l", "other")
    for name in (Q, other):
        await pg.create_queue(resolve_queue(Queue(name), Limits()), T0)
    for node_id in ("n1", "n2"):
        await pg.heartbeat(node_id, "i1", node_id, T0, timedelta(days=1))
    ttl = timedelta(seconds=6)
    await pg.own_queues("n1", "i1", [Q], T0, ttl)
    await pg.own_queues("n2", "i1", [other], T0, ttl)
    frozen = await asyncpg.connect(postgres_dsn)
    try:
        await frozen.execute("BEGIN")
        await frozen.execute(
            "SELECT 1 FROM queue_owners o JOIN queues q ON q.pk = o.queue_pk WHERE q.queue_id = 'q' FOR SHARE"
        )
        later = T0 + ttl  # n1's lease has ended: n2 would take Q, but its row is locked
        held = await asyncio.wait_for(pg.own_queues("n2", "i1", [Q, other], later, ttl), 5)
        assert held == {other: Fence("n2", 1)}
    finally:
        await frozen.execute("ROLLBACK")
        await frozen.close()
    assert (await pg.own_queues("n2", "i1", [Q, other], T0 + ttl, ttl))[Q] == Fence("n2", 2)
