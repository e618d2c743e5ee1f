from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from opentasks.storage.base import Store
from opentasks.storage.memory import MemoryStore
from opentasks.storage.sqlite import SqliteStore

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes stores of one backend; for persistent backends every store made shares one database."""
    if request.param == "memory":
        return MemoryStore
    return lambda: SqliteStore(tmp_path / "contract.db")


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    opened = store_factory()
    await opened.open()
    yield opened
    await opened.close()
