"""The in-memory store: product code for ``memory://`` and fast tests; nothing survives a restart."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import datetime

from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.queue import Queue, QueueState
from opentasks.domain.task import Task
from opentasks.storage import base
from opentasks.storage.base import QueueChange, TaskPage, Windows


@dataclass
class _QueueSlot:
    queue: Queue
    tasks: dict[str, tuple[int, Task]] = field(default_factory=dict)  # task_id -> (seq, task)
    tombstones: dict[str, datetime] = field(default_factory=dict)  # task_id -> reserved until


class MemoryStore:
    """Keeps everything in dictionaries; every method runs without awaiting, so each is atomic."""

    def __init__(self) -> None:
        self._queues: dict[QueueName, _QueueSlot] = {}
        self._queue_tombstones: dict[QueueName, datetime] = {}
        self._seq = itertools.count(1)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create_queue(self, queue: Queue, now: datetime) -> Queue:
        if queue.name in self._queues:
            raise base.queue_exists()
        self._check_queue_tombstone(queue.name, now)
        self._queues[queue.name] = _QueueSlot(queue)
        return queue

    def _check_queue_tombstone(self, name: QueueName, now: datetime) -> None:
        until = self._queue_tombstones.get(name)
        if until is not None and until > now:
            raise base.queue_recently_deleted()

    def _slot(self, name: QueueName) -> _QueueSlot:
        slot = self._queues.get(name)
        if slot is None:
            raise base.queue_missing()
        return slot

    async def get_queue(self, name: QueueName) -> Queue:
        return self._slot(name).queue

    async def list_queues(
        self, parent: LocationName, *, state: QueueState | None, after: str, limit: int
    ) -> list[Queue]:
        found = sorted(
            (s.queue for n, s in self._queues.items() if n.parent == parent and n.queue_id > after),
            key=lambda q: q.name.queue_id,
        )
        if state is not None:
            found = [q for q in found if q.state == state]
        return found[:limit]

    async def list_locations(self, project: str) -> list[str]:
        return sorted({n.location for n in self._queues if n.project == project})

    async def update_queue(self, name: QueueName, change: QueueChange, now: datetime) -> Queue:
        slot = self._queues.get(name)
        if slot is None:
            queue = change(None)
            self._check_queue_tombstone(name, now)
            self._queues[name] = _QueueSlot(queue)
            return queue
        slot.queue = change(slot.queue)
        return slot.queue

    async def delete_queue(self, name: QueueName, now: datetime, windows: Windows) -> None:
        if self._queues.pop(name, None) is None:
            raise base.entity_missing()
        self._queue_tombstones[name] = windows.queue_tombstone_until

    async def purge_queue(self, name: QueueName, purge_time: datetime, windows: Windows) -> Queue:
        slot = self._slot(name)
        slot.queue = replace(slot.queue, purge_time=purge_time)
        for _, task in list(slot.tasks.values()):
            if task.enqueue_time < purge_time:
                self._remove(slot, task, windows)
        return slot.queue

    def _remove(self, slot: _QueueSlot, task: Task, windows: Windows) -> None:
        del slot.tasks[task.name.task_id]
        if task.named:
            slot.tombstones[task.name.task_id] = windows.task_tombstone_until

    async def create_task(self, task: Task, now: datetime) -> Task:
        slot = self._slot(task.name.queue)
        task_id = task.name.task_id
        if task_id in slot.tasks or slot.tombstones.get(task_id, now) > now:
            raise base.task_exists()
        slot.tombstones.pop(task_id, None)
        slot.tasks[task_id] = (next(self._seq), task)
        return task

    def _find(self, name: TaskName, now: datetime) -> tuple[_QueueSlot, Task]:
        slot = self._slot(name.queue)
        entry = slot.tasks.get(name.task_id)
        if entry is not None:
            return slot, entry[1]
        if slot.tombstones.get(name.task_id, now) > now:
            raise base.task_recently_deleted()
        raise base.entity_missing()

    async def get_task(self, name: TaskName, now: datetime) -> Task:
        return self._find(name, now)[1]

    async def list_tasks(self, queue: QueueName, *, after: int, limit: int) -> TaskPage:
        slot = self._slot(queue)
        entries = sorted((e for e in slot.tasks.values() if e[0] > after), key=lambda e: e[0])
        page = entries[:limit]
        more = len(entries) > limit
        return TaskPage([t for _, t in page], page[-1][0] if more else None)

    async def delete_task(self, name: TaskName, now: datetime, windows: Windows) -> None:
        slot, task = self._find(name, now)
        self._remove(slot, task, windows)
