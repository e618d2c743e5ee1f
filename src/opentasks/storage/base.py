"""The storage contract every backend implements, and the errors all backends raise alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.queue import Queue, QueueState
from opentasks.domain.task import Task
from opentasks.errors import AlreadyExists, FailedPrecondition, NotFound

QueueChange = Callable[[Queue | None], Queue]
"""Computes a queue's new value from its current one (None when it does not exist)."""


@dataclass(frozen=True)
class TaskPage:
    """One page of ListTasks; ``next_cursor`` is None on the last page."""

    tasks: list[Task]
    next_cursor: int | None


@dataclass(frozen=True)
class Windows:
    """How long deleted names stay reserved."""

    task_tombstone_until: datetime
    queue_tombstone_until: datetime


class Store(Protocol):
    """Durable state of queues and tasks.

    Every method is one atomic operation; ``now`` always comes from the caller's clock.
    Backends raise only :mod:`opentasks.errors` exceptions for expected outcomes.
    """

    async def open(self) -> None:
        """Connect, migrate the schema, start background workers."""
        ...

    async def close(self) -> None:
        """Flush pending writes and release every resource."""
        ...

    async def create_queue(self, queue: Queue, now: datetime) -> Queue:
        """Insert a new queue; AlreadyExists if it exists, FailedPrecondition if deleted too recently."""
        ...

    async def get_queue(self, name: QueueName) -> Queue:
        """The queue, or NotFound."""
        ...

    async def list_queues(
        self, parent: LocationName, *, state: QueueState | None, after: str, limit: int
    ) -> list[Queue]:
        """Queues of ``parent`` with queue ID > ``after`` in ID order, at most ``limit``."""
        ...

    async def list_locations(self, project: str) -> list[str]:
        """IDs of the locations of ``project`` that hold at least one queue, sorted."""
        ...

    async def update_queue(self, name: QueueName, change: QueueChange, now: datetime) -> Queue:
        """Atomically replace a queue by ``change(current)``; creates it when missing (upsert).

        FailedPrecondition if the name was deleted too recently and the queue does not exist.
        """
        ...

    async def delete_queue(self, name: QueueName, now: datetime, windows: Windows) -> None:
        """Delete a queue and all its tasks, reserving its name; NotFound if missing."""
        ...

    async def purge_queue(self, name: QueueName, purge_time: datetime, windows: Windows) -> Queue:
        """Set ``purge_time`` and delete every task accepted before it (names stay reserved)."""
        ...

    async def create_task(self, task: Task, now: datetime) -> Task:
        """Insert a task. NotFound if its queue is missing; AlreadyExists if the name is live or reserved."""
        ...

    async def get_task(self, name: TaskName, now: datetime) -> Task:
        """The task; NotFound (with the "existed recently" message for reserved names)."""
        ...

    async def list_tasks(self, queue: QueueName, *, after: int, limit: int) -> TaskPage:
        """Tasks of ``queue`` in creation order after cursor ``after`` (0 = from the start)."""
        ...

    async def delete_task(self, name: TaskName, now: datetime, windows: Windows) -> None:
        """Delete a task and reserve its name if the caller chose it; NotFound if missing."""
        ...


QUEUE_MISSING = (
    "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize."
)
ENTITY_MISSING = "Requested entity was not found."
TASK_RECENTLY_DELETED = (
    "The task no longer exists, though a task with this name existed recently. "
    "The task either successfully completed or was deleted."
)


def queue_missing() -> NotFound:
    return NotFound(QUEUE_MISSING)


def entity_missing() -> NotFound:
    return NotFound(ENTITY_MISSING)


def task_recently_deleted() -> NotFound:
    return NotFound(TASK_RECENTLY_DELETED)


def queue_exists() -> AlreadyExists:
    return AlreadyExists("Queue already exists")


def task_exists() -> AlreadyExists:
    return AlreadyExists("Requested entity already exists")


def queue_recently_deleted() -> FailedPrecondition:
    return FailedPrecondition(
        "The queue cannot be created because a queue with this name existed too recently."
    )
