"""The dispatcher: runs a :class:`QueueWorker` per queue this node holds and reacts to what the
services, and the signals of other nodes, tell it.

It starts, reconfigures, revives and stops the workers as :class:`Ownership` hands queues to
this node and takes them away, runs RunTask's attempts and reports live numbers. The parts
depend one way: dispatcher -> ownership, signals, queue worker -> attempt runner
(:mod:`opentasks.service.attempts`). ``run_once`` is one pass of every worker and
``ownership.round()`` one round of the node, so tests drive several nodes step by step on a
fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
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
from opentasks.service.ownership import Holdings, NodeSettings, Ownership
from opentasks.service.pusher import Pusher
from opentasks.service.queue_worker import QueueWorker
from opentasks.service.signals import SignalHandlers, Signals
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.base import Fence, Store

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
        node: NodeSettings | None = None,
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
        node = node or NodeSettings()
        self.signals = Signals(store, clock, node.node_id)
        self.ownership = Ownership(store, clock, node, self._hold, self.signals.nodes_changed)
        self._rounds: asyncio.Task[None] | None = None
        self._ever_held: set[QueueName] = set()
        # Reloads asked for per queue (the last one wins): one number per queue ever changed
        # while this node runs, a few bytes each.
        self._reloads: dict[QueueName, int] = {}
        self._unread: set[QueueName] = set()  # new workers that wait for their queue's reload

    # -- life cycle ----------------------------------------------------------------------

    async def recover(self) -> None:
        """Make attempts lost in a crash due again at once, on a store only this server opens
        (a shared store releases nothing: leases end by themselves). Call it before the API
        serves, so that no RunTask claimed meanwhile is released."""
        released = await self._store.release_leases()
        if released:
            DISPATCH_LOG.info(
                "dispatching again %d task(s) whose attempts were in flight at the last stop", released
            )

    async def start(self, *, loop: bool = True) -> None:
        """Listen to other nodes, take this node's share of the queues and start their workers.

        With ``loop=False`` nothing runs by itself: tests call :meth:`run_once` and
        ``ownership.round()``.
        """
        self._looping = loop
        await self.signals.listen(
            SignalHandlers(
                task_added=self._task_signalled,
                queue_changed=self._queue_signalled,
                nodes_changed=self.ownership.poke,
                missed=self._signals_missed,
            )
        )
        await self.ownership.round()
        if loop:
            self._rounds = asyncio.ensure_future(self.ownership.run())

    async def stop(self) -> None:
        """Stop claiming, hand this node's queues over, give attempts in flight
        ``shutdown_grace`` to finish and record their outcomes."""
        self._stopping = True
        for job in [self._rounds, *self._background]:
            if job is not None:
                job.cancel()
        await asyncio.gather(
            *(job for job in [self._rounds, *self._background] if job), return_exceptions=True
        )
        workers, self._workers = self._workers, {}
        for worker in workers.values():
            await worker.stop(drop_pending=False)  # what they claimed goes out within the grace
        try:
            # The next holders count these attempts in flight against their queues' caps.
            await self.ownership.leave()
        except Exception as error:
            DISPATCH_LOG.warning("could not hand the queues over (their leases will lapse): %s", error)
        await self._runner.finish(self.settings.shutdown_grace.total_seconds())
        await self.signals.flush()

    async def _hold(self, holdings: Holdings) -> None:
        """Run a worker for exactly the queues this node holds, each under its current fence;
        then wake the workers of held queues that have due tasks (the fallback for signals that
        were lost: a worker waiting to be woken looks within one round)."""
        if self._stopping:
            return
        for name in [name for name in self._workers if name not in holdings.fences]:
            self._unread.discard(name)
            await self._workers.pop(name).stop(drop_pending=False)  # handed over: send what it claimed
        for name, fence in holdings.fences.items():
            worker = self._workers.get(name)
            if worker is not None and worker.fence == fence:
                if worker.fenced:  # a claim was refused before this renewal: go on now
                    worker.wake()
                if worker.queue != holdings.queues[name]:  # a change whose signal was lost
                    self._spawn(self._reload(name, self._next_reload(name)))
                continue
            if worker is not None:
                await self._workers.pop(name).stop(drop_pending=False)
            # A queue this node held before keeps nothing of its old bucket; a queue new to the
            # cluster (epoch 1) starts full, one taken over empty.
            full = fence.epoch == 1 and name not in self._ever_held
            self._ever_held.add(name)
            self._workers[name] = self._worker(holdings.queues[name], fence, full)
            # A change (a pause) made since the round read the queue found no worker to apply
            # to: the worker starts once it has read the queue again.
            self._unread.add(name)
            self._spawn(self._reload(name, self._next_reload(name)))
        await self._wake_due(holdings)

    async def _wake_due(self, holdings: Holdings) -> None:
        now = self._clock.now()
        for name in await self._store.due_queues(list(holdings.fences), now):
            worker = self._workers.get(name)
            if worker is not None:
                self._revive(worker)
                worker.note_due(now)

    def _worker(self, queue: Queue, fence: Fence, full_bucket: bool) -> QueueWorker:
        return QueueWorker(
            queue,
            store=self._store,
            clock=self._clock,
            settings=self.settings,
            runner=self._runner,
            fence=fence,
            full_bucket=full_bucket,
            proven=self.ownership.proven,
        )

    # -- events from the services -----------------------------------------------------------

    def queue_changed(self, name: QueueName, stored: Queue | None = None) -> None:
        self.signals.queue_changed(name)  # even while stopping: the holder may be another node
        worker = self._workers.get(name)
        if worker is not None and stored is not None:
            # Before the RPC answers, on the node that dispatches the queue (another node hears
            # of it by a signal): a paused queue starts nothing more.
            worker.configure(stored)
        if not self._stopping:
            self._spawn(self._reload(name, self._next_reload(name)))

    def task_added(self, task: Task) -> None:
        worker = self._workers.get(task.name.queue)
        if worker is not None:
            self._revive(worker)
            worker.note_due(task.schedule_time)
        else:  # another node holds the queue (or will): wake it
            self.signals.task_added(task.name.queue, task.schedule_time)

    # -- signals from other nodes ----------------------------------------------------------

    def _task_signalled(self, name: QueueName, due: datetime) -> None:
        worker = self._workers.get(name)
        if worker is not None:
            self._revive(worker)
            worker.note_due(due)

    def _queue_signalled(self, name: QueueName) -> None:
        if not self._stopping:
            self._spawn(self._reload(name, self._next_reload(name)))

    def _next_reload(self, name: QueueName) -> int:
        """Number a reload when it is asked for: of reloads whose reads overlap, only the one
        asked for last applies what it read (it read after every change it was asked for)."""
        self._reloads[name] = self._reloads.get(name, 0) + 1
        return self._reloads[name]

    def _signals_missed(self) -> None:
        """Signals may have been lost: every worker looks for work, and the node for queues."""
        for worker in self._workers.values():
            self._revive(worker)
            worker.wake()
        self.ownership.poke()

    async def _reload(self, name: QueueName, number: int) -> None:
        try:
            queue = await self._store.get_queue(name)
        except NotFound:
            if self._reloads.get(name) != number:
                return  # a later reload decides (the queue may have been made again)
            self._unread.discard(name)
            worker = self._workers.pop(name, None)
            if worker is not None:
                await worker.stop()  # the queue and its tasks are gone: send nothing more
            return
        except Exception:
            DISPATCH_LOG.exception(
                "could not reload queue %s; its dispatching keeps its previous settings", name
            )
            queue = None
        if self._reloads.get(name) != number:
            return  # a reload asked for later reads what this one read, or newer
        self._unread.discard(name)
        worker = self._workers.get(name)
        if worker is not None:
            if queue is not None:
                worker.configure(queue)
            self._revive(worker)
        elif queue is None or name in self.ownership.known:
            return  # unread, or another node holds it
        elif self._looping:
            self.ownership.poke()  # a new queue: its node takes it in the next round
        else:
            await self.ownership.round()

    def _revive(self, worker: QueueWorker) -> None:
        """Start a worker's loop if the dispatcher loops and the worker's loop is not running
        (a new queue, or a loop that died for any reason), once it has read its queue again."""
        if (
            self._looping
            and not self._stopping
            and not worker.running
            and worker.queue.name not in self._unread
        ):
            worker.start()

    # -- dispatching ------------------------------------------------------------------------

    async def run_once(self) -> PassResult:
        """One pass of every worker: claim what may be dispatched now and start it. Without the
        loop, a node whose leases have run out (the clock was moved) renews them first, as its
        rounds would have."""
        if not self._looping and not self.ownership.proven():
            await self.ownership.round()
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
            self._runner.track(self._run_elsewhere(claimed, queue, called))
        return claimed

    async def _run_elsewhere(self, claimed: Task, queue: Queue, called: datetime) -> None:
        """RunTask's attempt of a queue another node holds: its holder hears of the retry."""
        due = await self._runner.attempt(claimed, queue, retry_from=called)
        if due is not None:
            self.signals.task_added(queue.name, due)

    def live(self, name: QueueName) -> tuple[int, int]:
        """Attempts of a queue in flight now, and attempts that ended in the last minute."""
        worker = self._workers.get(name)
        return (0, 0) if worker is None else worker.live()

    def _spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
