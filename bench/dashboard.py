"""Dashboard pages over HTTP against a real server whose one queue holds 1,000,000 tasks.

The store is filled straight through its tables (bulk insert, no API), relative to the real
clock: about 10 % of the tasks due, 0.1 % in flight, 5 % retrying, the rest scheduled over the
next day; one in 1,000 carries the header value ``needle-N``. --finished tasks are kept as
finished (half failed for good, half succeeded) with a few attempts each for the first ones, and
per-minute outcomes fill the last 30 minutes. Then ``opentasks serve --no-dispatch`` runs on
the store (so nothing moves while it is measured), and each page is fetched --repeat times over
one keep-alive connection after a warm-up; the median and the slowest are printed in ms, and the
median against the API's own page of 50 tasks (ListTasks), fetched the same way. Requests are
1.1 s apart, so no page profits from the counts the server shares between viewers for a second.

SQLite always; PostgreSQL when it answers at --pg-dsn (the database is dropped and made again).

    python bench/dashboard.py [--tasks 1000000] [--finished 1000000] [--repeat 9]
        [--stores sqlite,postgresql] [--pg-dsn postgresql://postgres@127.0.0.1:5432/opentasks_bench_dashboard]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from opentasks.domain.attempt import claim
from opentasks.domain.browse import OutcomeMinute
from opentasks.domain.history import AttemptRecord
from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import Queue, resolve_queue
from opentasks.domain.task import HttpRequest, TaskDraft, new_task
from opentasks.storage import codec, rows
from opentasks.storage.base import Store
from opentasks.storage.postgres import PostgresStore
from opentasks.storage.sqlite import SqliteStore
from opentasks.testing import ServerProcess

Q = QueueName("bench", "us-central1", "big")
OTHERS = [QueueName("bench", "us-central1", f"small-{n}") for n in range(9)]
SECOND = 1_000_000
TASK_COLUMNS = ("queue_pk", "task_id", "named", "schedule_us", "due_us", "enqueue_us", "spec", "body")
TASK_COLUMNS += ("dispatch_count", "progress")
FINISHED_COLUMNS = ("parent", "queue_id", "task_id", "reason", "finish_us", "expire_us", "schedule_us")
FINISHED_COLUMNS += ("spec", "progress", "body")
ATTEMPT_COLUMNS = (*(c.strip() for c in rows.ATTEMPT_COLUMNS.split(",")), "expire_us")
PAUSE_S = 1.1
KEPT_ATTEMPTS = 200  # finished tasks that get three attempts each
BODY = (
    b'{"order": 42, "customer": "cust-1", "lines": [{"sku": "A-1", "qty": 2}], "note": "' + b"x" * 60 + b'"}'
)


# -- the rows --------------------------------------------------------------------------------------


def template(now: datetime) -> tuple[str, str]:
    """A task's stored spec with placeholders, and the progress of a task attempted once."""
    draft = TaskDraft(
        name=f"{Q}/tasks/TASKID",
        http_request=HttpRequest(
            url="https://api.example.com/orders/ORDER", headers={"X-Customer": "CUSTOMER"}
        ),
    )
    task = new_task(draft, Q, now, "TASKID", Limits())
    return rows.spec_json(task), rows.progress_json(claim(task, now)) or ""


def task_rows(pk: int, count: int, now_us: int, spec: str, progress: str) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(1)
    for n in range(count):
        customer = f"needle-{n}" if n % 1000 == 7 else f"cust-{n % 5000}"
        text = spec.replace("TASKID", f"t{n:07}").replace("ORDER", str(n)).replace("CUSTOMER", customer)
        dispatched, kept = 0, None
        draw = rng.random()
        if draw < 0.10:  # due
            schedule = due = now_us - rng.randrange(1, 3600) * SECOND
        elif draw < 0.101:  # in flight: leased for a while yet
            schedule, due = now_us - 60 * SECOND, now_us + rng.randrange(3600, 7200) * SECOND
            dispatched, kept = 1, progress
        elif draw < 0.15:  # retrying
            schedule = due = now_us + rng.randrange(3600, 86400) * SECOND
            dispatched, kept = 1, progress
        else:  # scheduled
            schedule = due = now_us + rng.randrange(3600, 86400) * SECOND
        yield (pk, f"t{n:07}", True, schedule, due, now_us - 3600 * SECOND, text, BODY, dispatched, kept)


