"""Which SQLite commits wait for fsync: everything a caller is promised durable does; batches of
dispatch bookkeeping alone (claims, attempt results) do not."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue
from opentasks.domain.task import HttpRequest, TaskDraft, new_task
from opentasks.storage.base import AttemptResult, Windows
from opentasks.storage.sqlite import SqliteStore

Q = QueueName("p", "l", "q")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
WINDOWS = Windows(NOW + timedelta(hours=1), NOW + timedelta(days=7))


GRACE = timedelta(seconds=30)


@pytest.mark.parametrize(
    ("level", "bookkeeping"), [("FULL", "NORMAL"), ("NORMAL", "NORMAL"), ("EXTRA", "NORMAL")]
)
async def test_only_dispatch_bookkeeping_skips_fsync(tmp_path: Path, level: str, bookkeeping: str) -> None:
    store = SqliteStore(tmp_path / "t.db", synchronous=level)
    await store.open()
    levels: list[str] = []
    current = [level]

    def trace(statement: str) -> None:
        if statement.startswith("PRAGMA synchronous="):
            current[0] = statement.split("=", 1)[1]
        elif statement == "COMMIT":
            levels.append(current[0])

    assert store._conn is not None
    store._conn.set_trace_callback(trace)
    draft = TaskDraft(http_request=HttpRequest(url="https://h/x"))
    await store.create_queue(Queue(Q), NOW)
    await store.create_task(new_task(draft, Q, NOW, "1", Limits()), NOW)
    claimed = (await store.claim_due_tasks(Q, NOW, 10, GRACE)).tasks
    await store.finish_attempts(
        [AttemptResult(t.name, t.dispatch_count, None, t.named) for t in claimed], WINDOWS
    )
    # A create that shares a batch with bookkeeping makes the whole commit durable.
    await asyncio.gather(
        store.create_task(new_task(draft, Q, NOW, "2", Limits()), NOW),
        store.claim_due_tasks(Q, NOW, 10, GRACE),
    )
    await store.close()
    assert levels == [level, level, bookkeeping, bookkeeping, level]
