"""Dashboard reads on a large queue: pages of browse_tasks per state, with and without a search,
dead_letter_counts and outcomes, on SQLite and PostgreSQL (and the memory store if asked).

A queue of --tasks tasks (default 1,000,000) is written straight into the tables (bulk insert,
no API): about 10 % due, 0.1 % in flight, 5 % retrying, the rest scheduled over the next day
at whole seconds (so many tasks share a time). One task in 1,000 carries the header value
``needle-N``. A second queue holds --ties tasks all scheduled at the same microsecond, to show
that a cursor deep into equal times is one index seek. Then each page is read --repeat times
and the median and the slowest are printed, in milliseconds:

* first: the state's first page; deep: a page from a cursor in the middle of the state's range;
* searches: none, ``needle`` (1 task in 1,000), ``nothing-matches`` (no task: the page reads its
  whole scan limit), ``cust-4242`` (a header value, 1 in 5,000), ``é`` (not ASCII: only rows
  holding other characters are decoded, none here), ``EXAMPLE.COM`` (every task).

Usage:

    python bench/browse.py [--tasks 1000000] [--stores sqlite,postgresql,memory] [--plans]
        [--pg-dsn postgresql://postgres@127.0.0.1:5432/opentasks_bench_browse]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from opentasks.domain.attempt import claim
from opentasks.domain.browse import BrowseCursor, OutcomeMinute, TaskSearch, TaskState
from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue, resolve_queue
from opentasks.domain.task import HttpRequest, TaskDraft, new_task
from opentasks.storage import browsing, codec, rows
from opentasks.storage.base import Store
from opentasks.storage.memory import MemoryStore
from opentasks.storage.postgres import PostgresStore
from opentasks.storage.sqlite import SqliteStore

NOW = datetime(2030, 1, 1, tzinfo=UTC)
NOW_US = codec.to_micros(NOW)
SECOND = 1_000_000
Q = QueueName("bench", "us-central1", "browse")
TIES = QueueName("bench", "us-central1", "ties")
SEARCHES = ["", "needle", "nothing-matches", "cust-4242", "é", "EXAMPLE.COM"]
DEAD_QUEUES = 100
COLUMNS = ("queue_pk", "task_id", "named", "schedule_us", "due_us", "enqueue_us", "spec", "body")
COLUMNS += ("dispatch_count", "progress")


# -- the tasks --------------------------------------------------------------------------------------


def template(queue: QueueName) -> tuple[str, str]:
    """The stored spec of a task with placeholders, and the progress of a task attempted once."""
    draft = TaskDraft(
        name=f"{queue}/tasks/TASKID",
        http_request=HttpRequest(
            url="https://api.example.com/orders/ORDER", headers={"X-Customer": "CUSTOMER"}, body=b""
        ),
    )
    task = new_task(draft, queue, NOW, "TASKID", Limits())
    return rows.spec_json(task), rows.progress_json(claim(task, NOW)) or ""


def task_rows(
    pk: int, queue: QueueName, count: int, *, ties: bool, seed: int = 1
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``count`` tasks (see the module's docstring for the mix)."""
    rng = random.Random(seed)
    spec, progress = template(queue)
    body = b'{"order": 42, "note": "' + b"x" * 60 + b'"}'
    for n in range(count):
        customer = f"needle-{n}" if n % 1000 == 7 else f"cust-{n % 5000}"
        text = spec.replace("TASKID", f"t{n:07}").replace("ORDER", str(n)).replace("CUSTOMER", customer)
        dispatched, kept = 0, None
        if ties:
            schedule = due = NOW_US + 3600 * SECOND
        else:
            draw = rng.random()
            if draw < 0.10:  # due
                schedule = due = NOW_US - rng.randrange(1, 3600) * SECOND
            elif draw < 0.101:  # in flight
                schedule, due = NOW_US - 60 * SECOND, NOW_US + rng.randrange(1, 600) * SECOND
                dispatched, kept = 1, progress
            elif draw < 0.15:  # retrying
                schedule = due = NOW_US + rng.randrange(1, 86400) * SECOND
                dispatched, kept = 1, progress
            else:  # scheduled
                schedule = due = NOW_US + rng.randrange(1, 86400) * SECOND
        yield (pk, f"t{n:07}", True, schedule, due, NOW_US - SECOND, text, body, dispatched, kept)


def finished_rows(count: int) -> Iterator[tuple[Any, ...]]:
    """Kept finished tasks over DEAD_QUEUES queues: half failed for good (one in 200 of those
    past its keep time but not swept yet), half succeeded."""
    spec, _ = template(Q)
    for n in range(count):
        queue_id = f"q{n % DEAD_QUEUES:03}"
        reason = ("max_attempts", "max_retry_duration", "succeeded", "succeeded")[n % 4]
        expire = NOW_US - SECOND if n % 400 == 0 else NOW_US + 86400 * SECOND
        yield (
            "projects/bench/locations/us-central1",
            queue_id,
            f"f{n}",
            reason,
            NOW_US,
            expire,
            NOW_US,
            spec,
            None,
            b"",
        )


