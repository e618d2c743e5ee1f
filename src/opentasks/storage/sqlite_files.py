"""The files of an SQLite database, checked before and while a store uses them.

* The database, its ``-wal`` / ``-shm`` files and the lock file are created readable and
  writable by their owner only (0600): task bodies are often private. SQLite gives the WAL and
  shared-memory files the database file's mode, so creating that one right is enough for them.
* A path whose directory does not exist, a file that is not an SQLite database (or is
  corrupt), an SQLite database of another program, and a schema newer than this code are
  refused with a one-line :class:`StoreUnusable` that says what to do.
* :func:`probe` tells a running store whether its file is still the one it opened.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from opentasks.storage.base import StoreUnusable
from opentasks.storage.migrations import scripts

_log = logging.getLogger("opentasks.storage")
PRIVATE = 0o600


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named when the store opened it (device and inode)."""

    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        found = path.stat()
        return cls(found.st_dev, found.st_ino)


def latest_schema() -> int:
    """The newest schema version this code knows (the number of its last migration)."""
    return max(number for number, _ in scripts("sqlite"))


def prepare(path: Path) -> None:
    """Check that ``path`` can hold a database and create it empty, owner-only, if it is missing."""
    directory = path.parent
    if not directory.is_dir():
        raise StoreUnusable(
            f"the directory {directory} of the database {path} does not exist; "
            "create it, or fix the --storage path"
        )
    if path.exists() and not path.is_file():
        raise StoreUnusable(f"{path} is not a regular file; --storage must name a database file")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), PRIVATE))
    except OSError as error:
        raise StoreUnusable(f"cannot open {path}: {error.strerror}") from None


def warn_if_shared(path: Path) -> None:
    """Log a warning when other users may read the database (a file made by an older version)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        _log.warning(
            "%s is readable by other users (mode %o); it holds every task body: chmod 600 it "
            "(and its -wal and -shm files)",
            path,
            mode,
        )


def open_private(path: Path) -> int:
    """A file descriptor of ``path``, created owner-only if missing (for the lock file)."""
    return os.open(path, os.O_CREAT | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), PRIVATE)


def check_schema(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of the database; StoreUnusable if it is not opentasks' or too new.

    It is also the first read of the file, so a file that is not an SQLite database, or whose
    header is damaged, fails here."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    except sqlite3.DatabaseError as error:
        raise unusable(path, error) from None
    latest = latest_schema()
    if version > latest:
        raise StoreUnusable(
            f"{path} has schema version {version}, newer than this opentasks understands (up to "
            f"{latest}): it was written by a newer opentasks. Run that version, or restore a backup "
            "taken before the upgrade (see docs/operating.md)"
        )
    if version == 0 and tables:
        raise StoreUnusable(
            f"{path} is an SQLite database of another program (it has tables but no opentasks "
            "schema version); give opentasks a file of its own"
        )
    return version


def unusable(path: Path, error: sqlite3.Error) -> StoreUnusable:
    """The one-line error for an SQLite failure while opening ``path``."""
    reason = str(error)
    if "not a database" in reason or "malformed" in reason:
        return StoreUnusable(
            f"{path} is not a usable SQLite database ({reason}): it is corrupt or not a database. "
            "Move it away and restore a backup (see docs/operating.md)"
        )
    return StoreUnusable(f"cannot open the database {path}: {reason}")


def probe(conn: sqlite3.Connection, path: Path, identity: FileIdentity | None) -> str | None:
    """Why the store cannot serve from ``path`` (None when it can): the file must still be the
    one the store opened (not deleted, moved or replaced), and answer a query."""
    try:
        current = FileIdentity.of(path)
    except OSError as error:
        return f"the database file {path} is unreachable: {error.strerror or error}"
    if identity is not None and current != identity:
        return f"the database file {path} was replaced since the server opened it"
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        return f"the database {path} does not answer: {error}"
    return None