def finished_rows(count: int, now_us: int, spec: str) -> Iterator[tuple[Any, ...]]:
    for n in range(count):
        reason = ("max_attempts", "succeeded")[n % 2]
        text = spec.replace("TASKID", f"f{n:07}").replace("ORDER", str(n)).replace("CUSTOMER", f"cust-{n}")
        finish = now_us - (count - n) * 1000
        yield (
            str(Q.parent),
            Q.queue_id,
            f"f{n:07}",
            reason,
            finish,
            now_us + 86400 * SECOND,
            finish,
            text,
            None,
            BODY,
        )


def attempt_rows(count: int, now: datetime) -> Iterator[tuple[Any, ...]]:
    for n in range(count):
        for attempt in (1, 2, 3):
            record = AttemptRecord(
                task=TaskName(Q, f"f{n:07}"),
                created=now - timedelta(hours=1),
                attempt=attempt,
                dispatch_time=now - timedelta(minutes=10 - attempt),
                duration=timedelta(milliseconds=35),
                http_status=503,
                response_headers=(("Content-Type", "application/json"),),
                response_body=b'{"error": "upstream unavailable"}',
            )
            yield (*rows.attempt_values(record), codec.to_micros(now) + 86400 * SECOND)


async def prepare(store: Store, now: datetime) -> None:
    """The queues, and per-minute outcomes for the charts."""
    await store.open()
    for name in (Q, *OTHERS):
        await store.create_queue(resolve_queue(Queue(name), Limits()), now)
    minute = now.replace(second=0, microsecond=0)
    outcomes = [
        OutcomeMinute(name, minute - timedelta(minutes=m), 100 + m, m % 7)
        for name in (Q, *OTHERS)
        for m in range(30)
    ]
    await store.add_outcomes("bench", outcomes)
    await store.close()


# -- filling each store ----------------------------------------------------------------------------


async def fill_sqlite(path: Path, tasks: int, finished: int, now: datetime) -> None:
    await prepare(SqliteStore(path, synchronous="off"), now)
    now_us = codec.to_micros(now)
    spec, progress = template(now)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    pk = conn.execute("SELECT pk FROM queues WHERE queue_id = ?", (Q.queue_id,)).fetchone()[0]
    conn.executemany(_insert("tasks", TASK_COLUMNS), task_rows(pk, tasks, now_us, spec, progress))
    conn.executemany(_insert("finished_tasks", FINISHED_COLUMNS), finished_rows(finished, now_us, spec))
    conn.executemany(_insert("attempts", ATTEMPT_COLUMNS), attempt_rows(min(KEPT_ATTEMPTS, finished), now))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


async def postgres_reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(_database(dsn, "postgres"), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def _database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def fill_postgres(dsn: str, tasks: int, finished: int, now: datetime) -> None:
    database = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(_database(dsn, "postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    await prepare(PostgresStore(dsn), now)
    now_us = codec.to_micros(now)
    spec, progress = template(now)
    conn = await asyncpg.connect(dsn)
    pk = await conn.fetchval("SELECT pk FROM queues WHERE queue_id = $1", Q.queue_id)
    await conn.copy_records_to_table(
        "tasks", records=task_rows(pk, tasks, now_us, spec, progress), columns=TASK_COLUMNS
    )
    await conn.copy_records_to_table(
        "finished_tasks", records=finished_rows(finished, now_us, spec), columns=FINISHED_COLUMNS
    )
    await conn.copy_records_to_table(
        "attempts", records=attempt_rows(min(KEPT_ATTEMPTS, finished), now), columns=ATTEMPT_COLUMNS
    )
    for table in ("tasks", "finished_tasks", "attempts"):
        await conn.execute(f"VACUUM ANALYZE {table}")  # what autovacuum does soon after a bulk load
    await conn.close()


# -- measuring --------------------------------------------------------------------------------------


async def timed(session: aiohttp.ClientSession, url: str, repeat: int) -> tuple[float, float, str]:
    """Median and slowest milliseconds of ``repeat`` GETs of ``url`` (after a warm-up), and the text."""
    text = await _get(session, url)
    took = []
    for _ in range(repeat):
        await asyncio.sleep(PAUSE_S)  # past the second for which the server shares its counts
        start = time.perf_counter()
        text = await _get(session, url)
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took), max(took), text


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url, allow_redirects=False) as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status} {text[:300]}")
        return text


