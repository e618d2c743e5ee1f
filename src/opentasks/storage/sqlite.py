"""The embedded SQLite store: durable (WAL, fsync on commit), with group commit.

Commits that hold only dispatch bookkeeping (claims, attempt results) skip the fsync: a power
loss can undo them, which re-sends a task and never loses one.

Writes are applied on the event loop, each in its own savepoint, into one open transaction;
only the ``COMMIT`` (where SQLite waits for fsync, without holding the GIL) runs on a thread.
Operations that arrive while a commit is running form the next batch, so one fsync covers
them all and one failing operation (a duplicate name, say) never undoes its neighbours.
Nothing is acknowledged before its transaction is committed. Reads use a second connection
on a reader thread (WAL lets them run beside the writer). A lock file keeps a second server
from opening the same database.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

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
from opentasks.errors import Unavailable
from opentasks.storage import base, browsing, codec, rows, sqlite_files
from opentasks.storage.base import AttemptResult, Claim, Fence, QueueChange, TaskPage, Windows
from opentasks.storage.browsing import BrowseScan
from opentasks.storage.local_nodes import LocalNodes
from opentasks.storage.migrations import scripts
from opentasks.storage.rows import outcome_rows, outcomes_of
from opentasks.storage.sqlite_finish import FinishStatements, finish_statements

T = TypeVar("T")
_log = logging.getLogger(__name__)
Operation = Callable[[sqlite3.Connection], T]
_TASK_COLUMNS = "seq, schedule_us, spec, progress, body"
PRUNE_EVERY = timedelta(minutes=1)
PRUNE_BATCH = 20_000  # rows of each history table dropped per prune (the next one goes on)
CommitHook = Callable[[int, float, bool], None]
"""Told of each group commit: (operations in it, seconds from BEGIN to committed, durable)."""
# The synchronous level of commits holding only dispatch bookkeeping. NORMAL in WAL mode still
# survives kill -9 (the OS has the writes); only a power loss can undo such a commit, and that
# re-sends a task rather than losing one. EXTRA/FULL commits fsync everything before them too.
_DISPATCH_SYNCHRONOUS = {"EXTRA": "NORMAL", "FULL": "NORMAL"}


class DatabaseInUse(RuntimeError):
    """Another process holds this SQLite database."""


class SqliteStore(LocalNodes):
    """A :class:`~opentasks.storage.base.Store` in one SQLite file. Only one server opens it
    (a lock file sees to that), so that server is the only node and holds every queue."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__()
        self._path = Path(path)
        self._synchronous = synchronous.upper()
        self._current_synchronous = self._synchronous
        self._durable_pending = False
        self._conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._identity: sqlite_files.FileIdentity | None = None
        self._pending: list[tuple[Operation[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opentasks-sqlite-commit")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opentasks-sqlite-reader")
        self._on_commit: CommitHook | None = None
        self._monotonic: Callable[[], float] | None = None
        self._next_prune: datetime | None = None
        self._pruning: asyncio.Future[None] | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating it owner-only if missing) and migrate the database.

        :class:`~opentasks.storage.base.StoreUnusable` (one line, what to do) when the
        directory is missing, the file is corrupt or another program's, or its schema is newer
        than this code; :class:`DatabaseInUse` when another server holds it."""
        sqlite_files.prepare(self._path)
        _check_untouched(self._path)  # before the lock file and WAL mode change anything
        self._lock_file = _lock(self._path)
        try:
            self._conn = self._connect()
            _migrate(self._conn, self._path)
            self._read_conn = self._connect(query_only=True)
            self._identity = sqlite_files.FileIdentity.of(self._path)
            sqlite_files.warn_if_shared(self._path)
        except sqlite3.Error as error:
            await self.close()
            raise sqlite_files.unusable(self._path, error) from None
        except BaseException:
            await self.close()
            raise

    async def probe(self) -> str | None:
        """Why the store cannot serve right now (None when it can): its file must still be the
        one it opened and answer a query (for readiness checks)."""
        conn = self._read_conn
        if conn is None:
            return "the store is closed"
        return await self._read(lambda conn: sqlite_files.probe(conn, self._path, self._identity))

    async def close(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
        for conn in (self._conn, self._read_conn):
            if conn is not None:
                conn.close()
        self._conn = self._read_conn = None
        self._committer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _connect(self, *, query_only: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        if query_only:
            conn.execute("PRAGMA query_only=ON")
        return conn

    # -- group commit ------------------------------------------------------------------------

    async def _write(self, operation: Operation[T], *, durable: bool = True) -> T:
        """Run ``operation`` in the next group commit.

        ``durable=False`` marks dispatch bookkeeping (claims, attempt results, lease releases):
        losing it only means a task is sent again, so a batch of nothing else is committed
        without waiting for fsync. The next durable commit syncs the whole WAL, these included.
        """
        if self._conn is None:
            raise Unavailable("The store is closed.")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future))
        self._durable_pending |= durable
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        """Commit batches until no operation is waiting; every waiting future gets an outcome."""
        while self._pending:
            batch, self._pending = self._pending, []
            durable, self._durable_pending = self._durable_pending, False
            try:
                outcomes = await self._commit(batch, durable)
            except sqlite3.Error as error:
                failure = Unavailable(f"The database could not commit: {error}. Nothing was changed; retry.")
                outcomes = [(future, None, failure) for _, future in batch]
            for future, result, failed in outcomes:
                _settle(future, result, failed)

    async def _commit(
        self, batch: list[tuple[Operation[Any], asyncio.Future[Any]]], durable: bool
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        conn = self._conn
        assert conn is not None
        synchronous = self._synchronous if durable else _DISPATCH_SYNCHRONOUS.get(self._synchronous)
        if synchronous is not None and synchronous != self._current_synchronous:
            conn.execute(f"PRAGMA synchronous={synchronous}")
            self._current_synchronous = synchronous
        started = self._monotonic() if self._monotonic is not None else 0.0
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes = [(future, *_in_savepoint(conn, operation)) for operation, future in batch]
            await asyncio.get_running_loop().run_in_executor(
                self._committer, _finish_and_commit, conn, outcomes
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if self._on_commit is not None and self._monotonic is not None:
            self._on_commit(len(batch), self._monotonic() - started, durable)
        return outcomes

    def observe_commits(self, hook: CommitHook, monotonic: Callable[[], float]) -> None:
        """Call ``hook(operations, seconds, durable)`` after every group commit (for metrics):
        how many operations it held and how long it took, from BEGIN to the end of COMMIT."""
        self._on_commit = hook
        self._monotonic = monotonic

    async def _read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._read_conn
        if conn is None:
            raise Unavailable("The store is closed.")
        return await asyncio.get_running_loop().run_in_executor(self._reader, operation, conn)

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, queue: Queue, now: datetime) -> Queue:
        def run(conn: sqlite3.Connection) -> Queue:
            if _queue_pk(conn, queue.name) is not None:
                raise base.queue_exists()
            _check_queue_tombstone(conn, queue.name, now)
            _insert_queue(conn, queue)
            return queue

        return await self._write(run)

    async def get_queue(self, name: QueueName) -> Queue:
        return await self._read(lambda conn: _load_queue(conn, name)[1])

    async def list_queues(
        self, parent: LocationName, *, state: QueueState | None, after: str, limit: int
    ) -> list[Queue]:
        sql = "SELECT config FROM queues WHERE parent = ? AND queue_id > ?"
        params: list[Any] = [str(parent), after]
        if state is not None:
            sql += " AND state = ?"
            params.append(int(state))
        sql += " ORDER BY queue_id LIMIT ?"
        params.append(limit)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [codec.loads(Queue, row[0]) for row in rows]

    async def list_locations(self, project: str) -> list[str]:
        prefix = f"projects/{project}/locations/"
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT DISTINCT parent FROM queues WHERE substr(parent, 1, ?) = ? ORDER BY parent",
                (len(prefix), prefix),
            ).fetchall()
        )
        return [row[0][len(prefix) :] for row in rows]

    async def update_queue(self, name: QueueName, change: QueueChange, now: datetime) -> Queue:
        def run(conn: sqlite3.Connection) -> Queue:
            pk = _queue_pk(conn, name)
            if pk is None:
                queue = change(None)
                _check_queue_tombstone(conn, name, now)
                _insert_queue(conn, queue)
                return queue
            queue = change(_load_queue(conn, name)[1])
            _save_queue(conn, pk, queue)
            return queue

        return await self._write(run)

    async def delete_queue(self, name: QueueName, now: datetime, windows: Windows) -> None:
        def run(conn: sqlite3.Connection) -> None:
            pk = _queue_pk(conn, name)
            if pk is None:
                raise base.entity_missing()
            conn.execute("DELETE FROM queues WHERE pk = ?", (pk,))
            conn.execute(
                "INSERT OR REPLACE INTO queue_tombstones VALUES (?, ?, ?)",
                (str(name.parent), name.queue_id, codec.to_micros(windows.queue_tombstone_until)),
            )

        await self._write(run)
        self._forget_queue(name)

    async def purge_queue(self, name: QueueName, purge_time: datetime, windows: Windows) -> Queue:
        def run(conn: sqlite3.Connection) -> Queue:
            pk, queue = _load_queue(conn, name)
            queue = replace(queue, purge_time=purge_time)
            _save_queue(conn, pk, queue)
            cutoff = codec.to_micros(purge_time)
            if windows.history_until is not None:
                _keep_finished(
                    conn,
                    name,
                    (FinishReason.PURGED, purge_time, windows.history_until),
                    where="queue_pk = ? AND enqueue_us < ?",
                    params=(pk, cutoff),
                )
            conn.execute(
                "INSERT OR REPLACE INTO task_tombstones "
                "SELECT queue_pk, task_id, ? FROM tasks WHERE queue_pk = ? AND enqueue_us < ? AND named",
                (codec.to_micros(windows.task_until(queue)), pk, cutoff),
            )
            conn.execute("DELETE FROM tasks WHERE queue_pk = ? AND enqueue_us < ?", (pk, cutoff))
            return queue

        return await self._write(run)

    # -- tasks -------------------------------------------------------------------------------

    async def create_task(self, task: Task, now: datetime) -> Task:
        return await self._write(lambda conn: _insert_task(conn, task, now))

    async def get_task(self, name: TaskName, now: datetime) -> Task:
        def run(conn: sqlite3.Connection) -> Task:
            pk = _load_queue(conn, name.queue)[0]
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue_pk = ? AND task_id = ?", (pk, name.task_id)
            ).fetchone()
            if row is not None:
                return _task_from_row(row)
            if _tombstoned(conn, pk, name.task_id, now):
                raise base.task_recently_deleted()
            raise base.entity_missing()

        return await self._read(run)

    async def list_tasks(self, queue: QueueName, *, after: int, limit: int) -> TaskPage:
        def run(conn: sqlite3.Connection) -> TaskPage:
            pk = _load_queue(conn, queue)[0]
            rows = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue_pk = ? AND seq > ? ORDER BY seq LIMIT ?",
                (pk, after, limit + 1),
            ).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            return TaskPage([_task_from_row(r) for r in rows], rows[-1][0] if more else None)

        return await self._read(run)

    async def delete_task(self, name: TaskName, now: datetime, windows: Windows) -> None:
        def run(conn: sqlite3.Connection) -> None:
            pk, queue = _load_queue(conn, name.queue)
            if windows.history_until is not None:
                _keep_finished(
                    conn,
                    name.queue,
                    (FinishReason.DELETED, now, windows.history_until),
                    where="queue_pk = ? AND task_id = ?",
                    params=(pk, name.task_id),
                )
            row = conn.execute(
                "DELETE FROM tasks WHERE queue_pk = ? AND task_id = ? RETURNING named", (pk, name.task_id)
            ).fetchone()
            if row is None:
                if _tombstoned(conn, pk, name.task_id, now):
                    raise base.task_recently_deleted()
                raise base.entity_missing()
            if row[0]:
                _tombstone_task(conn, pk, name.task_id, windows.task_until(queue))

        await self._write(run)

    # -- dispatch ----------------------------------------------------------------------------

    async def all_queues(self) -> list[Queue]:
        found = await self._read(lambda conn: conn.execute("SELECT config FROM queues").fetchall())
        return [codec.loads(Queue, row[0]) for row in found]

    async def claim_due_tasks(
        self, queue: QueueName, now: datetime, limit: int, lease_grace: timedelta, fence: Fence | None = None
    ) -> Claim:
        if not self._holds(fence, queue, now):
            return Claim([], None, fenced=True)

        def run(conn: sqlite3.Connection) -> Claim:
            pk = _queue_pk(conn, queue)
            if pk is None:
                return Claim([], None)
            found = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks"
                " WHERE queue_pk = ? AND due_us <= ? ORDER BY due_us, seq LIMIT ?",
                (pk, codec.to_micros(now), limit),
            ).fetchall()
            claimed = [(row[0], claim(_task_from_row(row), now)) for row in found]
            _save_claims(conn, claimed, now, lease_grace)
            tasks = [t for _, t in claimed]
            if len(tasks) == limit:  # the caller looks again at once: the next due time is moot
                return Claim(tasks, now)
            next_due = conn.execute("SELECT MIN(due_us) FROM tasks WHERE queue_pk = ?", (pk,)).fetchone()[0]
            return Claim(tasks, None if next_due is None else codec.from_micros(next_due))

        return await self._write(run, durable=False)

    async def claim_task(self, name: TaskName, now: datetime, lease_grace: timedelta) -> Task:
        def run(conn: sqlite3.Connection) -> Task:
            pk = _load_queue(conn, name.queue)[0]
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue_pk = ? AND task_id = ?", (pk, name.task_id)
            ).fetchone()
            if row is None:
                raise (
                    base.task_recently_deleted()
                    if _tombstoned(conn, pk, name.task_id, now)
                    else base.entity_missing()
                )
            task = claim(_task_from_row(row), now)
            _save_claims(conn, [(row[0], task)], now, lease_grace)
            return task

        return await self._write(run, durable=False)

    async def finish_attempts(self, results: list[AttemptResult], windows: Windows) -> None:
        def run(conn: sqlite3.Connection) -> FinishStatements:
            names = {r.name.queue for r in results}
            queues = {q: _find_queue(conn, q) for q in names}
            keys = {q: _history_key(conn, q) for q in names} if windows.history_until is not None else {}
            return finish_statements(results, queues, keys, windows)  # run on the commit thread

        await self._write(run, durable=False)
        self._prune_history_if_due(windows)

    def _prune_history_if_due(self, windows: Windows) -> None:
        """Drop history past its keep time (at most once a minute of the callers' time, in a
        bounded write of its own joining the next group commit)."""
        now = windows.now
        if now is None or (self._next_prune is not None and now < self._next_prune):
            return
        self._next_prune = now + PRUNE_EVERY
        now_us = codec.to_micros(now)
        pruning = asyncio.ensure_future(self._write(lambda conn: _prune_history(conn, now_us), durable=False))
        pruning.add_done_callback(_log_prune_failure)
        self._pruning = pruning

    async def release_leases(self) -> int:
        self._forget_nodes()

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute("UPDATE tasks SET due_us = schedule_us WHERE due_us != schedule_us").rowcount

        return await self._write(run, durable=False)

    async def due_queues(self, queues: Collection[QueueName], now: datetime) -> set[QueueName]:
        wanted = {(str(name.parent), name.queue_id): name for name in queues}
        if not wanted:
            return set()
        sql = (
            "SELECT parent, queue_id FROM queues q"
            " WHERE EXISTS (SELECT 1 FROM tasks WHERE queue_pk = q.pk AND due_us <= ?)"
        )
        found = await self._read(lambda conn: conn.execute(sql, (codec.to_micros(now),)).fetchall())
        return {wanted[key] for key in map(tuple, found) if key in wanted}

    async def leased_tasks(self, queue: QueueName, now: datetime) -> int:
        def run(conn: sqlite3.Connection) -> int:
            pk = _queue_pk(conn, queue)
            if pk is None:
                return 0
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM tasks WHERE queue_pk = ? AND due_us > ? AND due_us != schedule_us",
                    (pk, codec.to_micros(now)),
                ).fetchone()[0]
            )

        return await self._read(run)

    async def _existing_queues(self, names: Collection[QueueName]) -> set[QueueName]:
        wanted = set(names)
        if not wanted:
            return set()
        found = await self.all_queues()
        return {queue.name for queue in found if queue.name in wanted}

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
        where, params = _finished_filter(now, reasons, before)
        sql = f"SELECT {rows.FINISHED_COLUMNS} FROM finished_tasks WHERE {where} ORDER BY seq DESC LIMIT ?"

        def run(conn: sqlite3.Connection) -> list[Any]:
            key = _known_history_key(conn, queue)
            return [] if key is None else conn.execute(sql, (key, *params, limit + 1)).fetchall()

        return rows.history_page(await self._read(run), limit)

    async def task_history(
        self, name: TaskName, now: datetime
    ) -> tuple[list[FinishedTask], list[AttemptRecord]]:
        def run(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            key = _known_history_key(conn, name.queue)
            if key is None:
                return [], []
            found = (key, name.task_id, codec.to_micros(now))
            ends = conn.execute(_TASK_ENDS, found)
            attempts = conn.execute(f"SELECT {rows.ATTEMPT_COLUMNS} FROM attempts WHERE {_OF_TASK}", found)
            return ends.fetchall(), attempts.fetchall()

        ends, attempts = await self._read(_in_one_snapshot(run))
        return [rows.finished_of(row)[1] for row in ends], [rows.attempt_of(row) for row in attempts]

    async def redrive_task(self, letter: TaskName, key: int, task: Task, now: datetime) -> Task:
        def run(conn: sqlite3.Connection) -> Task:
            qkey = _known_history_key(conn, letter.queue)
            of_letter = (qkey, letter.task_id, codec.to_micros(now))
            ends = (
                []
                if qkey is None
                else [rows.finished_of(row)[1] for row in conn.execute(_TASK_ENDS, of_letter)]
            )
            at = base.letter_to_redrive(letter, ends, key)
            created = _insert_task(conn, task, now)
            conn.execute(
                "UPDATE finished_tasks SET redriven_as = ?, redrive_us = ? WHERE seq = ?",
                (task.name.task_id, codec.to_micros(now), ends[at].key),
            )
            return created

        return await self._write(run)

    # -- insights ----------------------------------------------------------------------------

    async def task_counts(
        self, now: datetime, queue: QueueName | None = None
    ) -> dict[QueueName, base.TaskCounts]:
        # Per queue, on the tasks_schedule index alone (no task row is read): its tasks counted,
        # one lookup for the oldest task, and one range for the tasks scheduled after now.
        sql = (
            "SELECT parent, queue_id, (SELECT COUNT(*) FROM tasks WHERE queue_pk = pk),"
            " (SELECT MIN(schedule_us) FROM tasks WHERE queue_pk = pk),"
            " (SELECT COUNT(*) FROM tasks WHERE queue_pk = pk AND schedule_us > ?)"
            " FROM queues"
        )
        params: tuple[Any, ...] = (codec.to_micros(now),)
        if queue is not None:
            sql += " WHERE parent = ? AND queue_id = ?"
            params += (str(queue.parent), queue.queue_id)
        found = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return {
            QueueName.in_location(parent, queue_id): base.TaskCounts(
                count, scheduled, None if oldest is None else codec.from_micros(oldest)
            )
            for parent, queue_id, count, oldest, scheduled in found
        }

    # -- browsing ----------------------------------------------------------------------------

    async def dead_letter_counts(
        self, now: datetime, queue: QueueName | None = None, *, cap: int = DEAD_LETTER_COUNT_CAP
    ) -> dict[QueueName, int]:
        # The failed rows past their keep time that no prune has dropped yet (few: found through
        # finished_tasks_expiry), then in one statement per queue at most cap + 1 + the most of
        # those any queue has entries of the partial index finished_tasks_dead (index only: no
        # kept row is read for its expire_us). Reading that many still leaves more than the cap
        # to every queue that has more, once its own expired rows are taken off.
        where, key = ("", ()) if queue is None else (" AND parent = ? AND queue_id = ?", _key(queue))
        gone_sql = (
            "SELECT parent, queue_id, COUNT(*) FROM finished_tasks INDEXED BY finished_tasks_expiry"
            f" WHERE expire_us <= ? AND {rows.FAILED_ONLY}{where} GROUP BY parent, queue_id"
        )
        kept_sql = (
            "SELECT q.parent, q.queue_id, (SELECT COUNT(*) FROM (SELECT 1 FROM finished_tasks f"
            f" INDEXED BY finished_tasks_dead WHERE {rows.FAILED_ONLY} AND f.qkey = h.qkey LIMIT ?))"
            " FROM queues q LEFT JOIN history_queues h ON h.parent = q.parent AND h.queue_id = q.queue_id"
        ) + ("" if queue is None else " WHERE q.parent = ? AND q.queue_id = ?")

        def count(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
            gone = {(p, q): n for p, q, n in conn.execute(gone_sql, (codec.to_micros(now), *key))}
            limit = cap + 1 + max(gone.values(), default=0)
            kept = conn.execute(kept_sql, (limit, *key)).fetchall()
            return [(parent, queue_id, n - gone.get((parent, queue_id), 0)) for parent, queue_id, n in kept]

        return rows.dead_letters(await self._read(_in_one_snapshot(count)), cap)

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
        same = browsing.chunk_sql(state, search, browsing.SQLITE, browsing.SAME_KEY)
        later = browsing.chunk_sql(state, search, browsing.SQLITE, browsing.LATER_KEY)
        now_us = codec.to_micros(now)

        def run(conn: sqlite3.Connection) -> BrowsePage:
            pk = _load_queue(conn, queue)[0]
            while (request := scan.request()) is not None:
                position, count = request
                params = browsing.chunk_params(state, pk, now_us, position, count, search=search)
                found = conn.execute(same, params).fetchall()
                if len(found) < count:
                    params["rows"] = count - len(found)
                    found += conn.execute(later, params).fetchall()
                scan.take(browsing.browse_rows(found))
            assert scan.page is not None
            return scan.page

        return await self._read(run)

    async def add_outcomes(self, node_id: str, minutes: list[OutcomeMinute]) -> None:
        if not minutes:
            return
        values, oldest = outcome_rows(node_id, minutes)

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO outcomes (node_id, parent, queue_id, minute_us, succeeded, failed)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (parent, queue_id, minute_us, node_id) DO UPDATE"
                " SET succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed",
                values,
            )
            conn.execute("DELETE FROM outcomes WHERE minute_us < ?", (oldest,))

        await self._write(run, durable=False)

    async def outcomes(self, since: datetime, queue: QueueName | None = None) -> list[OutcomeMinute]:
        sql = (
            "SELECT parent, queue_id, minute_us, SUM(succeeded), SUM(failed) FROM outcomes"
            " WHERE minute_us >= ?"
        )
        params: tuple[Any, ...] = (codec.to_micros(since),)
        if queue is not None:
            sql += " AND parent = ? AND queue_id = ?"
            params += _key(queue)
        sql += " GROUP BY minute_us, parent, queue_id ORDER BY minute_us, parent, queue_id"
        found = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return outcomes_of(found)


def _key(name: QueueName) -> tuple[str, str]:
    return str(name.parent), name.queue_id


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the write happened all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _lock(path: Path) -> IO[bytes]:
    """Hold an exclusive lock beside the database for as long as the store is open."""
    lock_file = open(sqlite_files.open_private(path.with_name(path.name + ".lock")), "wb")  # noqa: SIM115
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise DatabaseInUse(
            f"{path} is in use by another opentasks server; give each server its own file."
        ) from None
    return lock_file


def _finish_and_commit(
    conn: sqlite3.Connection, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
) -> None:
    """On the commit thread: the statements operations left to it (attempt results, see
    :mod:`~opentasks.storage.sqlite_finish`), each in its operation's savepoint and giving its
    outcome, then COMMIT."""
    for at, (future, result, _) in enumerate(outcomes):
        if isinstance(result, FinishStatements):
            outcomes[at] = (future, *_in_savepoint(conn, result))
    conn.execute("COMMIT")


def _in_savepoint(conn: sqlite3.Connection, operation: Operation[Any]) -> tuple[Any, BaseException | None]:
    conn.execute("SAVEPOINT op")
    try:
        result = operation(conn)
    except Exception as error:  # any failure belongs to this operation's caller alone
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return None, error
    conn.execute("RELEASE op")
    return result, None


def _check_untouched(path: Path) -> None:
    """Refuse a corrupt, foreign or too new database while only reading it, so that a refused
    file is left exactly as it was."""
    try:
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise sqlite_files.unusable(path, error) from None
    try:
        sqlite_files.check_schema(conn, path)
    finally:
        conn.close()


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = sqlite_files.check_schema(conn, path)
    for number, sql in scripts("sqlite"):
        if number > version:
            conn.execute("BEGIN IMMEDIATE")
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")


def _queue_pk(conn: sqlite3.Connection, name: QueueName) -> int | None:
    row = conn.execute(
        "SELECT pk FROM queues WHERE parent = ? AND queue_id = ?", (str(name.parent), name.queue_id)
    ).fetchone()
    return None if row is None else int(row[0])


def _load_queue(conn: sqlite3.Connection, name: QueueName) -> tuple[int, Queue]:
    found = _find_queue(conn, name)
    if found is None:
        raise base.queue_missing()
    return found


def _find_queue(conn: sqlite3.Connection, name: QueueName) -> tuple[int, Queue] | None:
    row = conn.execute(
        "SELECT pk, config FROM queues WHERE parent = ? AND queue_id = ?", (str(name.parent), name.queue_id)
    ).fetchone()
    return None if row is None else (int(row[0]), codec.loads(Queue, row[1]))


def _insert_queue(conn: sqlite3.Connection, queue: Queue) -> None:
    conn.execute(
        "INSERT INTO queues (parent, queue_id, state, config) VALUES (?, ?, ?, ?)",
        (str(queue.name.parent), queue.name.queue_id, int(queue.state), codec.dumps(queue)),
    )
    conn.execute(
        "DELETE FROM queue_tombstones WHERE parent = ? AND queue_id = ?",
        (str(queue.name.parent), queue.name.queue_id),
    )


def _save_queue(conn: sqlite3.Connection, pk: int, queue: Queue) -> None:
    conn.execute(
        "UPDATE queues SET state = ?, config = ? WHERE pk = ?", (int(queue.state), codec.dumps(queue), pk)
    )


def _check_queue_tombstone(conn: sqlite3.Connection, name: QueueName, now: datetime) -> None:
    row = conn.execute(
        "SELECT 1 FROM queue_tombstones WHERE parent = ? AND queue_id = ? AND expire_us > ?",
        (str(name.parent), name.queue_id, codec.to_micros(now)),
    ).fetchone()
    if row is not None:
        raise base.queue_recently_deleted()


def _tombstoned(conn: sqlite3.Connection, pk: int, task_id: str, now: datetime) -> bool:
    row = conn.execute(
        "SELECT 1 FROM task_tombstones WHERE queue_pk = ? AND task_id = ? AND expire_us > ?",
        (pk, task_id, codec.to_micros(now)),
    ).fetchone()
    return row is not None


def _tombstone_task(conn: sqlite3.Connection, pk: int, task_id: str, until: datetime) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO task_tombstones VALUES (?, ?, ?)", (pk, task_id, codec.to_micros(until))
    )


def _save_claims(
    conn: sqlite3.Connection, claimed: list[tuple[int, Task]], now: datetime, lease_grace: timedelta
) -> None:
    conn.executemany(
        "UPDATE tasks SET due_us = ?, dispatch_count = ?, progress = ? WHERE seq = ?",
        [
            (
                codec.to_micros(lease_expiry(task, now, lease_grace)),
                task.dispatch_count,
                rows.progress_json(task),
                seq,
            )
            for seq, task in claimed
        ],
    )


def _insert_task(conn: sqlite3.Connection, task: Task, now: datetime) -> Task:
    pk = _queue_pk(conn, task.name.queue)
    if pk is None:
        raise base.queue_missing()
    if task.named and _tombstoned(conn, pk, task.name.task_id, now):
        raise base.task_exists()
    schedule = codec.to_micros(task.schedule_time)
    try:
        conn.execute(
            "INSERT INTO tasks (queue_pk, task_id, named, schedule_us, due_us, enqueue_us,"
            " spec, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pk,
                task.name.task_id,
                task.named,
                schedule,
                schedule,
                codec.to_micros(task.enqueue_time),
                rows.spec_json(task),
                rows.body_of(task),
            ),
        )
    except sqlite3.IntegrityError:
        raise base.task_exists() from None
    return task


def _task_from_row(row: tuple[Any, ...]) -> Task:
    _, schedule_us, spec, progress, body = row
    return rows.task_of(spec, progress, body, codec.from_micros(schedule_us))


# -- kept history ---------------------------------------------------------------------------------


_OF_TASK = "qkey = ? AND task_id = ? AND expire_us > ? ORDER BY seq"
_TASK_ENDS = f"SELECT {rows.FINISHED_COLUMNS} FROM finished_tasks WHERE {_OF_TASK}"

# A copy of task rows into finished_tasks: the queue's history key, parent and queue_id, the
# reason, finish and keep times, and the progress to keep (NULL: the row's own), then the
# parameters of the WHERE clause that picks the task rows.
_COPY_FINISHED = (
    "INSERT INTO finished_tasks (qkey, parent, queue_id, task_id, reason, finish_us, expire_us,"
    " schedule_us, spec, progress, body) SELECT ?, ?, ?, task_id, ?, ?, ?, schedule_us, spec,"
    " COALESCE(?, progress), body FROM tasks WHERE "
)


def _history_key(conn: sqlite3.Connection, queue: QueueName) -> int:
    """The number ``queue``'s history rows are indexed by (given to its name the first time)."""
    found = _known_history_key(conn, queue)
    if found is not None:
        return found
    row = conn.execute(
        "INSERT INTO history_queues (parent, queue_id) VALUES (?, ?) RETURNING qkey", _key(queue)
    ).fetchone()
    return int(row[0])


def _known_history_key(conn: sqlite3.Connection, queue: QueueName) -> int | None:
    row = conn.execute(
        "SELECT qkey FROM history_queues WHERE parent = ? AND queue_id = ?", _key(queue)
    ).fetchone()
    return None if row is None else int(row[0])


def _keep_finished(
    conn: sqlite3.Connection,
    queue: QueueName,
    end: tuple[FinishReason, datetime, datetime],
    *,
    where: str,
    params: tuple[Any, ...],
) -> None:
    """Copy the task rows that ``where`` selects into finished_tasks, with ``end``: why they
    finished, when, and until when they are kept."""
    reason, when, until = end
    head = (_history_key(conn, queue), *_key(queue), reason.value, codec.to_micros(when))
    conn.execute(_COPY_FINISHED + where, (*head, codec.to_micros(until), None, *params))


def _prune_history(conn: sqlite3.Connection, now_us: int) -> None:
    for table in ("finished_tasks", "attempts"):
        conn.execute(
            f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE expire_us <= ? LIMIT ?)",
            (now_us, PRUNE_BATCH),
        )


def _log_prune_failure(pruning: asyncio.Future[None]) -> None:
    if not pruning.cancelled() and pruning.exception() is not None:
        _log.warning("could not drop expired history: %s", pruning.exception())


def _in_one_snapshot(read: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``read`` in one read transaction: its statements see the same commit (a prune between
    them would otherwise be seen by some and not others)."""

    def run(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN")
        try:
            return read(conn)
        finally:
            conn.execute("COMMIT")

    return run


def _finished_filter(
    now: datetime, reasons: Collection[FinishReason] | None, before: int
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause of a page of one queue's finished tasks, and its parameters after the
    queue's history key; the reasons of a dashboard tab use their own index."""
    where = "qkey = ? AND expire_us > ?"
    params: tuple[Any, ...] = (codec.to_micros(now),)
    indexed = None if reasons is None else rows.INDEXED_REASONS.get(frozenset(reasons))
    if indexed is not None:
        where += f" AND {indexed}"
    elif reasons is not None:
        where += f" AND reason IN ({', '.join('?' * len(set(reasons)))}) AND {rows.NOT_REDRIVEN}"
        params += tuple(r.value for r in set(reasons))
    if before:
        where += " AND seq < ?"
        params += (before,)
    return where, params
