"""Looking through a queue's tasks the way an operator does (pure): by state, by a search text,
a page at a time, with bounded work per page however long the queue is.

Cloud Tasks' ListTasks pages through a queue in one order and cannot filter; the dashboard asks
"which tasks are retrying?", "which task calls this URL?". A page reads at most ``scan_limit``
rows, so a search that matches few tasks of a queue of 1,000,000 answers quickly with the
tasks it found and a cursor to read on, instead of reading the whole queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from opentasks.domain.names import QueueName
from opentasks.domain.task import Task

DEFAULT_PAGE = 50
MAX_PAGE = 500
DEFAULT_SCAN_LIMIT = 5000  # rows one page may read to find its tasks
MAX_SEARCH_CHARS = 200
# Dead letters are counted up to this many per queue (more read as "10,000+"): a count costs
# at most that many index entries, however many a failing queue has piled up.
DEAD_LETTER_COUNT_CAP = 10_000


class TaskState(Enum):
    """Where a task that is still in its queue stands at a moment ``now``."""

    DUE = "due"  # its time has come and no attempt is running (an expired lease counts here)
    SCHEDULED = "scheduled"  # its time is ahead and it was never attempted
    RETRYING = "retrying"  # its time is ahead and it was attempted before: waiting out a backoff
    IN_FLIGHT = "in_flight"  # an attempt is running now (its lease has not expired)


def task_state(task: Task, *, leased_until: datetime | None, now: datetime) -> TaskState:
    """The state of ``task`` at ``now``; ``leased_until`` is the end of its running attempt's
    lease (None: no attempt is running)."""
    if leased_until is not None and leased_until > now:
        return TaskState.IN_FLIGHT
    if task.schedule_time <= now:
        return TaskState.DUE
    return TaskState.RETRYING if task.dispatch_count > 0 else TaskState.SCHEDULED


@dataclass(frozen=True)
class TaskSearch:
    """Tasks whose ID, URL (or App Engine relative URI) or any header value contains ``text``,
    ignoring case. An empty text matches every task."""

    text: str = ""

    @property
    def folded(self) -> str:
        return self.text.casefold()

    def matches(self, task: Task) -> bool:
        if not self.text:
            return True
        needle = self.folded
        return any(needle in hay.casefold() for hay in searched_texts(task))


def searched_texts(task: Task) -> list[str]:
    """The texts of ``task`` that a :class:`TaskSearch` looks in."""
    texts = [task.name.task_id]
    if task.http_request is not None:
        texts.append(task.http_request.url)
        texts.extend(task.http_request.headers.values())
    if task.app_engine_http_request is not None:
        texts.append(task.app_engine_http_request.relative_uri)
        texts.extend(task.app_engine_http_request.headers.values())
    return texts


@dataclass(frozen=True, order=True)
class BrowseCursor:
    """Where a page ended: the sort key (microseconds since the epoch) and the row's sequence
    number of its last row. Its text form is ``KEY.SEQ``."""

    key: int
    seq: int

    def __str__(self) -> str:
        return f"{self.key}.{self.seq}"

    @classmethod
    def parse(cls, text: str) -> BrowseCursor:
        """The cursor written as ``text``; ValueError if it is not one."""
        key, dot, seq = text.partition(".")
        if not dot or not _integer(key) or not _integer(seq):
            raise ValueError(f"not a cursor: {text!r}")
        return cls(int(key), int(seq))


def _integer(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit() and len(digits) <= 18


@dataclass(frozen=True)
class BrowsePage:
    """Tasks of one state, in the state's order, and where to read on (None: no more).

    The order: DUE and IN_FLIGHT by the time the dispatcher may take the task next (for an
    in-flight task, its lease's end), SCHEDULED and RETRYING by schedule time; ties by
    creation order. ``scanned`` rows were read; a page holds fewer tasks than asked when a
    search matched few of them, and still has a cursor when rows remain unread.
    """

    tasks: list[Task]
    next_cursor: BrowseCursor | None
    scanned: int = 0


@dataclass(frozen=True)
class OutcomeMinute:
    """Attempts of a queue that ended in one minute (``minute`` is its start, in UTC):
    ``succeeded`` got a 2xx, ``failed`` did not (retried or failed for good)."""

    queue: QueueName
    minute: datetime
    succeeded: int = 0
    failed: int = 0
