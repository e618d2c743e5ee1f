"""The SQLite store's files: private modes, clear refusals at open, the readiness probe, the
indexes its reads use, history kept across a schema upgrade and pruned past its keep time."""

import dataclasses
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opentasks.domain.history import FAILED_REASONS, FinishReason
from opentasks.domain.names import QueueName
from opentasks.storage import rows
from opentasks.storage.base import AttemptResult, StoreUnusable
from opentasks.storage.sqlite import DatabaseInUse, SqliteStore, _finished_filter
from opentasks.storage.sqlite_files import latest_schema
from tests.contract.test_history_contract import KEEP, claimed, dead_letter, record
from tests.contract.test_store_contract import T0, Q, queue, task


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_database_wal_shm_and_lock_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteStore(path)
    await store.open()
    try:
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        await store.close()


async def test_a_missing_directory_is_refused_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "t.db"
    with pytest.raises(StoreUnusable, match=r"directory .*missing.* does not exist"):
        await SqliteStore(path).open()
    assert not path.parent.exists()


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    garbage = b"this is not an SQLite file at all\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreUnusable, match="corrupt or not a database") as raised:
        await SqliteStore(path).open()
    assert "\n" not in str(raised.value)
    assert path.read_bytes() == garbage


async def test_a_damaged_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    data = bytearray(path.read_bytes())
    data[:16] = b"garbage garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(StoreUnusable, match="corrupt"):
        await SqliteStore(path).open()


async def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={latest_schema() + 1}")
    with pytest.raises(StoreUnusable, match=f"schema version {latest_schema() + 1}, newer than"):
        await SqliteStore(path).open()
    # refused before anything was written: the version is still the newer one
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_schema() + 1


async def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreUnusable, match="another program"):
        await SqliteStore(path).open()
    # left exactly as it was: no WAL mode, no lock file beside it
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not path.with_name("other.db.lock").exists()


async def test_a_refused_open_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    path.write_bytes(b"x" * 4096)
    with pytest.raises(StoreUnusable):
        await SqliteStore(path).open()
    path.unlink()
    store = SqliteStore(path)
    await store.open()  # not DatabaseInUse
    await store.close()


async def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "t.db")
    await first.open()
    try:
        with pytest.raises(DatabaseInUse):
            await SqliteStore(tmp_path / "t.db").open()
    finally:
        await first.close()


async def test_probe_reports_a_removed_or_replaced_file(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "t.db"
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.probe() is None
        moved = tmp_path / "moved"
        folder.rename(moved)
        reason = await store.probe()
        assert reason is not None
        assert "unreachable" in reason
        folder.mkdir()
        path.write_bytes(b"")
        assert "replaced" in (await store.probe() or "")
    finally:
        await store.close()
    assert await store.probe() == "the store is closed"


@pytest.mark.parametrize(
    ("reasons", "index"),
    [
        (FAILED_REASONS, "finished_tasks_dead"),
        ({FinishReason.SUCCEEDED}, "finished_tasks_succeeded"),
        ({FinishReason.DELETED, FinishReason.PURGED}, "finished_tasks_removed"),
        (None, "finished_tasks_queue"),
    ],
)
async def test_each_dashboard_tab_of_finished_tasks_reads_its_own_index(
    tmp_path: Path, reasons: set[FinishReason] | None, index: str
) -> None:
    """A rare reason among a queue's kept rows must not mean reading all of them."""
    path = tmp_path / "t.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    where, params = _finished_filter(datetime.now(UTC), reasons, 0)
    with sqlite3.connect(path) as conn:
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT {rows.FINISHED_COLUMNS} FROM finished_tasks WHERE {where}"
            " ORDER BY seq DESC LIMIT 51",
            (1, *params),  # the queue's history key first
        ).fetchall()
    assert f"USING INDEX {index} " in " ".join(str(step[-1]) for step in plan) + " "
    assert "TEMP B-TREE" not in str(plan)  # read in order, no sort


# History as schema version 7 indexed it: by the queue's name, before history_queues (and before
# redrives were marked).
_VERSION_7_HISTORY = """
DROP INDEX finished_tasks_queue; DROP INDEX finished_tasks_dead; DROP INDEX finished_tasks_succeeded;
DROP INDEX finished_tasks_removed; DROP INDEX finished_tasks_name; DROP INDEX attempts_task;
ALTER TABLE finished_tasks DROP COLUMN qkey; ALTER TABLE attempts DROP COLUMN qkey;
ALTER TABLE finished_tasks DROP COLUMN redriven_as; ALTER TABLE finished_tasks DROP COLUMN redrive_us;
DROP TABLE history_queues;
CREATE INDEX finished_tasks_queue ON finished_tasks (parent, queue_id, seq);
CREATE INDEX finished_tasks_failed ON finished_tasks (parent, queue_id, seq)
    WHERE reason IN ('max_attempts', 'max_retry_duration');
CREATE INDEX finished_tasks_name ON finished_tasks (parent, queue_id, task_id);
CREATE INDEX finished_tasks_succeeded ON finished_tasks (parent, queue_id, seq) WHERE reason = 'succeeded';
CREATE INDEX finished_tasks_removed ON finished_tasks (parent, queue_id, seq)
    WHERE reason IN ('deleted', 'purged');
CREATE INDEX attempts_task ON attempts (parent, queue_id, task_id);
PRAGMA user_version = 7;
"""


async def test_history_kept_before_the_queue_keys_is_read_after_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteStore(path)
    await store.open()
    await store.create_queue(queue(), T0)
    first = await claimed(store, "a")
    ended = AttemptResult(
        first.name,
        1,
        None,
        attempt=record(first, 503),
        finish=FinishReason.MAX_ATTEMPTS,
        finish_time=T0,
        finished_as=first,
    )
    await store.finish_attempts([ended], KEEP)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(_VERSION_7_HISTORY)
    store = SqliteStore(path)
    await store.open()
    try:
        [kept] = (await store.finished_tasks(Q, T0)).tasks
        assert (kept.task.name, kept.reason) == (first.name, FinishReason.MAX_ATTEMPTS)
        ends, attempts = await store.task_history(first.name, T0)
        assert [a.http_status for a in attempts] == [503] and len(ends) == 1
        assert (await store.dead_letter_counts(T0)) == {Q: 1}
        second = await claimed(store, "b")  # the upgraded name's key is used for new rows too
        await store.finish_attempts([AttemptResult(second.name, 1, None, attempt=record(second, 503))], KEEP)
        assert len((await store.task_history(second.name, T0))[1]) == 1
        [end] = (await store.task_history(first.name, T0))[0]
        await store.redrive_task(first.name, end.key, task("again"), T0)  # an upgraded one is marked
        assert (await store.dead_letter_counts(T0)) == {}
    finally:
        await store.close()


async def test_expired_history_is_pruned_and_kept_history_stays(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.create_queue(queue(), T0)
        for task_id, keep in (("short", timedelta(hours=1)), ("long", timedelta(days=7))):
            await dead_letter(store, task_id, dataclasses.replace(KEEP, history_until=T0 + keep))
        later = dataclasses.replace(KEEP, now=T0 + timedelta(hours=2))
        await store.finish_attempts([], later)  # results more than a minute on start a prune
        await store.create_queue(queue(QueueName("p", "l", "other")), T0)  # a write after it
        with sqlite3.connect(path) as conn:
            for table in ("finished_tasks", "attempts"):
                assert conn.execute(f"SELECT task_id FROM {table}").fetchall() == [("long",)]
    finally:
        await store.close()
