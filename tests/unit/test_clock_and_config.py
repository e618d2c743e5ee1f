import asyncio
import resource
from datetime import timedelta
from pathlib import Path

import pytest

from opentasks.app import attempts_in_flight, build_store
from opentasks.clock import FakeClock
from opentasks.config import (
    ConfigError,
    Settings,
    StorageUrl,
    env_of,
    file_keys,
    flag_of,
    options,
    parse_duration,
    settings_from_options,
)
from opentasks.storage.memory import MemoryStore
from opentasks.storage.sqlite import SqliteStore


async def test_fake_clock_wakes_sleepers_only_when_due() -> None:
    clock = FakeClock()
    woke = asyncio.Event()

    async def sleeper() -> None:
        await clock.sleep(10)
        woke.set()

    job = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    clock.advance(9.9)
    await asyncio.sleep(0)
    assert not woke.is_set()
    clock.advance(0.1)
    await asyncio.wait_for(woke.wait(), 1)
    await job


def test_storage_urls() -> None:
    assert StorageUrl.parse("memory://").backend == "memory"
    assert StorageUrl.parse("sqlite:///data/x.db").path == Path("data/x.db")
    absolute = StorageUrl.parse("sqlite:////var/lib/x.db?synchronous=normal")
    assert (absolute.path, absolute.synchronous) == (Path("/var/lib/x.db"), "NORMAL")
    for bad in ("mysql://x", "sqlite:///", "sqlite:///x.db?synchronous=sometimes", "sqlite:///x.db?foo=1"):
        with pytest.raises(ConfigError):
            StorageUrl.parse(bad)


def test_build_store_picks_the_named_backend_and_rejects_any_other(tmp_path: Path) -> None:
    assert isinstance(build_store(StorageUrl("memory")), MemoryStore)
    assert isinstance(build_store(StorageUrl("sqlite", tmp_path / "x.db")), SqliteStore)
    for url in (StorageUrl("postgresql"), StorageUrl("memcached"), StorageUrl("sqlite")):
        with pytest.raises(ConfigError, match="--storage"):
            build_store(url)


def test_durations() -> None:
    assert parse_duration("90", setting="x") == timedelta(seconds=90)
    assert parse_duration("7d", setting="x") == timedelta(days=7)
    assert parse_duration("250ms", setting="x") == timedelta(milliseconds=250)
    with pytest.raises(ConfigError, match="--task-tombstone: 'soon' is not a duration"):
        parse_duration("soon", setting="--task-tombstone")


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match="--port"):
        Settings(port=70000)
    with pytest.raises(ConfigError, match="--max-rate-per-queue"):
        Settings(max_rate_per_queue=0)


def test_every_setting_is_a_flag_a_variable_and_a_row_of_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, option, _ in options():
        flag = flag_of(name, option)
        shown = f"--no-{flag[2:]}" if option.kind == "switch" else flag  # the default is on
        assert f"`{shown}`" in readme, f"README's settings table lacks {shown}"
        assert f"`{env_of(name, option)}" in readme, f"README's settings table lacks {env_of(name, option)}"


def test_settings_come_from_flags_variables_and_files_alike() -> None:
    settings = settings_from_options(
        {
            "allowed_locations": "a, b",
            "dispatch": True,
            "app_engine_services": ("w=http://h:1",),
            "data_dir": "/d",
        }
    )
    assert settings.allowed_locations == frozenset({"a", "b"})
    assert settings.dispatch is False  # --no-dispatch given
    assert settings.app_engine_services == (("w", "http://h:1"),)
    assert settings.storage == StorageUrl.parse("sqlite:////d/opentasks.db")
    assert settings.keys_dir == Path("/d/keys")
    assert set(file_keys()) >= {"locations", "no_dispatch", "log_level", "read_timeout"}


@pytest.mark.parametrize(
    ("open_files", "max_connections", "cap"),
    [
        (1_048_576, 1000, 10_000),  # at most 10,000
        (resource.RLIM_INFINITY, 1000, 10_000),
        (8192, 1000, 3936),  # what the ports (relays included) and the store leave
        (1024, 1000, 64),  # at least 64: the server warns of the low limit at start
    ],
)
def test_the_nodes_cap_on_attempts_in_flight_follows_the_open_files_limit(
    open_files: int, max_connections: int, cap: int
) -> None:
    assert attempts_in_flight(open_files, Settings(max_connections=max_connections)) == cap