FINISHED = ("parent", "queue_id", "task_id", "reason", "finish_us", "expire_us", "schedule_us", "spec")
FINISHED += ("progress", "body")


# -- filling each store ---------------------------------------------------------------------------


def queue_of(name: QueueName) -> Queue:
    return resolve_queue(Queue(name), Limits())


async def fill_sqlite(path: Path, tasks: int, ties: int, finished: int) -> None:
    store = SqliteStore(path, synchronous="off")
    await store.open()
    for name in (Q, TIES):
        await store.create_queue(queue_of(name), NOW)
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    pks = dict(conn.execute("SELECT queue_id, pk FROM queues").fetchall())
    insert = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    conn.executemany(insert, task_rows(pks[Q.queue_id], Q, tasks, ties=False))
    conn.executemany(insert, task_rows(pks[TIES.queue_id], TIES, ties, ties=True))
    conn.executemany(
        f"INSERT INTO finished_tasks ({', '.join(FINISHED)}) VALUES ({', '.join('?' * len(FINISHED))})",
        finished_rows(finished),
    )
    conn.execute("COMMIT")
    conn.close()


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def fill_postgres(dsn: str, tasks: int, ties: int, finished: int) -> None:
    database = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(with_database(dsn, "postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    store = PostgresStore(dsn)
    await store.open()
    for name in (Q, TIES):
        await store.create_queue(queue_of(name), NOW)
    await store.close()
    conn = await asyncpg.connect(dsn)
    pks = {row[0]: row[1] for row in await conn.fetch("SELECT queue_id, pk FROM queues")}
    for name, count, tied in ((Q, tasks, False), (TIES, ties, True)):
        await conn.copy_records_to_table(
            "tasks", records=task_rows(pks[name.queue_id], name, count, ties=tied), columns=COLUMNS
        )
    await conn.copy_records_to_table("finished_tasks", records=finished_rows(finished), columns=FINISHED)
    # What autovacuum does soon after a bulk load (statistics, and the visibility map that lets
    # counts run on indexes alone).
    await conn.execute("VACUUM ANALYZE tasks")
    await conn.execute("VACUUM ANALYZE finished_tasks")
    await conn.close()


async def fill_memory(store: MemoryStore, tasks: int, ties: int) -> None:
    for name in (Q, TIES):
        await store.create_queue(queue_of(name), NOW)
    for name, count, tied in ((Q, tasks, False), (TIES, ties, True)):
        for row in task_rows(0, name, count, ties=tied):
            _, _, _, schedule, due, _, spec, body, _, progress = row
            task = rows.task_of(spec, progress, body, codec.from_micros(schedule))
            await store.create_task(task, NOW)
            if due != schedule:
                await store.claim_task(task.name, NOW, codec.from_micros(due) - NOW - timedelta(minutes=10))


# -- measuring -------------------------------------------------------------------------------------


async def timed(run: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float, Any]:
    """Median and slowest milliseconds of ``repeat`` runs (after one warm-up), and the last answer."""
    answer = await run()
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = await run()
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took), max(took), answer


def middle(state: TaskState) -> BrowseCursor:
    """A cursor in the middle of ``state``'s range."""
    if state == TaskState.DUE:
        return BrowseCursor(NOW_US - 1800 * SECOND, 0)
    if state == TaskState.IN_FLIGHT:
        return BrowseCursor(NOW_US + 300 * SECOND, 0)
    return BrowseCursor(NOW_US + 43200 * SECOND, 0)


async def measure(label: str, store: Store, repeat: int, ties: int) -> None:
    print(
        f"\n{label}: browse_tasks, 50 tasks a page, scan limit 5,000 (ms: median / slowest; tasks, rows read)"
    )
    print(f"  {'state':<10} {'search':<16} {'first page':>26} {'deep page':>26}")
    for state in TaskState:
        for text in SEARCHES:
            cells = []
            for after in (None, middle(state)):

                async def page(
                    after: BrowseCursor | None = after, text: str = text, state: TaskState = state
                ) -> Any:
                    return await store.browse_tasks(Q, NOW, state, search=TaskSearch(text), after=after)

                median, worst, answer = await timed(page, repeat)
                cells.append(f"{median:6.1f} / {worst:6.1f} ({len(answer.tasks):>2}, {answer.scanned:>4})")
            print(f"  {state.value:<10} {text or '-':<16} {cells[0]:>26} {cells[1]:>26}")
    start = (await store.browse_tasks(TIES, NOW, TaskState.SCHEDULED)).next_cursor
    assert start is not None
    deep = BrowseCursor(start.key, start.seq + ties // 2)  # half-way through the tied tasks
    for name, after in (("first", None), ("deep", deep)):

        async def tied(after: BrowseCursor | None = after) -> Any:
            return await store.browse_tasks(TIES, NOW, TaskState.SCHEDULED, after=after)

        median, worst, _ = await timed(tied, repeat)
        print(f"  all tasks at one time, {name} page: {median:.1f} / {worst:.1f}")


async def measure_insights(store: Store, repeat: int) -> None:
    for node in ("node-a", "node-b", "node-c"):
        for minute in range(-59, 1):
            at = NOW + timedelta(minutes=minute)
            outcomes = [
                OutcomeMinute(QueueName("bench", "us-central1", f"q{q:03}"), at, 30, 2) for q in range(200)
            ]
            await store.add_outcomes(node, outcomes)
    add = [OutcomeMinute(QueueName("bench", "us-central1", f"q{q:03}"), NOW, 1, 0) for q in range(200)]
    one = QueueName("bench", "us-central1", "q001")
    since = NOW - timedelta(hours=1)
    timings = [
        ("dead_letter_counts, every queue", lambda: store.dead_letter_counts(NOW)),
        ("dead_letter_counts, one queue", lambda: store.dead_letter_counts(NOW, one)),
        ("outcomes (3 nodes x 200 queues x 60 minutes), every queue", lambda: store.outcomes(since)),
        ("outcomes, one queue", lambda: store.outcomes(since, one)),
        ("add_outcomes (200 queues)", lambda: store.add_outcomes("node-a", add)),
    ]
    for label, run in timings:
        median, worst, answer = await timed(run, repeat)
        size = f"{len(answer)} answers" if answer is not None else ""
        print(f"  {label:<62} {median:6.1f} / {worst:6.1f} ms  {size}")


# -- query plans -------------------------------------------------------------------------------------


def sqlite_plans(path: Path) -> None:
    conn = sqlite3.connect(path)
    print("\nSQLite query plans (EXPLAIN QUERY PLAN; the rest of the cursor's time, then later times):")
    for state in TaskState:
        for text in ("", "needle"):
            search = TaskSearch(text)
            params = browsing.chunk_params(state, 1, NOW_US, None, 51, search=search)
            for after in (browsing.SAME_KEY, browsing.LATER_KEY):
                statement = browsing.chunk_sql(state, search, browsing.SQLITE, after)
                plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params)]
                print(f"  {state.value} {text or '-'}: " + " | ".join(plan))
    conn.close()


