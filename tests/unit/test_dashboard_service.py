"""The dashboard service's shared reads: a slow count runs once for every viewer."""

import asyncio

import pytest

from opentasks.clock import FakeClock
from opentasks.service.dashboard import SharedReads
from tests.unit.test_dashboard_helpers import Q, World


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def read(self) -> int:
        self.calls += 1
        await self.gate.wait()
        return self.calls


async def test_callers_share_a_read_that_runs_and_its_answer_for_a_while() -> None:
    clock, counter = FakeClock(), Counter()
    shared = SharedReads(clock.monotonic, ttl_s=1.0)
    counter.gate.clear()
    both = asyncio.gather(shared.get("q", counter.read), shared.get("q", counter.read))
    await asyncio.sleep(0)
    counter.gate.set()
    assert await both == [1, 1]
    clock.advance(0.5)
    assert await shared.get("q", counter.read) == 1
    assert await shared.get("other", counter.read) == 2
    clock.advance(0.6)
    assert await shared.get("q", counter.read) == 3
    shared.forget()
    assert await shared.get("q", counter.read) == 4


async def test_a_failed_read_is_not_kept() -> None:
    clock = FakeClock()
    shared = SharedReads(clock.monotonic)
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("store away")
        return calls

    with pytest.raises(OSError):
        await shared.get("q", flaky)
    assert await shared.get("q", flaky) == 2


async def test_a_dashboard_action_forgets_the_counts() -> None:
    world = World()
    await world.store.open()
    await world.queue()
    assert (await world.service.queue_summary(Q)).due == 0
    await world.task()
    assert (await world.service.queue_summary(Q)).due == 0  # counted less than a second ago
    await world.service.queue_action(Q, "pause")
    assert (await world.service.queue_summary(Q)).due == 1
    world.clock.advance(1)
    await world.task()
    assert (await world.service.queue_summary(Q)).due == 2
