"""Wake-ups between nodes: "a task was added to queue Q", "queue Q changed", "the nodes changed".

A node publishes them through the store (PostgreSQL's NOTIFY, or in the process) and every
node receives them. Publishing is batched like a group commit: what is signalled while one
batch is on its way forms the next, so a burst of CreateTask calls costs a few messages, never
one per task, and never a write inside the task's own transaction. Messages are hints: a node
that misses some (its listening connection dropped) is told so and looks for work itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from opentasks.clock import Clock
from opentasks.domain.names import QueueName
from opentasks.storage import codec
from opentasks.storage.base import Store
from opentasks.throttled_log import ThrottledLog

_log = logging.getLogger("opentasks.nodes")
_TASK, _QUEUE, _NODES = "t", "q", "n"


@dataclass(frozen=True)
class SignalHandlers:
    """What a node does with the signals of other nodes."""

    task_added: Callable[[QueueName, datetime], None]
    queue_changed: Callable[[QueueName], None]
    nodes_changed: Callable[[], None]
    missed: Callable[[], None]


class Signals:
    """Publishes this node's signals and hands other nodes' to :class:`SignalHandlers`."""

    def __init__(self, store: Store, clock: Clock, node_id: str) -> None:
        self._store = store
        self._node_id = node_id
        self._tasks: dict[QueueName, datetime] = {}  # queue -> earliest due time signalled
        self._queues: set[QueueName] = set()
        self._nodes = False
        self._sending: asyncio.Task[None] | None = None
        self._handlers: SignalHandlers | None = None
        self._errors = ThrottledLog(_log, clock.monotonic, interval_s=60.0)

    async def listen(self, handlers: SignalHandlers) -> None:
        self._handlers = handlers
        await self._store.subscribe(self._received, handlers.missed)

    # -- publishing ------------------------------------------------------------------------

    def task_added(self, queue: QueueName, due: datetime) -> None:
        known = self._tasks.get(queue)
        if known is None or due < known:
            self._tasks[queue] = due
        self._send_soon()

    def queue_changed(self, queue: QueueName) -> None:
        self._queues.add(queue)
        self._send_soon()

    def nodes_changed(self) -> None:
        self._nodes = True
        self._send_soon()

    async def flush(self) -> None:
        """Return once everything signalled so far has been published (or failed to be)."""
        while self._sending is not None and not self._sending.done():
            await self._sending

    def _send_soon(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        while self._tasks or self._queues or self._nodes:
            try:
                await self._store.notify(self._take())
            except Exception as error:  # a lost hint: receivers fall back on their timers
                self._errors.warning("could not signal other nodes: %s", error)

    def _take(self) -> list[str]:
        me = self._node_id
        messages = [f"{_TASK} {me} {codec.to_micros(due)} {queue}" for queue, due in self._tasks.items()]
        messages += [f"{_QUEUE} {me} {queue}" for queue in self._queues]
        if self._nodes:
            messages.append(f"{_NODES} {me}")
        self._tasks, self._queues, self._nodes = {}, set(), False
        return messages

    # -- receiving -------------------------------------------------------------------------

    def _received(self, messages: list[str]) -> None:
        handlers = self._handlers
        if handlers is None:
            return
        for message in messages:
            try:
                self._dispatch(handlers, message)
            except Exception:  # a message this version cannot read (a newer node): skip it
                self._errors.warning("ignored a signal this node cannot read: %r", message[:200])

    def _dispatch(self, handlers: SignalHandlers, message: str) -> None:
        kind, sender, *rest = message.split(" ", 2)
        if sender == self._node_id:
            return
        if kind == _TASK:
            due, queue = rest[0].split(" ", 1)
            handlers.task_added(QueueName.parse(queue), codec.from_micros(int(due)))
        elif kind == _QUEUE:
            handlers.queue_changed(QueueName.parse(rest[0]))
        elif kind == _NODES:
            handlers.nodes_changed()
