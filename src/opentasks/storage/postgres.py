"""The PostgreSQL store: one database shared by any number of servers (docs/postgresql.md).

* A connection pool (asyncpg); each operation borrows a connection for its few statements and
  holds no transaction open across anything else.
* Claims take due tasks with ``FOR UPDATE SKIP LOCKED``, so concurrent claimers (other nodes
  too) never take the same task, and write the new progress back in one statement.
* Attempt results are fenced on the claim's dispatch count inside their statement.
* Every acknowledged CreateTask, DeleteTask and queue change is committed as the server's
  ``synchronous_commit`` says. Claims and results commit with ``synchronous_commit = off``:
  losing one in a database crash only sends a task again, as SQLite's dispatch bookkeeping.
* Driver failures surface as :class:`~opentasks.errors.Unavailable` (nothing changed, retry),
  never as driver exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
from msgspec.structs import replace

from opentasks.domain.attempt import claim
from opentasks.domain.browse import (
    DEAD_LETTER_COUNT_CAP,
    DEFAULT_PAGE,
    DEFAULT_SCAN_LIMIT,
    BrowseCursor,
    BrowsePage,
    OutcomeMinute,
    TaskSearch,
    TaskState,
)
from opentasks.domain.history import AttemptRecord, FinishedTask, FinishReason, HistoryPage
from opentasks.domain.lease import lease_expiry
from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.queue import Queue, QueueState
from opentasks.domain.task import Task
from opentasks.errors import NotFound, Unavailable
from opentasks.storage import base, browsing, codec, rows
from opentasks.storage import postgres_sql as sql
from opentasks.storage.base import (
    AttemptResult,
    Claim,
    Fence,
    NodeInfo,
    QueueChange,
    SignalListener,
    StoreUnusable,
    TaskPage,
    Windows,
)
from opentasks.storage.browsing import BrowseScan
from opentasks.storage.postgres_inserts import TaskInserter, insert_one
from opentasks.storage.postgres_nodes import Listener, NodeRows
from opentasks.storage.postgres_sql import DRIVER_ERRORS, TRANSIENT, Conn

T = TypeVar("T")
_log = logging.getLogger("opentasks.storage")
_ATTEMPTS = 3  # runs of an operation that hit a deadlock or serialization failure
PROBE_TIMEOUT_S = 1.5
SWEEP_EVERY = timedelta(minutes=1)
SWEEP_BATCH = 1000
SWEEP_BATCHES = 10  # per table and sweep: a sweep never runs long
# Each statement is planned once per connection. They are all keyed lookups and range scans whose
# best plan does not depend on the values, and planning the grouped INSERT again at each run
# (PostgreSQL's default for a prepared statement's first runs) cost as much CPU as running it.
_SESSION = {
    "plan_cache_mode": "force_generic_plan",
    # The store never leaves a transaction open across anything but its own statements: a
    # session idle inside one this long belongs to a frozen or hung process, whose locks (a
    # lease row, claimed tasks) would otherwise hold other nodes back: ended within 3 s, its
    # claim is undone and the queue can change hands when its lease ends (6 s by default).
    "idle_in_transaction_session_timeout": "3s",
    # JIT compiles a statement whose estimated cost passes jit_above_cost, as the counts of a
    # queue of 1,000,000 tasks do: it spent 0.4-1.2 s compiling statements that run in 30 ms.
    # Every statement here is short; none gains from it.
    "jit": "off",
}


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Nothing to reset when a connection goes back to the pool: the store sets only
    transaction-local state (SET LOCAL, xact advisory locks), and the pool already rolls back
    an unfinished transaction. asyncpg's default reset would cost a round trip per operation."""


