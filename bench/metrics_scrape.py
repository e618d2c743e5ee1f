"""Scrape time of /metrics at scale: QUEUES queues holding TASKS tasks in SQLite (half due, half
scheduled ahead by default), every queue with attempts, outcomes and histograms recorded, then
a full render (queue gauges read from the store's counts, every series formatted).

Usage: python bench/metrics_scrape.py [--queues 1000] [--tasks 1000000] [--ahead 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from opentasks.clock import SystemClock
from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue, resolve_queue
from opentasks.domain.task import AttemptOutcome, HttpRequest, TaskDraft, new_task
from opentasks.metrics import Metrics
from opentasks.service.observers import AttemptFinished, FinishReason, TaskCreated, TaskFinished
from opentasks.service.queue_insights import StoreInsights
from opentasks.storage import codec, rows
from opentasks.storage.sqlite import SqliteStore


async def fill(path: Path, queues: int, tasks: int, ahead: float) -> list[QueueName]:
    clock = SystemClock()
    store = SqliteStore(path, synchronous="OFF")
    await store.open()
    names = [QueueName("bench", "us-central1", f"q{index:04d}") for index in range(queues)]
    for name in names:
        await store.create_queue(resolve_queue(Queue(name), Limits()), clock.now())
    await store.close()
    now = clock.now()
    sample = new_task(
        TaskDraft(http_request=HttpRequest(url="https://example.com/h", body=b"{}")),
        names[0],
        now,
        "x",
        Limits(),
    )
    spec, body = rows.spec_json(sample), rows.body_of(sample)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    per_queue, future = tasks // queues, int(tasks // queues * ahead)
    now_us = codec.to_micros(now)
    for pk in range(1, queues + 1):
        conn.executemany(
            "INSERT INTO tasks (queue_pk, task_id, named, schedule_us, due_us, enqueue_us, spec, body)"
            " VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
            (
                (pk, str(i), s, s, now_us, spec, body)
                for i in range(per_queue)
                for s in [now_us + (3600_000_000 + i if i < future else -i)]
            ),
        )
    conn.commit()
    conn.close()
    return names


def record_activity(metrics: Metrics, names: list[QueueName]) -> None:
    now = SystemClock().now()
    for name in names:
        task = new_task(
            TaskDraft(http_request=HttpRequest(url="https://example.com/h")), name, now, "x", Limits()
        )
        metrics.task_created(TaskCreated(task))
        for status in (200, 404, 500, 503):
            metrics.attempt_finished(AttemptFinished(task, AttemptOutcome(http_status=status), 0.05, 0.2))
        for reason in FinishReason:
            metrics.task_finished(TaskFinished(task.name, reason, 1))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--ahead", type=float, default=0.5, help="share of tasks scheduled in the future")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scale.db"
        started = time.perf_counter()
        names = await fill(path, args.queues, args.tasks, args.ahead)
        print(
            f"filled {args.queues:,} queues / {args.tasks:,} tasks in {time.perf_counter() - started:.1f} s"
        )
        clock = SystemClock()
        store = SqliteStore(path)
        await store.open()
        metrics = Metrics(clock, StoreInsights(store, clock))
        record_activity(metrics, names)
        timings, size = [], 0
        for _ in range(args.rounds):
            started = time.perf_counter()
            size = len(await metrics.render())
            timings.append(time.perf_counter() - started)
        counts = await store.task_counts(clock.now() + timedelta(seconds=1))
        await store.close()
    total = sum(c.tasks for c in counts.values())
    print(f"scrape: {size:,} bytes, {total:,} tasks counted")
    print(
        f"  full scrape: median {statistics.median(timings) * 1000:.1f} ms, "
        f"max {max(timings) * 1000:.1f} ms over {args.rounds} rounds (target < 100 ms)"
    )


if __name__ == "__main__":
    asyncio.run(main())
