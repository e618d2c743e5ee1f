"""The observer seam: what the dispatcher, the services and the API publish, and who listens.

Metrics, logs and (later) history subscribe here; publishers never know who listens. Events
are small frozen records built only when someone subscribed, and an observer that raises is
logged (at most every 10 s) without disturbing the publisher or the other observers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from opentasks.domain.history import FinishReason
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import RetryConfig
from opentasks.domain.task import AttemptFailure, AttemptOutcome, Task
from opentasks.throttled_log import ThrottledLog

_log = logging.getLogger(__name__)


class QueueChange(Enum):
    CREATED = "created"
    UPDATED = "updated"
    PAUSED = "paused"
    RESUMED = "resumed"
    PURGED = "purged"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class TaskCreated:
    task: Task


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """One attempt ended. ``task`` is the task as claimed (it counts this attempt);
    ``response_seconds`` is how long the handler took (or until the attempt gave up);
    ``dispatch_delay_seconds`` is from the task falling due to the attempt leaving."""

    task: Task
    outcome: AttemptOutcome
    response_seconds: float
    dispatch_delay_seconds: float


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """A task left its queue. ``outcome`` is its last attempt's (None if it never ran)."""

    name: TaskName
    reason: FinishReason
    attempts: int
    outcome: AttemptOutcome | None = None


@dataclass(frozen=True, slots=True)
class QueueChanged:
    name: QueueName
    change: QueueChange


@dataclass(frozen=True, slots=True)
class RpcServed:
    """One API call. ``method`` is the RPC's name (e.g. ``CreateTask``), ``code`` the gRPC status
    code name (``OK``, ``NOT_FOUND``, ...), ``caller`` the id of the token used (never the token)."""

    transport: str  # "grpc" or "http"
    method: str
    code: str
    duration_seconds: float
    caller: str = ""
    http_status: int = 0


class Observer:
    """Override what you listen to; every method does nothing by default."""

    def task_created(self, event: TaskCreated) -> None:
        return None

    def attempt_finished(self, event: AttemptFinished) -> None:
        return None

    def task_finished(self, event: TaskFinished) -> None:
        return None

    def queue_changed(self, event: QueueChanged) -> None:
        return None

    def rpc_served(self, event: RpcServed) -> None:
        return None


class Observers:
    """The subscribers. Publishers check :meth:`wants` before building an event, so an event
    nobody listens to costs one set lookup."""

    def __init__(self, observers: Iterable[Observer] = (), *, monotonic: Callable[[], float]) -> None:
        self._errors = ThrottledLog(_log, monotonic, interval_s=10.0)
        self._listeners: dict[str, tuple[Callable[[Any], None], ...]] = {kind: () for kind in _KINDS}
        self.wanted: frozenset[str] = frozenset()
        for observer in observers:
            self.subscribe(observer)

    def subscribe(self, observer: Observer) -> None:
        """Listen with ``observer``'s overridden methods (the others are never called)."""
        for kind in _KINDS:
            if getattr(type(observer), kind) is not getattr(Observer, kind):
                self._listeners[kind] = (*self._listeners[kind], getattr(observer, kind))
        self.wanted = frozenset(kind for kind, listeners in self._listeners.items() if listeners)

    def task_created(self, event: TaskCreated) -> None:
        self._publish("task_created", event)

    def attempt_finished(self, event: AttemptFinished) -> None:
        self._publish("attempt_finished", event)

    def task_finished(self, event: TaskFinished) -> None:
        self._publish("task_finished", event)

    def queue_changed(self, event: QueueChanged) -> None:
        self._publish("queue_changed", event)

    def rpc_served(self, event: RpcServed) -> None:
        self._publish("rpc_served", event)

    def _publish(self, kind: str, event: object) -> None:
        for listener in self._listeners[kind]:
            try:
                listener(event)
            except Exception:
                # Never the event itself: it may hold a task's body and headers.
                self._errors.exception(
                    "observer %s failed on a %s event", _named(listener), type(event).__name__
                )


def _named(listener: object) -> str:
    return str(getattr(listener, "__qualname__", type(listener).__name__))


ATTEMPT_FINISHED = "attempt_finished"
TASK_FINISHED = "task_finished"
TASK_CREATED = "task_created"
QUEUE_CHANGED = "queue_changed"
RPC_SERVED = "rpc_served"
_KINDS = (TASK_CREATED, ATTEMPT_FINISHED, TASK_FINISHED, QUEUE_CHANGED, RPC_SERVED)


def stop_reason(config: RetryConfig, attempts: int) -> FinishReason:
    """Which limit ended the retries of a task that failed its ``attempts``-th attempt for good."""
    if config.max_attempts != -1 and attempts >= config.max_attempts:
        return FinishReason.MAX_ATTEMPTS
    return FinishReason.MAX_RETRY_DURATION


def outcome_class(outcome: AttemptOutcome) -> str:
    """A bounded label for an attempt's outcome: ``2xx``..``5xx``, ``timeout``, ``unreachable``
    or ``refused``."""
    if outcome.failure == AttemptFailure.TIMEOUT:
        return "timeout"
    if outcome.failure == AttemptFailure.UNREACHABLE:
        return "unreachable"
    if outcome.failure == AttemptFailure.REFUSED:
        return "refused"
    status = outcome.http_status
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def status_text(outcome: AttemptOutcome | None) -> str:
    """The last response status as a log shows it."""
    if outcome is None:
        return "none"
    if outcome.failure != AttemptFailure.NONE:
        return outcome.failure.name.lower()
    return str(outcome.http_status)
