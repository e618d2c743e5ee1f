"""The dispatcher: runs a :class:`QueueWorker` per queue and reacts to what the services tell it.

It starts, reconfigures, revives and stops the workers, runs RunTask's attempts and reports
live numbers. The parts depend one way: dispatcher -> queue worker -> attempt runner
(:mod:`opentasks.service.attempts`). ``run_once`` is one pass of every worker, so tests can
drive the dispatcher step by step on a fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from opentasks.clock import Clock
from opentasks.credentials.base import Credentials
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import Queue
from opentasks.domain.target_policy import TargetPolicy
from opentasks.domain.task import Task
from opentasks.errors import NotFound
from opentasks.service.attempts import (
    ALERT_INTERVAL_S,
    DISPATCH_LOG,
    AttemptRunner,
    DispatchSettings,
    MinuteCount,
)
from opentasks.service.event_log import default_observers
from opentasks.service.observers import Observers
from opentasks.service.pusher import Pusher
from opentasks.service.queue_worker import QueueWorker
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.base import Store

__all__ = ["ALERT_INTERVAL_S", "DispatchSettings", "Dispatcher", "MinuteCount", "PassResult"]


@dataclass(frozen=True)
class PassResult:
    """What one pass of every worker did: attempts started, in all and by queue (only the
    queues that started any)."""

    started: int
    by_queue: dict[QueueName, int]


class Dispatcher:
    """Pushes tasks to their handlers; also the ``DispatchEvents`` of the queue/task services."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        pusher: Pusher,
        *,
        tombstones: TombstonePolicy | None = None,
        settings: DispatchSettings | None = None,
        credentials: Credentials | None = None,
        targets: TargetPolicy | None = None,
        observers: Observers | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings or DispatchSettings()
        self._runner = AttemptRunner(
            store,
            clock,
            pusher,
            observers if observers is not None else default_observers(clock.monotonic),
            settings=self.settings,
            tombstones=tombstones or TombstonePolicy(),
            credentials=credentials,
            targets=targets or TargetPolicy(),
        )
        self.alerts = self._runner.alerts
        self._workers: dict[QueueName, QueueWorker] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._looping = False
        self._stopping = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, *, loop: bool = True) -> None:
        """Recover attempts lost in a crash, then start a worker per queue.

        With ``loop=False`` nothing runs by itself: tests call :meth:`run_once`.
        """
        released = await self._store.release_leases()
        if released:
            DISPATCH_LOG.info(
                "dispatching again %d task(s) whose attempts were in flight at the last stop", released
            )
        for queue in await self._store.all_queues():
            self._workers[queue.name] = self._worker(queue)
        self._looping = loop
        if loop:
            for worker in self._workers.values():
                worker.start()

    async def stop(self) -> None:
        """Stop claiming, give attempts in flight ``shutdown_grace`` to finish, record their outcomes."""
        self._stopping = True
        for worker in self._workers.values():
            await worker.stop()
        await self._runner.finish(self.settings.shutdown_grace.total_seconds())

    def _worker(self, queue: Queue) -> QueueWorker:
        return QueueWorker(
            queue, store=self._store, clock=self._clock, settings=self.settings, runner=self._runner
        )

    # -- events from the services -----------------------------------------------------------

    def queue_changed(self, name: QueueName) -> None:
        if not self._stopping:
            self._spawn(self._reload(name))

    def task_added(self, task: Task) -> None:
        worker = self._workers.get(task.name.queue)
        if worker is not None:
            self._revive(worker)
            worker.note_due(task.schedule_time)

    async def _reload(self, name: QueueName) -> None:
        try:
            queue = await self._store.get_queue(name)
        except NotFound:
            worker = self._workers.pop(name, None)
            if worker is not None:
                await worker.stop()
            return
        except Exception:
            DISPATCH_LOG.exception(
                "could not reload queue %s; its dispatching keeps its previous settings", name
            )
            return
        worker = self._workers.get(name)
        if worker is None:
            worker = self._workers[name] = self._worker(queue)
        else:
            worker.configure(queue)
        self._revive(worker)

    def _revive(self, worker: QueueWorker) -> None:
        """Start a worker's loop if the dispatcher loops and the worker's loop is not running
        (a new queue, or a loop that died for any reason)."""
        if self._looping and not self._stopping and not worker.running:
            worker.start()

    # -- dispatching ------------------------------------------------------------------------

    async def run_once(self) -> PassResult:
        """One pass of every worker: claim what may be dispatched now and start it."""
        by_queue: dict[QueueName, int] = {}
        for name, worker in list(self._workers.items()):
            started = (await worker.pass_once())[0]
            if started:
                by_queue[name] = started
        return PassResult(sum(by_queue.values()), by_queue)

    async def settle(self) -> None:
        """Wait until every attempt started so far has finished and its outcome is stored (tests)."""
        while self._runner.jobs or self._background:
            await asyncio.gather(*self._runner.jobs, *self._background)
        await self._runner.results.flush()

    async def run_task(self, name: TaskName) -> Task:
        """RunTask: dispatch now, whatever the schedule, the queue state, the bucket or the cap."""
        called = self._clock.now()
        worker = self._workers.get(name.queue)
        queue = worker.queue if worker is not None else await self._store.get_queue(name.queue)
        claimed = await self._store.claim_task(name, called, self.settings.lease_grace)
        if worker is not None:
            self._runner.track(worker.run_now(claimed, called))
        else:
            self._runner.track(self._runner.attempt(claimed, queue, retry_from=called))
        return claimed

    def live(self, name: QueueName) -> tuple[int, int]:
        """Attempts of a queue in flight now, and attempts that ended in the last minute."""
        worker = self._workers.get(name)
        return (0, 0) if worker is None else worker.live()

    def _spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
