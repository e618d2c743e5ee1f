"""Online backup of an SQLite database, consistent while a server serves from it.

SQLite's backup API copies the database page by page. The source connection first opens a read
transaction and keeps it for the whole copy, so every step reads the same snapshot: the copy
is the database as of one instant (every task acknowledged before it, none half-written), and
the server's commits meanwhile neither restart the copy nor wait for it (WAL lets one writer
and readers run side by side; only the WAL's checkpoint waits until the copy ends). The
server's lock file is not touched. Steps of ``pages`` pages keep each hold short.

The copy is written beside the target under a temporary name, owner-only (0600), switched to a
single self-contained file (rollback journal instead of WAL), checked with ``quick_check``,
synced to disk and only then renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from opentasks.storage.sqlite_files import PRIVATE

DEFAULT_STEP_PAGES = 1024


class BackupError(RuntimeError):
    """The backup could not be made; the message says why. Nothing was left at the target."""


@dataclass(frozen=True)
class BackupReport:
    """What a backup holds."""

    target: Path
    schema_version: int
    queues: int
    tasks: int
    size_bytes: int
    steps: int


def backup(
    source: Path, target: Path, *, overwrite: bool = False, pages: int = DEFAULT_STEP_PAGES
) -> BackupReport:
    """Copy the database at ``source`` to ``target`` as of one instant (see the module docstring)."""
    if not source.is_file():
        raise BackupError(f"{source} does not exist or is not a file; nothing to back up")
    if target.exists() and (target.resolve() == source.resolve() or not overwrite):
        raise BackupError(f"{target} already exists; choose another file (or --overwrite)")
    if not target.parent.is_dir():
        raise BackupError(f"the directory {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial")
    try:
        report = _copy(source, partial, pages)
        os.replace(partial, target)
    except sqlite3.Error as error:
        raise BackupError(f"cannot back up {source}: {error}") from None
    finally:
        for leftover in (partial, Path(f"{partial}-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    _sync_directory(target.parent)
    return BackupReport(
        target, report.schema_version, report.queues, report.tasks, report.size_bytes, report.steps
    )


def _copy(source: Path, partial: Path, pages: int) -> BackupReport:
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE))
    # mode=rw: never create a missing source; query_only: this connection writes nothing.
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
    dst = sqlite3.connect(partial, isolation_level=None)
    steps = 0

    def progress(_status: int, _remaining: int, _total: int) -> None:
        nonlocal steps
        steps += 1

    try:
        src.execute("PRAGMA query_only=ON")
        src.execute("PRAGMA busy_timeout=10000")
        src.execute("BEGIN")  # the snapshot: it starts with the first read
        version, queues, tasks = _describe(src, source)
        src.backup(dst, pages=pages, progress=progress)
        src.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        check = dst.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the copy of {source} failed its integrity check: {check}")
    finally:
        src.close()
        dst.close()
    with open(partial, "rb+") as written:
        os.fsync(written.fileno())
    return BackupReport(partial, version, queues, tasks, partial.stat().st_size, steps)


def _describe(conn: sqlite3.Connection, source: Path) -> tuple[int, int, int]:
    """Schema version, queues and tasks of the snapshot (also the read that pins it)."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as error:
        raise BackupError(f"{source} is not a usable SQLite database ({error})") from None
    if version == 0:
        raise BackupError(f"{source} is not an opentasks database (it has no schema version)")
    queues = int(conn.execute("SELECT count(*) FROM queues").fetchone()[0])
    tasks = int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])
    return version, queues, tasks


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
