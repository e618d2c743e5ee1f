import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from opentasks.storage.base import Store
from opentasks.storage.memory import MemoryStore
from opentasks.storage.postgres import PostgresStore
from opentasks.storage.sqlite import SqliteStore

StoreFactory = Callable[[], Store]

PG_DSN = os.environ.get("OPENTASKS_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/opentasks_test"
"""The test database (created if missing); OPENTASKS_TEST_PG names another one."""
PG_TABLES = (
    "tasks, task_tombstones, queue_owners, queues, queue_tombstones, nodes, opentasks_secrets,"
    " finished_tasks, attempts, outcomes"
)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def unreachable(reason: str) -> None:
    """Skip the PostgreSQL tests, or fail them in CI, where PostgreSQL must be there."""
    message = f"PostgreSQL at {PG_DSN} is unreachable ({reason})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the PostgreSQL tests (.ci/run starts the server)")
    pytest.skip(f"{message}; start it or set OPENTASKS_TEST_PG to run the PostgreSQL tests")


async def _prepare_database(dsn: str) -> None:
    """Create the database if missing and bring its schema up to date (once per session)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(with_database(dsn, "postgres"), timeout=5)
        try:
            database = urlsplit(dsn).path.lstrip("/")
            await admin.execute(f'CREATE DATABASE "{database}"')
        except asyncpg.DuplicateDatabaseError:
            pass  # created by someone else meanwhile
        finally:
            await admin.close()
    else:
        await conn.close()
    store = PostgresStore(dsn)
    await store.open()
    await store.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The DSN of the migrated test database; skips (fails in CI) when PostgreSQL is not there."""
    try:  # on a thread of its own: the fixture may be asked for from inside a running event loop
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _prepare_database(PG_DSN)).result()
    except (OSError, TimeoutError, asyncpg.PostgresError, RuntimeError) as error:
        unreachable(" ".join(str(error).split()) or type(error).__name__)
    return PG_DSN


async def empty_postgres(dsn: str) -> None:
    """Every table emptied and the identities restarted: each test starts from a fresh schema."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {PG_TABLES} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes stores of one backend; for persistent backends every store made shares one database."""
    if request.param == "memory":
        return MemoryStore
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("postgres_dsn")
        await empty_postgres(dsn)
        return lambda: PostgresStore(dsn, pool_size=4)
    return lambda: SqliteStore(tmp_path / "contract.db")


def shares_database(store: Store) -> bool:
    """Whether separately opened stores of this backend may use one database at once
    (PostgreSQL); the exclusive backends stand in for a second node with the same instance."""
    return isinstance(store, PostgresStore)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    opened = store_factory()
    await opened.open()
    yield opened
    await opened.close()


async def _recreate_database(database: str) -> None:
    conn = await asyncpg.connect(with_database(PG_DSN, "postgres"), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


def fresh_storage(database: str) -> str:
    """The storage URL of ``database``, dropped and created empty (for tests that start real
    servers); skips, or fails in CI, when PostgreSQL is unreachable."""
    try:
        asyncio.run(_recreate_database(database))
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        unreachable(" ".join(str(error).split()) or type(error).__name__)
    return with_database(PG_DSN, database) + "?pool_size=4"