class PostgresStore:
    """A :class:`~opentasks.storage.base.Store` in a PostgreSQL database, shared by nodes: their
    heartbeats, queue leases and signals go through the database too
    (:mod:`opentasks.storage.postgres_nodes`)."""

    def __init__(
        self, dsn: str, *, pool_size: int = 10, connect_timeout: float = 10.0, migrate: bool = True
    ) -> None:
        self._dsn = dsn
        self._migrate = migrate  # False: only check that the schema is this code's (tools)
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._where = sql.target(dsn)
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._next_sweep_us: int | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._inserter = TaskInserter(self._run)
        self._nodes = NodeRows(self._run)
        self._listener = Listener(self._connect, self._where)

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate the schema.

        :class:`~opentasks.storage.base.StoreUnusable` (one line) when the database
        cannot be reached (host, port, database and the driver's reason) or its schema is newer
        than this code."""
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                reset=_keep_session,
                server_settings=self._server_settings(),
            )
        except DRIVER_ERRORS as error:
            raise StoreUnusable(
                f"cannot connect to PostgreSQL at {self._where}: {sql.reason(error)}"
            ) from None
        try:
            async with self._pool.acquire() as conn:
                if self._migrate:
                    await sql.migrate(conn, self._where)
                else:
                    await sql.check_schema(conn, self._where)
        except DRIVER_ERRORS as error:
            await self.close()
            raise StoreUnusable(
                f"cannot prepare the schema of the PostgreSQL database {self._where}: {sql.reason(error)}"
            ) from None
        except BaseException:
            await self.close()
            raise

    def _server_settings(self) -> dict[str, str]:
        named = "application_name" in parse_qs(urlsplit(self._dsn).query)
        return {**_SESSION, **({} if named else {"application_name": "opentasks"})}

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        """A connection of its own, outside the pool (the one that LISTENs for signals)."""
        return await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, server_settings=self._server_settings()
        )

    async def close(self) -> None:
        await self._listener.close()
        await self._inserter.drain()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def probe(self) -> str | None:
        """Why the store cannot serve right now (None when it can): a ``SELECT 1`` through the
        pool must answer within a short timeout (for readiness checks)."""
        pool = self._pool
        if pool is None:
            return "the store is closed"
        try:
            async with pool.acquire(timeout=PROBE_TIMEOUT_S) as conn:
                await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)
        except DRIVER_ERRORS as error:
            return f"the PostgreSQL database {self._where} does not answer: {sql.reason(error)}"
        return None

    # -- running operations ------------------------------------------------------------------

    async def _run(self, what: str, operation: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``operation`` on a pooled connection; a deadlock or serialization failure runs it
        again, any other driver error becomes Unavailable (the operation changed nothing)."""
        pool = self._pool
        if pool is None:
            raise Unavailable("The store is closed.")
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with pool.acquire() as conn:
                    return await operation(conn)
            except TRANSIENT as error:
                if attempt == _ATTEMPTS:
                    raise _unavailable(what, error) from None
            except DRIVER_ERRORS as error:
                raise _unavailable(what, error) from None
        raise AssertionError("unreachable")

    def _sweep_if_due(self, now: datetime) -> None:
        """Start a sweep of expired tombstones in the background, at most once a minute of the
        callers' time (reads ignore expired tombstones anyway; this only bounds the tables)."""
        now_us = codec.to_micros(now)
        if self._next_sweep_us is not None and now_us < self._next_sweep_us:
            return
        if self._sweeper is not None and not self._sweeper.done():
            return
        self._next_sweep_us = now_us + SWEEP_EVERY // timedelta(microseconds=1)
        self._sweeper = asyncio.create_task(self._sweep_quietly(now))

    async def _sweep_quietly(self, now: datetime) -> None:
        try:
            await self.sweep_tombstones(now)
        except Exception as error:  # the next sweep tries again; reads never see expired rows
            _log.warning("could not delete expired tombstones from %s: %s", self._where, error)

    async def sweep_tombstones(self, now: datetime) -> int:
        """Delete tombstones expired at ``now`` in bounded batches; returns how many."""

        async def run(conn: Conn) -> int:
            deleted = 0
            for statement in sql.SWEEP.values():
                for _ in range(SWEEP_BATCHES):
                    done = _rowcount(await conn.execute(statement, codec.to_micros(now), SWEEP_BATCH))
                    deleted += done
                    if done < SWEEP_BATCH:
                        break
            return deleted

        return await self._run("delete expired tombstones", run)

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, queue: Queue, now: datetime) -> Queue:
        async def run(conn: Conn) -> Queue:
            try:
                async with _transaction(conn):
                    if await conn.fetchrow(sql.QUEUE, *_key(queue.name)) is not None:
                        raise base.queue_exists()
                    await _insert_queue(conn, queue, now)
            except asyncpg.UniqueViolationError:
                raise base.queue_exists() from None  # created at the same moment through another call
            return queue

        return await self._run("create the queue", run)

    async def get_queue(self, name: QueueName) -> Queue:
        async def run(conn: Conn) -> Queue:
            return _load_queue(await conn.fetchrow(sql.QUEUE, *_key(name)))[1]

        return await self._run("read the queue", run)

    async def list_queues(
        self, parent: LocationName, *, state: QueueState | None, after: str, limit: int
    ) -> list[Queue]:
        query = sql.LIST_QUEUES
        params: list[Any] = [str(parent), after]
        if state is not None:
            query += " AND state = $3"
            params.append(int(state))
        query += f" ORDER BY queue_id LIMIT ${len(params) + 1}"
        params.append(limit)

        async def run(conn: Conn) -> list[Queue]:
            return [codec.loads(Queue, row[0]) for row in await conn.fetch(query, *params)]

        return await self._run("list queues", run)

    async def list_locations(self, project: str) -> list[str]:
        prefix = f"projects/{project}/locations/"

        async def run(conn: Conn) -> list[str]:
            found = await conn.fetch(sql.LIST_LOCATIONS, prefix, len(prefix))
            return [row[0][len(prefix) :] for row in found]

        return await self._run("list locations", run)

    async def update_queue(self, name: QueueName, change: QueueChange, now: datetime) -> Queue:
        async def run(conn: Conn) -> Queue:
            for attempt in (1, 2):
                try:
                    async with _transaction(conn):
                        return await _change_queue(conn, name, change, now)
                except asyncpg.UniqueViolationError:
                    if attempt == 2:  # created concurrently: the second run changes that queue
                        raise
            raise AssertionError("unreachable")

        return await self._run("update the queue", run)

    async def delete_queue(self, name: QueueName, now: datetime, windows: Windows) -> None:
        until = codec.to_micros(windows.queue_tombstone_until)

        async def run(conn: Conn) -> None:
            if await conn.fetchval(sql.DELETE_QUEUE, *_key(name), until) is None:
                raise base.entity_missing()

        await self._run("delete the queue", run)

    async def purge_queue(self, name: QueueName, purge_time: datetime, windows: Windows) -> Queue:
        async def run(conn: Conn) -> Queue:
            async with _transaction(conn):
                pk, queue = _load_queue(await conn.fetchrow(sql.QUEUE_FOR_UPDATE, *_key(name)))
                queue = replace(queue, purge_time=purge_time)
                await _save_queue(conn, pk, queue)
                until = codec.to_micros(windows.task_until(queue))
                await conn.execute(
                    sql.PURGE_TASKS,
                    pk,
                    codec.to_micros(purge_time),
                    until,
                    *_key(name),
                    _history_until(windows),
                )
            return queue

        return await self._run("purge the queue", run)

    # -- tasks -------------------------------------------------------------------------------

    async def create_task(self, task: Task, now: datetime) -> Task:
        if self._pool is None:
            raise Unavailable("The store is closed.")
        self._sweep_if_due(now)
        return await self._inserter.insert(task, now)

    async def get_task(self, name: TaskName, now: datetime) -> Task:
        async def run(conn: Conn) -> Task:
            found = await conn.fetchrow(sql.FIND_TASK, *_key(name.queue), name.task_id, codec.to_micros(now))
            return _found_task(found)

        return await self._run("read the task", run)

    async def list_tasks(self, queue: QueueName, *, after: int, limit: int) -> TaskPage:
        async def run(conn: Conn) -> TaskPage:
            found = await conn.fetch(sql.LIST_TASKS, *_key(queue), after, limit + 1)
            if not found:
                raise base.queue_missing()
            page = [row for row in found if row["seq"] is not None]
            more = len(page) > limit
            page = page[:limit]
            return TaskPage([_task_of(row) for row in page], page[-1]["seq"] if more else None)

        return await self._run("list tasks", run)

    async def delete_task(self, name: TaskName, now: datetime, windows: Windows) -> None:
        params = (
            *_key(name.queue),
            name.task_id,
            codec.to_micros(now),
            *sql.task_windows(windows),
            _history_until(windows),
        )

        async def run(conn: Conn) -> None:
            pk, deleted, reserved = await conn.fetchrow(sql.DELETE_TASK, *params) or (None, 0, False)
            if pk is None:
                raise base.queue_missing()
            if not deleted:
                raise base.task_recently_deleted() if reserved else base.entity_missing()

        self._sweep_if_due(now)
        await self._run("delete the task", run)

    # -- dispatch ----------------------------------------------------------------------------

    async def all_queues(self) -> list[Queue]:
        async def run(conn: Conn) -> list[Queue]:
            return [codec.loads(Queue, row[0]) for row in await conn.fetch(sql.ALL_QUEUES)]

        return await self._run("list queues", run)

    async def claim_due_tasks(
        self, queue: QueueName, now: datetime, limit: int, lease_grace: timedelta, fence: Fence | None = None
    ) -> Claim:
        now_us = codec.to_micros(now)

        async def run(conn: Conn) -> Claim:
            async with _transaction(conn, bookkeeping=True):
                if fence is None:
                    found = await conn.fetch(sql.PICK_DUE, *_key(queue), now_us, limit)
                else:
                    fenced = await conn.fetch(
                        sql.PICK_DUE_FENCED, *_key(queue), now_us, limit, fence.node_id, fence.epoch
                    )
                    if not fenced:  # the node no longer holds the queue under this fence
                        return Claim([], None, fenced=True)
                    found = [row for row in fenced if row["seq"] is not None]
                if not found:
                    next_due = await conn.fetchval(sql.NEXT_DUE, *_key(queue))
                    return Claim([], None if next_due is None else codec.from_micros(next_due))
                claimed = [(row["seq"], claim(_task_of(row), now)) for row in found]
                saved = _claim_arrays(claimed, now, lease_grace)
                tasks = [task for _, task in claimed]
                if len(tasks) == limit:  # the caller looks again at once: the next due time is moot
                    await conn.execute(sql.SAVE_CLAIMS, *saved)
                    return Claim(tasks, now)
                others = await conn.fetchval(sql.SAVE_CLAIMS_NEXT_DUE, *saved, *_key(queue))
            leases = min(saved[1])
            return Claim(tasks, codec.from_micros(leases if others is None else min(others, leases)))

        self._sweep_if_due(now)
        return await self._run("claim tasks", run)

    async def claim_task(self, name: TaskName, now: datetime, lease_grace: timedelta) -> Task:
        async def run(conn: Conn) -> Task:
            async with _transaction(conn, bookkeeping=True):
                row = await conn.fetchrow(sql.TASK_FOR_UPDATE, *_key(name.queue), name.task_id)
                if row is not None:
                    task = claim(_task_of(row), now)
                    await conn.execute(
                        sql.SAVE_CLAIMS, *_claim_arrays([(row["seq"], task)], now, lease_grace)
                    )
                    return task
            found = await conn.fetchrow(sql.FIND_TASK, *_key(name.queue), name.task_id, codec.to_micros(now))
            raise _missing(found)

        return await self._run("claim the task", run)

    async def finish_attempts(self, results: list[AttemptResult], windows: Windows) -> None:
        if not results:
            return
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])
        for result in results:
            name, task = result.name, result.task
            schedule = None if task is None else codec.to_micros(task.schedule_time)
            kept = task if task is not None else result.finished_as  # finished: as history keeps it
            progress = None if kept is None else rows.progress_json(kept)
            values = (str(name.queue.parent), name.queue.queue_id, name.task_id, result.dispatch_count)
            end = (
                (None, None)
                if result.finish is None or result.finish_time is None
                else (result.finish.value, codec.to_micros(result.finish_time))
            )
            for column, value in zip(columns, (*values, schedule, progress, *end), strict=True):
                column.append(value)
        until = _history_until(windows)
        params = (*columns[:6], *sql.task_windows(windows), *columns[6:], until)
        attempts = _attempt_columns(results) if until is not None else None

        async def run(conn: Conn) -> None:
            async with _transaction(conn, bookkeeping=True):
                await conn.execute(sql.FINISH_ATTEMPTS, *params)
                if attempts is not None:
                    await conn.execute(sql.KEEP_ATTEMPTS, *attempts, until)

        await self._run("record attempt results", run)

    async def release_leases(self) -> int:
        """Release nothing and answer 0: the database is shared, and other nodes may be sending
        those tasks right now. Attempts lost in a crash are recovered by their visibility
        timeouts instead: a claimed task falls due again when its lease ends."""
        return 0

    async def due_queues(self, queues: Collection[QueueName], now: datetime) -> set[QueueName]:
        if not queues:
            return set()
        parents, ids = [str(name.parent) for name in queues], [name.queue_id for name in queues]

        async def run(conn: Conn) -> set[QueueName]:
            found = await conn.fetch(sql.DUE_QUEUES, parents, ids, codec.to_micros(now))
            return {QueueName.in_location(row[0], row[1]) for row in found}

        return await self._run("look for due tasks", run)

    async def leased_tasks(self, queue: QueueName, now: datetime) -> int:
        async def run(conn: Conn) -> int:
            return int(await conn.fetchval(sql.LEASED_TASKS, *_key(queue), codec.to_micros(now)))

        return await self._run("count leased tasks", run)

    # -- nodes ------------------------------------------------------------------------------

    async def heartbeat(
        self, node_id: str, incarnation: str, address: str, now: datetime, ttl: timedelta
    ) -> None:
        await self._nodes.heartbeat(node_id, incarnation, address, now, ttl)

    async def leave(self, node_id: str, incarnation: str) -> None:
        await self._nodes.leave(node_id, incarnation)

    async def nodes(self) -> list[NodeInfo]:
        return await self._nodes.nodes()

    async def own_queues(
        self, node_id: str, incarnation: str, wanted: Collection[QueueName], now: datetime, ttl: timedelta
    ) -> dict[QueueName, Fence]:
        return await self._nodes.own_queues(node_id, incarnation, wanted, now, ttl)

    async def release_queues(self, node_id: str, queues: Collection[QueueName]) -> None:
        await self._nodes.release_queues(node_id, queues)

    async def page_token_key(self) -> bytes:
        async def run(conn: Conn) -> bytes:
            await conn.execute(sql.ADD_SECRET, "page_tokens", secrets.token_bytes(32))
            return bytes(await conn.fetchval(sql.SECRET, "page_tokens"))

        return await self._run("read the page-token key", run)

    async def notify(self, messages: list[str]) -> None:
        await self._nodes.notify(messages)

    async def subscribe(self, listener: SignalListener, on_gap: Callable[[], None]) -> None:
        try:
            await self._listener.add(listener, on_gap)
        except DRIVER_ERRORS as error:
            raise _unavailable("listen for the signals of other nodes", error) from None

    # -- history -----------------------------------------------------------------------------

    async def finished_tasks(
        self,
        queue: QueueName,
        now: datetime,
        *,
        reasons: Collection[FinishReason] | None = None,
        before: int = 0,
        limit: int = 100,
    ) -> HistoryPage:
        params: tuple[Any, ...] = (*_key(queue), codec.to_micros(now), before, limit + 1)
        if reasons is None:
            statement = sql.FINISHED_PAGE.format(reasons="true")
        elif (indexed := rows.INDEXED_REASONS.get(frozenset(reasons))) is not None:
            statement = sql.FINISHED_PAGE.format(reasons=indexed)
        else:
            statement = sql.FINISHED_PAGE.format(reasons=sql.SOME_REASONS)
            params += ([r.value for r in reasons],)

        async def run(conn: Conn) -> list[Any]:
            return list(await conn.fetch(statement, *params))

        return rows.history_page(await self._run("read finished tasks", run), limit)

    async def task_history(
        self, name: TaskName, now: datetime
    ) -> tuple[list[FinishedTask], list[AttemptRecord]]:
        key = (*_key(name.queue), name.task_id, codec.to_micros(now))

        async def run(conn: Conn) -> tuple[list[Any], list[Any]]:
            return list(await conn.fetch(sql.TASK_ENDS, *key)), list(
                await conn.fetch(sql.TASK_ATTEMPTS, *key)
            )

        ends, attempts = await self._run("read the task's history", run)
        return [rows.finished_of(row)[1] for row in ends], [rows.attempt_of(row) for row in attempts]

    # -- insights ----------------------------------------------------------------------------

    async def task_counts(
        self, now: datetime, queue: QueueName | None = None
    ) -> dict[QueueName, base.TaskCounts]:
        query = sql.TASK_COUNTS
        params: tuple[Any, ...] = (codec.to_micros(now),)
        if queue is not None:
            query += " WHERE q.parent = $2 AND q.queue_id = $3"
            params += _key(queue)

        async def run(conn: Conn) -> dict[QueueName, base.TaskCounts]:
            return {
                QueueName.in_location(parent, queue_id): base.TaskCounts(
                    count, scheduled, None if oldest is None else codec.from_micros(oldest)
                )
                for parent, queue_id, count, oldest, scheduled in await conn.fetch(query, *params)
            }

        return await self._run("count tasks", run)

    async def redrive_task(self, letter: TaskName, key: int, task: Task, now: datetime) -> Task:
        if self._pool is None:
            raise Unavailable("The store is closed.")
        self._sweep_if_due(now)
        of_letter = (*_key(letter.queue), letter.task_id, codec.to_micros(now))

        async def run(conn: Conn) -> Task:
            async with _transaction(conn):
                found: list[Any] = await conn.fetch(sql.TASK_ENDS_LOCKED, *of_letter)
                ends = [rows.finished_of(row) for row in found]
                at = base.letter_to_redrive(letter, [finished for _, finished in ends], key)
                created = await insert_one(conn, task, now)
                await conn.execute(sql.MARK_REDRIVEN, ends[at][0], task.name.task_id, codec.to_micros(now))
                return created

        return await self._run("redrive the task", run)

    # -- browsing ----------------------------------------------------------------------------

    async def dead_letter_counts(
        self, now: datetime, queue: QueueName | None = None, *, cap: int = DEAD_LETTER_COUNT_CAP
    ) -> dict[QueueName, int]:
        key = () if queue is None else _key(queue)
        statement = sql.DEAD_LETTERS.format(
            queue="" if queue is None else "AND q.parent = $3 AND q.queue_id = $4"
        )

        async def run(conn: Conn) -> list[Any]:
            return list(await conn.fetch(statement, cap + 1, codec.to_micros(now), *key))

        return rows.dead_letters(await self._run("count dead letters", run), cap)

    async def browse_tasks(
        self,
        queue: QueueName,
        now: datetime,
        state: TaskState,
        *,
        search: TaskSearch = base.NO_SEARCH,
        after: BrowseCursor | None = None,
        limit: int = DEFAULT_PAGE,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
    ) -> BrowsePage:
        scan = BrowseScan(search, after, limit, scan_limit, browsing.decode)
        statement = browsing.chunk_sql(state, search, browsing.POSTGRESQL)
        now_us = codec.to_micros(now)

        async def run(conn: Conn) -> BrowsePage:
            pk = await conn.fetchval(sql.QUEUE_PK, *_key(queue))
            if pk is None:
                raise base.queue_missing()
            while (request := scan.request()) is not None:
                numbered, params = browsing.numbered(
                    statement, browsing.chunk_params(state, pk, now_us, *request, search=search)
                )
                scan.take(browsing.browse_rows(await conn.fetch(numbered, *params)))
            assert scan.page is not None
            return scan.page

        return await self._run("browse tasks", run)

    async def add_outcomes(self, node_id: str, minutes: list[OutcomeMinute]) -> None:
        if not minutes:
            return
        values, oldest = rows.outcome_rows(node_id, minutes)
        columns = [list(column) for column in zip(*values, strict=True)][1:]

        async def run(conn: Conn) -> None:
            await conn.execute(sql.ADD_OUTCOMES, node_id, *columns, oldest)

        await self._run("add attempt outcomes", run)

    async def outcomes(self, since: datetime, queue: QueueName | None = None) -> list[OutcomeMinute]:
        statement = sql.OUTCOMES.format(queue="" if queue is None else sql.one_queue(2))
        params = (codec.to_micros(since), *(() if queue is None else _key(queue)))

        async def run(conn: Conn) -> list[OutcomeMinute]:
            return rows.outcomes_of(await conn.fetch(statement, *params))

        return await self._run("read attempt outcomes", run)