def pages(base: str, cursors: dict[str, str]) -> list[tuple[str, str]]:
    queue = f"{base}/ui/projects/{Q.project}/locations/{Q.location}/queues/{Q.queue_id}"
    found = [("overview", f"{base}/ui/"), ("overview, live fragment", f"{base}/ui/?fragment=queues")]
    for tab in ("due", "scheduled", "retrying", "in_flight", "succeeded", "failed", "deleted"):
        found.append((f"queue, {tab} tab", f"{queue}?tab={tab}"))
    found += [
        ("queue, due tab, next page", f"{queue}?tab=due&cursor={cursors.get('due', '')}"),
        ("queue, scheduled tab, next page", f"{queue}?tab=scheduled&cursor={cursors.get('scheduled', '')}"),
        ("queue, failed tab, next page", f"{queue}?tab=failed&cursor={cursors.get('failed', '')}"),
        ("queue, search 1 in 1,000", f"{queue}?tab=scheduled&q=needle"),
        ("queue, search matching none", f"{queue}?tab=scheduled&q=nothing-matches"),
        ("queue, failed tab, search", f"{queue}?tab=failed&q=cust-7"),
        ("queue, live fragment", f"{queue}?tab=due&fragment=live"),
        ("queue, tasks fragment", f"{queue}?tab=due&fragment=tasks"),
        ("task page, queued task", f"{queue}/tasks/t0000007"),
        ("task page, dead letter with attempts", f"{queue}/tasks/f0000000"),
    ]
    return found


async def ready(session: aiohttp.ClientSession, url: str) -> None:
    """Wait until the HTTP port answers (it opens just after the gRPC port)."""
    for _ in range(100):
        try:
            await _get(session, url)
            return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} does not answer")


_NEXT = re.compile(r'rel="next" href="[^"]*?cursor=([^"&]+)')


async def next_cursors(session: aiohttp.ClientSession, base: str) -> dict[str, str]:
    queue = f"{base}/ui/projects/{Q.project}/locations/{Q.location}/queues/{Q.queue_id}"
    found = {}
    for tab in ("due", "scheduled", "failed"):
        match = _NEXT.search(await _get(session, f"{queue}?tab={tab}"))
        if match:
            found[tab] = match[1]
    return found


async def measure(label: str, storage: str, repeat: int, keys: Path) -> None:
    server = ServerProcess(storage, "--no-dispatch", "--keys-dir", str(keys)).start(timeout_s=120)
    base = f"http://127.0.0.1:{server.http_port}"
    try:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            await ready(session, f"{base}/healthz")
            api = f"{base}/v2/{Q}/tasks?pageSize=50"
            baseline, baseline_worst, _ = await timed(session, api, repeat)
            health, _, _ = await timed(session, f"{base}/healthz", repeat)
            cursors = await next_cursors(session, base)
            print(f"\n{label}: ms over HTTP (median / slowest of {repeat}); x = median / ListTasks' median")
            print(f"  {'GET /healthz':<40} {health:7.1f}")
            print(f"  {'ListTasks, 50 tasks (the API)':<40} {baseline:7.1f} / {baseline_worst:7.1f}   1.0x")
            for name, url in pages(base, cursors):
                median, worst, _ = await timed(session, url, repeat)
                flag = "" if worst < 300 else "   over 300 ms"
                print(f"  {name:<40} {median:7.1f} / {worst:7.1f} {median / baseline:5.1f}x{flag}")
    finally:
        server.stop()


async def run(args: argparse.Namespace) -> None:
    stores = args.stores.split(",")
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as folder:
        keys = Path(folder) / "keys"
        if "sqlite" in stores:
            path = Path(folder) / "dashboard.db"
            start = time.monotonic()
            await fill_sqlite(path, args.tasks, args.finished, now)
            print(
                f"SQLite: {args.tasks:,} tasks and {args.finished:,} finished ones written "
                f"in {time.monotonic() - start:.0f} s"
            )
            await measure("SQLite", f"sqlite:///{path}", args.repeat, keys)
        if "postgresql" in stores:
            if not await postgres_reachable(args.pg_dsn):
                print(f"\nPostgreSQL: nothing answers at {args.pg_dsn}; skipped")
                return
            start = time.monotonic()
            await fill_postgres(args.pg_dsn, args.tasks, args.finished, now)
            print(f"\nPostgreSQL: {args.tasks:,} tasks written in {time.monotonic() - start:.0f} s")
            await measure("PostgreSQL", args.pg_dsn, args.repeat, keys)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/opentasks_bench_dashboard")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
