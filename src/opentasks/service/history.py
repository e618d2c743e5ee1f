"""Kept history for operators: finished tasks (the failed ones are the dead letters), one task's
attempts, and sending dead letters again as new tasks ("redrive")."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass, field

from msgspec.structs import replace

from opentasks.clock import Clock
from opentasks.domain.headers import reserved_http_header
from opentasks.domain.history import FAILED_REASONS, AttemptRecord, FinishedTask, FinishReason, HistoryPage
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.task import Task, TaskDraft
from opentasks.errors import FailedPrecondition, InvalidArgument, NotFound, OpenTasksError, Unavailable
from opentasks.service.tasks import TaskService
from opentasks.storage.base import Store, letter_to_redrive

MAX_PAGE_SIZE = 1000
MAX_REDRIVE = 10_000  # dead letters sent again by one call (the answer says where to go on)


@dataclass(frozen=True)
class Redriven:
    """Tasks created again from dead letters, the cursor of the dead letters left (None: none
    left), and the task IDs named that were not redriven, with why."""

    tasks: list[Task]
    next_before: int | None
    refused: list[tuple[str, OpenTasksError]] = field(default_factory=list)


class HistoryService:
    """Reads kept history and redrives dead letters through the task service (so a redriven
    task is validated, routed and woken like any CreateTask)."""

    def __init__(self, store: Store, clock: Clock, tasks: TaskService) -> None:
        self._store = store
        self._clock = clock
        self._tasks = tasks

    async def finished_tasks(
        self,
        queue: QueueName,
        *,
        reasons: Collection[FinishReason] | None = None,
        before: int = 0,
        page_size: int = 100,
    ) -> HistoryPage:
        if not 0 < page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE}.")
        if before < 0:
            raise InvalidArgument("The page token is not one this server gave.")
        return await self._store.finished_tasks(
            queue, self._clock.now(), reasons=reasons, before=before, limit=page_size
        )

    async def task_history(self, name: TaskName) -> tuple[list[FinishedTask], list[AttemptRecord]]:
        ends, attempts = await self._store.task_history(name, self._clock.now())
        if not ends and not attempts:
            raise NotFound(f"No history is kept of task {name}.")
        return ends, attempts

    async def redrive(
        self, queue: QueueName, task_ids: Collection[str] | None = None, before: int = 0
    ) -> Redriven:
        """Send dead letters of ``queue`` again as new tasks (new IDs, the same request): the
        latest not redriven of each of ``task_ids``, or every one kept (newest first, from
        ``before``, at most :data:`MAX_REDRIVE` per call). Each dead letter is redriven once:
        it is marked with its new task in the same commit, and is no dead letter after that.

        Each ID is redriven or refused on its own (NotFound: no such dead letter kept;
        FailedPrecondition: redriven already); when none of them is redriven, the first
        refusal is raised. Dead letters of "every one" that another call redrives meanwhile
        are left to it."""
        if task_ids is not None:
            return await self._redrive_each(queue, task_ids)
        created: list[Task] = []
        cursor: int | None = before
        while cursor is not None and len(created) < MAX_REDRIVE:
            page = await self.finished_tasks(
                queue,
                reasons=FAILED_REASONS,
                before=cursor,
                page_size=min(MAX_PAGE_SIZE, MAX_REDRIVE - len(created)),
            )
            for letter in page.tasks:
                with contextlib.suppress(FailedPrecondition):
                    created.append(await self._again(letter))
            cursor = page.next_before
        return Redriven(created, cursor)

    async def _redrive_each(self, queue: QueueName, task_ids: Collection[str]) -> Redriven:
        created: list[Task] = []
        refused: list[tuple[str, OpenTasksError]] = []
        for task_id in task_ids:
            try:
                created.append(await self._again(await self._latest_dead_letter(queue, task_id)))
            except Unavailable:
                raise  # the store is down: the other IDs would fail alike
            except OpenTasksError as error:
                refused.append((task_id, error))
        if refused and not created:
            raise refused[0][1]
        return Redriven(created, None, refused)

    async def _latest_dead_letter(self, queue: QueueName, task_id: str) -> FinishedTask:
        name = TaskName(queue, task_id)
        ends, _ = await self._store.task_history(name, self._clock.now())
        return ends[letter_to_redrive(name, ends)]

    async def _again(self, letter: FinishedTask) -> Task:
        draft = redrive_draft(letter.task)
        return await self._tasks.redrive_task(letter.task.name, letter.key, draft)


def redrive_draft(task: Task) -> TaskDraft:
    """A new task with ``task``'s request (the headers Cloud Tasks adds itself left out)."""
    http, engine = task.http_request, task.app_engine_http_request
    if http is not None:
        http = replace(http, headers={k: v for k, v in http.headers.items() if not reserved_http_header(k)})
    if engine is not None:
        engine = replace(
            engine, headers={k: v for k, v in engine.headers.items() if not reserved_http_header(k)}
        )
    return TaskDraft(
        http_request=http,
        app_engine_http_request=engine,
        dispatch_deadline=task.dispatch_deadline,
        retry_config=task.retry_config,
    )
