"""Logs as observers: tasks that leave their queue without success (WARNING), queue state
changes (INFO) and, when asked for, one line per API call (the access log).

Structured fields travel in ``extra=`` (queue, task, attempt, status, reason, method, code,
duration_ms, caller) so a JSON formatter can print them as fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentasks.service.observers import (
    Observer,
    Observers,
    QueueChange,
    QueueChanged,
    RpcServed,
    TaskFinished,
    status_text,
)

TASK_LOG = logging.getLogger("opentasks.tasks")
QUEUE_LOG = logging.getLogger("opentasks.queues")
ACCESS_LOG = logging.getLogger("opentasks.access")
_STATE_CHANGES = frozenset({QueueChange.PAUSED, QueueChange.RESUMED, QueueChange.PURGED, QueueChange.DELETED})
_WHY = {
    "max_attempts": "it failed its last allowed attempt (max_attempts)",
    "max_retry_duration": "its retries ran out of time (max_retry_duration)",
}


class EventLog(Observer):
    """Dropped tasks at WARNING, queue pauses, resumes, purges and deletions at INFO."""

    def task_finished(self, event: TaskFinished) -> None:
        if not event.reason.failed:
            return
        status = status_text(event.outcome)
        TASK_LOG.warning(
            "queue %s: task %s dropped after %d attempt(s), last response %s: %s",
            event.name.queue,
            event.name.task_id,
            event.attempts,
            status,
            _WHY[event.reason.value],
            extra={
                "queue": str(event.name.queue),
                "task": event.name.task_id,
                "attempt": event.attempts,
                "status": status,
                "reason": event.reason.value,
            },
        )

    def queue_changed(self, event: QueueChanged) -> None:
        if event.change in _STATE_CHANGES:
            QUEUE_LOG.info(
                "queue %s %s",
                event.name,
                event.change.value,
                extra={"queue": str(event.name), "change": event.change.value},
            )


class AccessLog(Observer):
    """One INFO line per API call: transport, method, status, duration and caller token id."""

    def rpc_served(self, event: RpcServed) -> None:
        duration_ms = round(event.duration_seconds * 1000, 3)
        ACCESS_LOG.info(
            "%s %s %s %.1f ms caller=%s",
            event.transport,
            event.method,
            event.code,
            duration_ms,
            event.caller or "-",
            extra={
                "transport": event.transport,
                "method": event.method,
                "code": event.code,
                "status": event.http_status or event.code,
                "duration_ms": duration_ms,
                "caller": event.caller,
            },
        )


def default_observers(monotonic: Callable[[], float], *, access_log: bool = False) -> Observers:
    """What every server observes: the event log, and the access log when asked for."""
    observers: list[Observer] = [EventLog()]
    if access_log:
        observers.append(AccessLog())
    return Observers(observers, monotonic=monotonic)
