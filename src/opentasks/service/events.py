"""What the queue and task services tell the dispatcher, without depending on it."""

from __future__ import annotations

from typing import Protocol

from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import Queue
from opentasks.domain.task import Task


class DispatchEvents(Protocol):
    """Changes the dispatcher must react to at once (no polling)."""

    def queue_changed(self, name: QueueName, stored: Queue | None = None) -> None:
        """A queue was created, updated, paused, resumed, purged or deleted; ``stored`` is the
        queue as written (None when deleted or not known), applied before the call returns so
        that a paused queue starts nothing after PauseQueue answers."""
        ...

    def task_added(self, task: Task) -> None:
        """A task was created; it may be due before anything the dispatcher waits for."""
        ...


class NoDispatch:
    """Events for a server that does not dispatch (``--no-dispatch``) and for unit tests."""

    def queue_changed(self, name: QueueName, stored: Queue | None = None) -> None:
        return None

    def task_added(self, task: Task) -> None:
        return None


class TaskRunner(Protocol):
    """Dispatches one task at once (RunTask)."""

    async def run_task(self, name: TaskName) -> Task:
        """Start an attempt now and return the task as dispatched (before the response)."""
        ...
