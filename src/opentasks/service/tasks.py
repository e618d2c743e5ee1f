"""Task RPCs: create (with name de-duplication), get, list, delete."""

from __future__ import annotations

import asyncio
import random
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from msgspec.structs import replace

from opentasks.clock import Clock
from opentasks.domain.history import FinishReason
from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import HttpMethod
from opentasks.domain.routing import AppEngineRoutes, buffer_url, with_host
from opentasks.domain.target_policy import TargetPolicy
from opentasks.domain.task import HttpRequest, Task, TaskDraft, TaskView, new_task
from opentasks.errors import AlreadyExists, FailedPrecondition, InvalidArgument, OpenTasksError
from opentasks.service.events import DispatchEvents, NoDispatch, TaskRunner
from opentasks.service.observers import (
    TASK_CREATED,
    TASK_FINISHED,
    Observers,
    TaskCreated,
    TaskFinished,
)
from opentasks.service.paging import next_page_token, page_request
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.base import Store

T = TypeVar("T")
MAX_TASKS_PAGE = 1000
MAX_BATCH_CREATE = 100
MAX_BATCH_DELETE = 1000
# Generated IDs look like Cloud Tasks' own: 19-20 decimal digits.
_MIN_GENERATED_ID = 10**18
_GENERATED_ID_SPAN = 2**64 - _MIN_GENERATED_ID


@dataclass(frozen=True)
class BufferedRequest:
    """The HTTP call BufferTask received: its method, body and Content-Type become the task's."""

    method: HttpMethod
    body: bytes
    content_type: str = ""


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    next_page_token: str


# IDs must be unique, not secret: a PRNG seeded from the OS is enough and far cheaper than
# reading the OS's random source per task.
_random = random.Random()


def generate_task_id() -> str:
    """A fresh random task ID of 19-20 digits."""
    return str(_MIN_GENERATED_ID + _random.randrange(_GENERATED_ID_SPAN))