@contextlib.asynccontextmanager
async def _transaction(conn: Conn, *, bookkeeping: bool = False) -> AsyncIterator[None]:
    """One transaction; ``bookkeeping`` (claims, results) commits without waiting for the WAL
    flush: losing such a commit in a database crash only sends a task again.

    BEGIN and SET LOCAL travel in one round trip. A failed transaction is rolled back here;
    one cut short by cancellation is rolled back by the pool when the connection returns."""
    await conn.execute("BEGIN; SET LOCAL synchronous_commit = off" if bookkeeping else "BEGIN")
    try:
        yield
    except asyncio.CancelledError:
        raise
    except BaseException:
        with contextlib.suppress(*DRIVER_ERRORS):  # a connection already lost or released
            if not conn.is_closed():
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


def _unavailable(what: str, error: BaseException) -> Unavailable:
    return Unavailable(f"The database could not {what}: {sql.reason(error)}. Nothing was changed; retry.")


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])


def _key(name: QueueName) -> tuple[str, str]:
    return str(name.parent), name.queue_id


def _load_queue(row: asyncpg.Record | None) -> tuple[int, Queue]:
    if row is None:
        raise base.queue_missing()
    return int(row["pk"]), codec.loads(Queue, row["config"])


async def _insert_queue(conn: Conn, queue: Queue, now: datetime) -> None:
    key = _key(queue.name)
    if await conn.fetchval(sql.QUEUE_RESERVED, *key, codec.to_micros(now)) is not None:
        raise base.queue_recently_deleted()
    await conn.execute(sql.INSERT_QUEUE, *key, int(queue.state), queue.from_queue_yaml, codec.dumps(queue))
    await conn.execute(sql.UNRESERVE_QUEUE, *key)