async def postgres_plans(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    pk = await conn.fetchval("SELECT pk FROM queues WHERE queue_id = $1", Q.queue_id)
    await conn.execute("SET plan_cache_mode = force_generic_plan")  # as the store's sessions
    print("\nPostgreSQL query plans (generic, as the store runs them; EXPLAIN ANALYZE of a first page):")
    for state in TaskState:
        for text in ("", "needle"):
            search = TaskSearch(text)
            statement, params = browsing.numbered(
                browsing.chunk_sql(state, search, browsing.POSTGRESQL),
                browsing.chunk_params(state, pk, NOW_US, None, 51, search=search),
            )
            await conn.execute(f"PREPARE browse AS {statement}")
            literal = ", ".join(f"'{p}'" if isinstance(p, str) else str(p) for p in params)
            plan = await conn.fetch(
                f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) EXECUTE browse ({literal})"
            )
            await conn.execute("DEALLOCATE browse")
            print(f"  {state.value} {text or '-'}:")
            for row in plan:
                print(f"      {row[0]}")
    await conn.close()


# -- main ----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    stores = args.stores.split(",")
    if "sqlite" in stores:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "browse.db"
            start = time.monotonic()
            await fill_sqlite(path, args.tasks, args.ties, args.finished)
            print(f"SQLite: {args.tasks:,} + {args.ties:,} tasks written in {time.monotonic() - start:.0f} s")
            store = SqliteStore(path)
            await store.open()
            await measure("SQLite", store, args.repeat, args.ties)
            await measure_insights(store, args.repeat)
            await store.close()
            if args.plans:
                sqlite_plans(path)
    if "postgresql" in stores:
        start = time.monotonic()
        await fill_postgres(args.pg_dsn, args.tasks, args.ties, args.finished)
        print(
            f"\nPostgreSQL: {args.tasks:,} + {args.ties:,} tasks written in {time.monotonic() - start:.0f} s"
        )
        store = PostgresStore(args.pg_dsn, pool_size=2)
        await store.open()
        await measure("PostgreSQL", store, args.repeat, args.ties)
        await measure_insights(store, args.repeat)
        await store.close()
        if args.plans:
            await postgres_plans(args.pg_dsn)
    if "memory" in stores:
        memory = MemoryStore()
        start = time.monotonic()
        await fill_memory(memory, args.tasks, args.ties)
        print(f"\nmemory: {args.tasks:,} + {args.ties:,} tasks created in {time.monotonic() - start:.0f} s")
        await measure("memory", memory, args.repeat, args.ties)
        await measure_insights(memory, args.repeat)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument(
        "--ties", type=int, default=200_000, help="tasks of the queue whose tasks share one time"
    )
    parser.add_argument("--finished", type=int, default=400_000, help="kept finished tasks (half failed)")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plans", action="store_true", help="print the query plans of the pages")
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/opentasks_bench_browse")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