class TaskService:
    """The rules of the task RPCs."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        limits: Limits | None = None,
        tombstones: TombstonePolicy | None = None,
        events: DispatchEvents | None = None,
        runner: TaskRunner | None = None,
        targets: TargetPolicy | None = None,
        app_engine: AppEngineRoutes | None = None,
        observers: Observers | None = None,
    ) -> None:
        self._observers = observers if observers is not None else Observers(monotonic=clock.monotonic)
        self._targets = targets or TargetPolicy()
        self._app_engine = app_engine or AppEngineRoutes()
        self._store = store
        self._clock = clock
        self._limits = limits or Limits()
        self._tombstones = tombstones or TombstonePolicy()
        self._events = events or NoDispatch()
        self._runner = runner

    async def create_task(self, parent: QueueName, draft: TaskDraft, view: TaskView) -> Task:
        return await self._create(parent, draft, view, self._store.create_task)

    async def redrive_task(self, letter: TaskName, key: int, draft: TaskDraft) -> Task:
        """A new task of ``letter``'s queue from ``draft`` (the request of its kept end
        ``key``), made only if that end is a dead letter not yet redriven, and marking it."""

        async def insert(task: Task, now: datetime) -> Task:
            return await self._store.redrive_task(letter, key, task, now)

        return await self._create(letter.queue, draft, TaskView.BASIC, insert)

    async def _create(
        self,
        parent: QueueName,
        draft: TaskDraft,
        view: TaskView,
        insert: Callable[[Task, datetime], Awaitable[Task]],
    ) -> Task:
        now = self._clock.now()
        for _ in range(3):
            task = self._routed(new_task(draft, parent, now, generate_task_id(), self._limits))
            try:
                created = await insert(task, now)
            except AlreadyExists:
                if task.named:
                    raise
                continue  # a generated ID collided (about 1 in 10^19): draw another
            self._events.task_added(created)
            if TASK_CREATED in self._observers.wanted:
                self._observers.task_created(TaskCreated(created))
            return created.in_view(view)
        raise AssertionError("three generated task IDs collided")  # pragma: no cover

    def _routed(self, task: Task) -> Task:
        """Refuse targets the server may not send to; compute App Engine's output-only host."""
        if task.http_request is not None:
            self._targets.check_url(task.http_request.url)
            return task
        engine = task.app_engine_http_request
        assert engine is not None, "new_task always sets a target"
        routing = with_host(engine.app_engine_routing, self._app_engine)
        return replace(task, app_engine_http_request=replace(engine, app_engine_routing=routing))

    async def buffer_task(self, parent: QueueName, task_id: str, request: BufferedRequest) -> Task:
        """BufferTask: a task whose URL is the queue's URI override and whose method, body and
        Content-Type are those of the call."""
        queue = await self._store.get_queue(parent)
        headers = {"Content-Type": request.content_type} if request.content_type else {}
        http = HttpRequest(
            url=buffer_url(queue.http_target), http_method=request.method, headers=headers, body=request.body
        )
        name = f"{parent}/tasks/{task_id}" if task_id else ""
        return await self.create_task(parent, TaskDraft(name=name, http_request=http), TaskView.BASIC)

    async def get_task(self, name: TaskName, view: TaskView) -> Task:
        task = await self._store.get_task(name, self._clock.now())
        return task.in_view(view)

    async def list_tasks(
        self, parent: QueueName, *, view: TaskView, page_size: int, page_token: str
    ) -> TaskPage:
        fingerprint = f"{parent}|{int(view)}"
        page = page_request(page_size, page_token, max_size=MAX_TASKS_PAGE, fingerprint=fingerprint)
        after = page.cursor if isinstance(page.cursor, int) else 0
        found = await self._store.list_tasks(parent, after=after, limit=page.size)
        tasks = [t.in_view(view) for t in found.tasks]
        return TaskPage(tasks, next_page_token(found.next_cursor, fingerprint=fingerprint))

    async def delete_task(self, name: TaskName) -> None:
        now = self._clock.now()
        await self._store.delete_task(name, now, self._tombstones.windows(now))
        if TASK_FINISHED in self._observers.wanted:
            self._observers.task_finished(TaskFinished(name, FinishReason.DELETED, 0))

    async def run_task(self, name: TaskName, view: TaskView) -> Task:
        """Dispatch a task now, even in a paused queue or beyond its rate limits."""
        if self._runner is None:
            raise FailedPrecondition(
                "RunTask needs dispatching, which is switched off on this server (--no-dispatch)."
            )
        return (await self._runner.run_task(name)).in_view(view)

    async def batch_create_tasks(
        self, parent: QueueName, requests: list[tuple[str, TaskDraft]], view: TaskView
    ) -> list[Task | OpenTasksError]:
        """Create up to 100 tasks, each independently (not atomic); one outcome per request, in order.

        ``requests`` pairs each draft with the ``parent`` its own CreateTaskRequest named.
        """
        if len(requests) > MAX_BATCH_CREATE:
            raise InvalidArgument(f"BatchCreateTasks accepts at most {MAX_BATCH_CREATE} requests.")
        for index, (request_parent, _) in enumerate(requests):
            if request_parent != str(parent):
                raise InvalidArgument(
                    f"requests[{index}].parent ('{request_parent}') must equal the batch's "
                    f"parent ('{parent}')."
                )
        return await _each(self.create_task(parent, draft, view) for _, draft in requests)

    async def batch_delete_tasks(self, parent: QueueName, names: list[str]) -> list[OpenTasksError | None]:
        """Delete up to 1000 tasks of ``parent``, each independently; one outcome per name, in order."""
        if len(names) > MAX_BATCH_DELETE:
            raise InvalidArgument(f"BatchDeleteTasks accepts at most {MAX_BATCH_DELETE} names.")
        parsed = [TaskName.parse(name) for name in names]
        for index, name in enumerate(parsed):
            if name.queue != parent:
                raise InvalidArgument(
                    f"names[{index}] ('{name}') is not a task of the batch's parent ('{parent}')."
                )
        return await _each(self.delete_task(name) for name in parsed)


async def _each(calls: Iterable[Awaitable[T]]) -> list[T | OpenTasksError]:
    """Run calls concurrently (so the store can commit them together); collect API errors as outcomes."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, OpenTasksError):
            raise outcome
    return typing.cast(list[T | OpenTasksError], outcomes)
