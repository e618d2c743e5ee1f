"""The dashboard in process, for the test_dashboard*.py modules: the app on the memory store, a
fake clock, a dispatcher with a scripted pusher (so tasks succeed, fail and leave history), and
an aiohttp test client that keeps the session cookie and the CSRF token of the last page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from html import unescape
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from opentasks.clock import FakeClock
from opentasks.domain.browse import OutcomeMinute
from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.ownership import LeaseTiming
from opentasks.domain.queue import Queue, RetryConfig
from opentasks.domain.task import AttemptOutcome, HttpRequest, Task, TaskDraft, TaskView
from opentasks.service.dashboard import DashboardService
from opentasks.service.dispatcher import Dispatcher, DispatchSettings
from opentasks.service.history import HistoryService
from opentasks.service.ownership import NodeSettings
from opentasks.service.queue_insights import StoreInsights
from opentasks.service.queues import QueueService
from opentasks.service.tasks import TaskService
from opentasks.storage.memory import MemoryStore
from opentasks.web import add_dashboard
from tests.unit.test_dispatcher import ScriptedPusher

KEY = b"k" * 32
PARENT = LocationName("proj", "loc")
Q = QueueName("proj", "loc", "emails")
QUEUE_PATH = "/ui/projects/proj/locations/loc/queues/emails"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def test_the_helpers_build_a_site() -> None:
    assert QUEUE_PATH.endswith(Q.queue_id)


class Site:
    """The dashboard with its world: services, store, clock, dispatcher and a client."""

    def __init__(self, client: TestClient[web.Request, web.Application], world: World) -> None:
        self.client = client
        self.world = world
        self.csrf = ""

    async def get(self, path: str, **options: Any) -> tuple[int, str]:
        async with self.client.get(path, **options) as response:
            text = await response.text()
            self._remember(text)
            return response.status, text

    async def post(
        self, path: str, data: Any, *, csrf: bool = True, follow: bool = True, **options: Any
    ) -> tuple[int, str]:
        """POST a form (with the last page's CSRF token unless ``csrf`` is false)."""
        if isinstance(data, dict):
            data = list(data.items())
        fields = list(data) + ([("csrf", self.csrf)] if csrf else [])
        async with self.client.post(path, data=fields, allow_redirects=follow, **options) as response:
            text = await response.text()
            self._remember(text)
            return response.status, text

    def _remember(self, text: str) -> None:
        found = _CSRF.search(text)
        if found:
            self.csrf = unescape(found[1])


class World:
    """Services on a memory store and a fake clock, dispatching through a scripted pusher."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.pusher = ScriptedPusher()
        node = NodeSettings(timing=LeaseTiming(timedelta(days=3650)))
        self.dispatcher = Dispatcher(
            self.store, self.clock, self.pusher, settings=DispatchSettings(claim_batch=50), node=node
        )
        self.queues = QueueService(self.store, self.clock, events=self.dispatcher)
        self.tasks = TaskService(self.store, self.clock, events=self.dispatcher, runner=self.dispatcher)
        self.history = HistoryService(self.store, self.clock, self.tasks)
        self.insights = StoreInsights(self.store, self.clock, self.dispatcher)
        self.service = DashboardService(
            self.store,
            self.clock,
            queues=self.queues,
            tasks=self.tasks,
            history=self.history,
            insights=self.insights,
        )

    async def queue(self, name: QueueName = Q, **fields: Any) -> Queue:
        queue = await self.queues.create_queue(name.parent, Queue(name, **fields))
        await self.dispatcher.settle()
        return queue

    async def task(
        self,
        url: str = "https://h.example/x",
        *,
        queue: QueueName = Q,
        after_s: float = 0,
        name: str = "",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Task:
        draft = TaskDraft(
            name=f"{queue}/tasks/{name}" if name else "",
            http_request=HttpRequest(url=url, headers=headers or {}, body=body),
            schedule_time=self.clock.now() + timedelta(seconds=after_s),
        )
        return await self.tasks.create_task(queue, draft, TaskView.FULL)

    async def step(self) -> int:
        """One dispatch pass; every attempt started ends and is recorded."""
        started = (await self.dispatcher.run_once()).started
        await self.dispatcher.settle()
        return started

    async def dead_letter(self, name: str, *, status: int = 500, body: bytes = b"") -> TaskName:
        """A task of ``Q`` that fails its one allowed attempt (the queue allows one)."""
        url = f"https://h.example/fail/{name}"
        self.pusher.scripts[url] = [AttemptOutcome(http_status=status, response_body=body)]
        task = await self.task(url, name=name)
        self.clock.advance(0.01)  # a token for it in the queue's bucket, however many came before
        await self.step()
        return task.name

    async def outcomes(self, queue: QueueName, *per_minute: tuple[int, int]) -> None:
        """Per-minute outcomes ending at the current minute (oldest first)."""
        now = self.clock.now().replace(second=0, microsecond=0)
        rows = [
            OutcomeMinute(queue, now - timedelta(minutes=len(per_minute) - 1 - i), ok, failed)
            for i, (ok, failed) in enumerate(per_minute)
        ]
        await self.store.add_outcomes("node-a", rows)


ONE_ATTEMPT = RetryConfig(max_attempts=1)


@asynccontextmanager
async def dashboard_site(
    *,
    tokens: tuple[str, ...] = (),
    read_only: tuple[str, ...] = (),
    world: World | None = None,
    allowed_hosts: frozenset[str] = frozenset(),
) -> AsyncIterator[Site]:
    world = world or World()
    await world.store.open()
    await world.dispatcher.start(loop=False)
    app = web.Application()
    add_dashboard(
        app,
        world.service,
        key=KEY,
        tokens=tokens,
        read_only_tokens=read_only,
        monotonic=world.clock.monotonic,
        allowed_hosts=allowed_hosts,
    )
    async with TestClient(TestServer(app)) as client:
        yield Site(client, world)
    await world.dispatcher.stop()
    await world.store.close()


SiteFactory = Callable[..., Any]