async def _save_queue(conn: Conn, pk: int, queue: Queue) -> None:
    await conn.execute(sql.SAVE_QUEUE, pk, int(queue.state), queue.from_queue_yaml, codec.dumps(queue))


async def _change_queue(conn: Conn, name: QueueName, change: QueueChange, now: datetime) -> Queue:
    row = await conn.fetchrow(sql.QUEUE_FOR_UPDATE, *_key(name))
    if row is None:
        queue = change(None)
        await _insert_queue(conn, queue, now)
        return queue
    pk, current = _load_queue(row)
    queue = change(current)
    await _save_queue(conn, pk, queue)
    return queue


def _task_of(row: asyncpg.Record) -> Task:
    return rows.task_of(row["spec"], row["progress"], row["body"], codec.from_micros(row["schedule_us"]))


def _found_task(found: asyncpg.Record | None) -> Task:
    """The task of a FIND_TASK row; NotFound if there is none."""
    if found is None or found["seq"] is None:
        raise _missing(found)
    return _task_of(found)


def _missing(found: asyncpg.Record | None) -> NotFound:
    """Why FIND_TASK found no task: no queue, a reserved name, or nothing (a task that a
    concurrent CreateTask added since the first lookup counts as not found yet)."""
    if found is None:
        return base.queue_missing()
    return (
        base.task_recently_deleted() if found["reserved"] and found["seq"] is None else base.entity_missing()
    )


def _claim_arrays(
    claimed: list[tuple[int, Task]], now: datetime, lease_grace: timedelta
) -> tuple[list[int], list[int], list[int], list[str | None]]:
    """The parameters of SAVE_CLAIMS: sequence numbers, lease ends, dispatch counts, progress."""
    return (
        [seq for seq, _ in claimed],
        [codec.to_micros(lease_expiry(task, now, lease_grace)) for _, task in claimed],
        [task.dispatch_count for _, task in claimed],
        [rows.progress_json(task) for _, task in claimed],
    )


def _history_until(windows: Windows) -> int | None:
    return None if windows.history_until is None else codec.to_micros(windows.history_until)


def _attempt_columns(results: list[AttemptResult]) -> tuple[list[Any], ...] | None:
    """The attempts of ``results`` as one array per column of ``sql.KEEP_ATTEMPTS``."""
    values = [rows.attempt_values(r.attempt) for r in results if r.attempt is not None]
    return tuple(list(column) for column in zip(*values, strict=True)) if values else None
