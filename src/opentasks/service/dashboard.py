"""What the web dashboard shows and does, so its handlers stay thin.

Reads come from the store's bounded queries (queue counts kept on indexes, a page of tasks in one
state by cursor, per-minute outcomes, dead-letter counts); every change goes through the queue,
task and history services, exactly as an API call would, so the same rules and messages apply.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar, cast

from opentasks.clock import Clock
from opentasks.domain.browse import BrowseCursor, OutcomeMinute, TaskSearch, TaskState, task_state
from opentasks.domain.history import FAILED_REASONS, AttemptRecord, FinishedTask, FinishReason
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import Queue
from opentasks.domain.stats import QueueStats
from opentasks.domain.task import DEFAULT_HTTP_DISPATCH_DEADLINE, Task, TaskView
from opentasks.errors import InvalidArgument, NotFound, OpenTasksError
from opentasks.service.history import HistoryService
from opentasks.service.queue_insights import StoreInsights, oldest_due_age
from opentasks.service.queues import QueueService
from opentasks.service.tasks import TaskService
from opentasks.storage.base import Store

CHART_MINUTES = 30  # minutes of outcomes a chart shows
RATE_MINUTES = 5  # minutes the success and failure rates are averaged over
PAGE_SIZE = 50
BULK_LIMIT = 1000  # tasks one bulk action acts on
HISTORY_SCAN = 5000  # kept tasks one searched page of a history tab reads at most
HISTORY_BATCH = 500  # kept tasks read at a time while searching
_RUN_CONCURRENCY = 50
LEASE_GRACE_GUESS = timedelta(seconds=30)
COUNTS_TTL_S = 1.0  # queue counts are shared by the pages and polls of every viewer this long
T = TypeVar("T")


class Tab(Enum):
    """The tabs of a queue page: four states of the tasks in it, three ends of those that left."""

    DUE = "due"
    SCHEDULED = "scheduled"
    RETRYING = "retrying"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DELETED = "deleted"

    @classmethod
    def parse(cls, text: str) -> Tab:
        try:
            return cls(text or "due")
        except ValueError:
            names = ", ".join(tab.value for tab in cls)
            raise InvalidArgument(f"There is no tab '{text[:40]}'; the tabs are {names}.") from None

    @property
    def state(self) -> TaskState | None:
        """The state of the live tasks this tab lists (None: a tab of finished tasks)."""
        return _LIVE.get(self)

    @property
    def reasons(self) -> frozenset[FinishReason]:
        return _FINISHED.get(self, frozenset())

    @property
    def actions(self) -> tuple[str, ...]:
        """The bulk actions that apply to this tab's tasks."""
        if self.state is not None:
            return ("run", "delete")
        return ("redrive",) if self == Tab.FAILED else ()


_LIVE = {
    Tab.DUE: TaskState.DUE,
    Tab.SCHEDULED: TaskState.SCHEDULED,
    Tab.RETRYING: TaskState.RETRYING,
    Tab.IN_FLIGHT: TaskState.IN_FLIGHT,
}
_FINISHED = {
    Tab.SUCCEEDED: frozenset({FinishReason.SUCCEEDED}),
    Tab.FAILED: FAILED_REASONS,
    Tab.DELETED: frozenset({FinishReason.DELETED, FinishReason.PURGED}),
}


@dataclass(frozen=True)
class Minute:
    """Attempts that ended in one minute (``start``, UTC)."""

    start: datetime
    succeeded: int = 0
    failed: int = 0


@dataclass(frozen=True)
class QueueSummary:
    """A queue with its numbers at ``now``: what the overview's row and a queue page's header
    show. ``minutes`` are the last :data:`CHART_MINUTES`, oldest first, with empty ones."""

    queue: Queue
    stats: QueueStats
    dead_letters: int
    minutes: list[Minute]
    now: datetime

    @property
    def state(self) -> str:
        return self.queue.state.name

    @property
    def in_flight(self) -> int:
        return self.stats.concurrent_dispatches_count

    @property
    def due(self) -> int:
        """Due tasks no attempt is running for."""
        return max(0, self.stats.due_tasks_count - self.in_flight)

    @property
    def scheduled(self) -> int:
        """Tasks whose time has not come (new ones and retries waiting out a backoff)."""
        return max(0, self.stats.tasks_count - self.stats.due_tasks_count)

    @property
    def oldest_due_seconds(self) -> float:
        return oldest_due_age(self.stats, self.now)

    @property
    def recent(self) -> list[Minute]:
        return self.minutes[-RATE_MINUTES:]

    @property
    def succeeded_per_minute(self) -> float:
        return sum(m.succeeded for m in self.recent) / RATE_MINUTES

    @property
    def failed_per_minute(self) -> float:
        return sum(m.failed for m in self.recent) / RATE_MINUTES

    @property
    def recent_attempts(self) -> tuple[int, int]:
        """(succeeded, failed) over the last :data:`RATE_MINUTES`."""
        return sum(m.succeeded for m in self.recent), sum(m.failed for m in self.recent)


@dataclass(frozen=True)
class TaskRow:
    """A row of a tab: a task in its queue, or a task that left it (``finished``)."""

    task: Task
    finished: FinishedTask | None = None

    @property
    def task_id(self) -> str:
        return self.task.name.task_id


@dataclass(frozen=True)
class TasksPage:
    """A page of one tab: its rows, the cursor of the next page (None: the last), and how many
    rows were read to find them."""

    rows: list[TaskRow]
    next_cursor: str | None
    scanned: int


@dataclass(frozen=True)
class TaskDetail:
    """Everything known of a task name: the task if it is still queued, how earlier tasks of
    that name ended, and every attempt kept."""

    name: TaskName
    live: Task | None
    state: TaskState | None
    ends: list[FinishedTask]
    attempts: list[AttemptRecord]

    @property
    def task(self) -> Task:
        """The task to show: the queued one, else as it was when it last ended."""
        if self.live is not None:
            return self.live
        return self.ends[-1].task

    @property
    def last_end(self) -> FinishedTask | None:
        return self.ends[-1] if self.ends else None

    @property
    def dead_letter(self) -> bool:
        """True when a kept end of this name failed for good and was not redriven yet (so it
        can be, once: redriving the name takes its latest such end)."""
        return any(end.dead_letter for end in self.ends)

    def redriven_to(self, end: FinishedTask) -> TaskName | None:
        """The task ``end`` (one of :attr:`ends`) was redriven as, if it was."""
        return None if end.redriven_as is None else TaskName(self.name.queue, end.redriven_as)


@dataclass(frozen=True)
class BulkResult:
    """What a bulk action did: tasks it acted on, refusals (the first few messages) and whether
    more tasks match than one action takes."""

    action: str
    done: int
    refused: list[str] = field(default_factory=list)
    refused_count: int = 0
    more: bool = False
    created: list[Task] = field(default_factory=list)


class SharedReads:
    """Answers of slow reads (counting a queue's tasks reads its whole index), kept ``ttl_s``
    seconds and shared by every caller meanwhile, including those that ask while the read runs:
    however many browsers poll a page, a queue is counted at most once a second."""

    def __init__(self, monotonic: Callable[[], float], ttl_s: float = COUNTS_TTL_S) -> None:
        self._monotonic = monotonic
        self._ttl_s = ttl_s
        self._entries: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}

    async def get(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        now = self._monotonic()
        entry = self._entries.get(key)
        if entry is None or not self._usable(entry, now):
            entry = (now, asyncio.ensure_future(read()))
            self._entries[key] = entry
        return cast(T, await asyncio.shield(entry[1]))

    def _usable(self, entry: tuple[float, asyncio.Future[Any]], now: float) -> bool:
        started, answer = entry
        if not answer.done():
            return True
        return now - started < self._ttl_s and not answer.cancelled() and answer.exception() is None

    def forget(self) -> None:
        """Drop every kept answer (after a change, the next page counts again)."""
        self._entries.clear()


class DashboardService:
    """The dashboard's reads and actions over the server's services."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        queues: QueueService,
        tasks: TaskService,
        history: HistoryService,
        insights: StoreInsights,
        lease_grace: timedelta = LEASE_GRACE_GUESS,
        counts_ttl_s: float = COUNTS_TTL_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self.queues = queues
        self.tasks = tasks
        self.history = history
        self._insights = insights
        self._lease_grace = lease_grace
        self._counts = SharedReads(clock.monotonic, counts_ttl_s)

    def now(self) -> datetime:
        return self._clock.now()

    # -- reads ---------------------------------------------------------------------------------

    async def overview(self) -> list[QueueSummary]:
        """Every queue with its numbers, by name."""
        now = self._clock.now()
        stats = await self._counts.get("all", self._insights.all_queue_stats)
        dead = await self._store.dead_letter_counts(now)
        minutes = await self._minutes(now, None)
        summaries = [
            QueueSummary(queue, numbers, dead.get(queue.name, 0), minutes.get(queue.name, _empty(now)), now)
            for queue, numbers in stats
        ]
        return sorted(summaries, key=lambda s: str(s.queue.name))

    async def queue_summary(self, name: QueueName) -> QueueSummary:
        """One queue with its numbers; NotFound if it does not exist."""
        queue = await self.queues.get_queue(name)
        stats = await self._counts.get(name, lambda: self._insights.queue_stats(name))
        now = self._clock.now()
        dead = await self._store.dead_letter_counts(now, name)
        minutes = await self._minutes(now, name)
        return QueueSummary(queue, stats, dead.get(name, 0), minutes.get(name, _empty(now)), now)

    async def _minutes(self, now: datetime, queue: QueueName | None) -> dict[QueueName, list[Minute]]:
        since = minute_start(now) - timedelta(minutes=CHART_MINUTES - 1)
        rows = await self._store.outcomes(since, queue)
        return per_queue_minutes(rows, since, CHART_MINUTES)

    async def tasks_page(
        self, name: QueueName, tab: Tab, search: TaskSearch, cursor: str, limit: int = PAGE_SIZE
    ) -> TasksPage:
        """A page of ``tab`` from ``cursor`` ('' for the first page)."""
        state = tab.state
        if state is not None:
            return await self._live_page(name, state, search, parse_live_cursor(cursor), limit)
        return await self._finished_page(name, tab.reasons, search, parse_history_cursor(cursor), limit)

    async def _live_page(
        self, name: QueueName, state: TaskState, search: TaskSearch, after: BrowseCursor | None, limit: int
    ) -> TasksPage:
        page = await self._store.browse_tasks(
            name, self._clock.now(), state, search=search, after=after, limit=limit
        )
        cursor = str(page.next_cursor) if page.next_cursor is not None else None
        return TasksPage([TaskRow(task) for task in page.tasks], cursor, page.scanned)

    async def _finished_page(
        self, name: QueueName, reasons: frozenset[FinishReason], search: TaskSearch, before: int, limit: int
    ) -> TasksPage:
        rows: list[TaskRow] = []
        scanned = 0
        cursor: int | None = before
        while cursor is not None and len(rows) < limit and scanned < HISTORY_SCAN:
            wanted = limit - len(rows)
            size = min(HISTORY_BATCH, HISTORY_SCAN - scanned) if search.text else wanted
            page = await self.history.finished_tasks(name, reasons=reasons, before=cursor, page_size=size)
            positions = [i for i, end in enumerate(page.tasks) if search.matches(end.task)]
            if len(positions) > wanted:
                # The cursor cannot resume inside a page: read again just up to the last match shown.
                page = await self.history.finished_tasks(
                    name, reasons=reasons, before=cursor, page_size=positions[wanted - 1] + 1
                )
                positions = [i for i, end in enumerate(page.tasks) if search.matches(end.task)]
            rows += [TaskRow(page.tasks[i].task, page.tasks[i]) for i in positions[:wanted]]
            scanned += len(page.tasks)
            cursor = page.next_before
        return TasksPage(rows, str(cursor) if cursor is not None else None, scanned)

    async def task_detail(self, name: TaskName) -> TaskDetail:
        """The task and its history; NotFound when neither its queue holds it nor history has it."""
        now = self._clock.now()
        live: Task | None
        try:
            live = await self.tasks.get_task(name, TaskView.FULL)
        except NotFound:
            live = None
        ends, attempts = await self._store.task_history(name, now)
        if live is None and not ends:
            await self.queues.get_queue(name.queue)  # the queue's own NotFound if it is missing
            raise NotFound(
                f"Task {name.task_id} is not in queue {name.queue.queue_id}, nor in its kept history."
            )
        if live is not None:
            attempts = [a for a in attempts if a.created == live.create_time] or attempts
        state = self._live_state(live, now) if live is not None else None
        return TaskDetail(name, live, state, ends, attempts)

    def _live_state(self, task: Task, now: datetime) -> TaskState:
        """The task's state as far as its record tells: an attempt that has not ended yet and
        whose deadline has not passed counts as in flight. An attempt that ended unanswered (the
        handler unreachable) has a status and no response time: it has ended."""
        last = task.last_attempt
        leased_until = None
        if last is not None and last.dispatch_time is not None and last.response_status is None:
            deadline = task.dispatch_deadline or DEFAULT_HTTP_DISPATCH_DEADLINE
            leased_until = last.dispatch_time + deadline + self._lease_grace
        return task_state(task, leased_until=leased_until, now=now)

    # -- actions -------------------------------------------------------------------------------

    async def queue_action(self, name: QueueName, action: str) -> Queue:
        """Pause, resume or purge a queue."""
        self._counts.forget()
        match action:
            case "pause":
                return await self.queues.pause_queue(name)
            case "resume":
                return await self.queues.resume_queue(name)
            case "purge":
                return await self.queues.purge_queue(name)
        raise InvalidArgument(f"Unknown queue action '{action[:40]}'.")

    async def update_settings(self, current: Queue, queue: Queue, mask: list[str]) -> Queue:
        """UpdateQueue with ``mask``, keeping a queue.yaml queue one (so its burst stays its own)."""
        self._counts.forget()
        return await self.queues.update_queue(queue, mask, queue_yaml=current.from_queue_yaml)

    async def bulk(
        self, name: QueueName, action: str, tab: Tab, search: TaskSearch, task_ids: list[str] | None
    ) -> BulkResult:
        """Run, delete or redrive the tasks ``task_ids`` of ``name`` or, when None, up to
        :data:`BULK_LIMIT` of those ``tab`` and ``search`` match."""
        if action not in tab.actions:
            raise InvalidArgument(f"'{action[:40]}' does not apply to the tasks of the {tab.value} tab.")
        self._counts.forget()
        await self.queues.get_queue(name)
        more = False
        if task_ids is None:
            task_ids, more = await self._matching_ids(name, tab, search)
        task_ids = list(dict.fromkeys(task_ids))[:BULK_LIMIT]
        match action:
            case "delete":
                return await self._delete(name, task_ids, more)
            case "run":
                return await self._run(name, task_ids, more)
        return await self._redrive(name, task_ids, more)

    async def _matching_ids(self, name: QueueName, tab: Tab, search: TaskSearch) -> tuple[list[str], bool]:
        """IDs of up to :data:`BULK_LIMIT` tasks the tab and search show, and whether more match."""
        found: list[str] = []
        cursor = ""
        while len(found) < BULK_LIMIT:
            page = await self.tasks_page(name, tab, search, cursor, limit=min(500, BULK_LIMIT - len(found)))
            found += [row.task_id for row in page.rows]
            if page.next_cursor is None:
                return found, False
            cursor = page.next_cursor
        return found, True

    async def _delete(self, name: QueueName, task_ids: list[str], more: bool) -> BulkResult:
        names = [str(TaskName(name, task_id)) for task_id in task_ids]
        outcomes = await self.tasks.batch_delete_tasks(name, names) if names else []
        return _result("delete", outcomes, more)

    async def _run(self, name: QueueName, task_ids: list[str], more: bool) -> BulkResult:
        outcomes: list[OpenTasksError | None] = []
        for start in range(0, len(task_ids), _RUN_CONCURRENCY):
            chunk = task_ids[start : start + _RUN_CONCURRENCY]
            outcomes += await _each(self.tasks.run_task(TaskName(name, i), TaskView.BASIC) for i in chunk)
        return _result("run", outcomes, more)

    async def _redrive(self, name: QueueName, task_ids: list[str], more: bool) -> BulkResult:
        created: list[Task] = []
        outcomes: list[OpenTasksError | None] = []
        for task_id in task_ids:
            try:
                created += (await self.history.redrive(name, [task_id])).tasks
                outcomes.append(None)
            except OpenTasksError as refused:
                outcomes.append(refused)
        result = _result("redrive", outcomes, more)
        return BulkResult(result.action, result.done, result.refused, result.refused_count, more, created)

    async def redrive_one(self, name: TaskName) -> Task:
        """Send the dead letter ``name`` again as a new task."""
        self._counts.forget()
        return (await self.history.redrive(name.queue, [name.task_id])).tasks[0]

    async def run_task(self, name: TaskName) -> Task:
        """RunTask: send the task now."""
        self._counts.forget()
        return await self.tasks.run_task(name, TaskView.BASIC)

    async def delete_task(self, name: TaskName) -> None:
        self._counts.forget()
        await self.tasks.delete_task(name)


async def _each(calls: Iterable[Awaitable[object]]) -> list[OpenTasksError | None]:
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, OpenTasksError):
            raise outcome
    return [outcome if isinstance(outcome, OpenTasksError) else None for outcome in outcomes]


def _result(action: str, outcomes: list[OpenTasksError | None], more: bool) -> BulkResult:
    refused = [error for error in outcomes if error is not None]
    messages = list(dict.fromkeys(error.message for error in refused))[:3]
    return BulkResult(action, len(outcomes) - len(refused), messages, len(refused), more)


def minute_start(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def _empty(now: datetime) -> list[Minute]:
    start = minute_start(now) - timedelta(minutes=CHART_MINUTES - 1)
    return [Minute(start + timedelta(minutes=i)) for i in range(CHART_MINUTES)]


def per_queue_minutes(
    rows: list[OutcomeMinute], since: datetime, minutes: int
) -> dict[QueueName, list[Minute]]:
    """The store's per-minute rows as each queue's ``minutes`` minutes from ``since``, oldest
    first, minutes without a row included (as zero)."""
    totals: dict[QueueName, dict[datetime, tuple[int, int]]] = defaultdict(dict)
    for row in rows:
        start = minute_start(row.minute.astimezone(UTC))
        ok, failed = totals[row.queue].get(start, (0, 0))
        totals[row.queue][start] = (ok + row.succeeded, failed + row.failed)
    starts = [since + timedelta(minutes=i) for i in range(minutes)]
    return {
        queue: [Minute(start, *by_minute.get(start, (0, 0))) for start in starts]
        for queue, by_minute in totals.items()
    }


def parse_live_cursor(text: str) -> BrowseCursor | None:
    if not text:
        return None
    try:
        return BrowseCursor.parse(text)
    except ValueError:
        raise InvalidArgument(
            "The page cursor is not one this dashboard gave; start again from the first page."
        ) from None


def parse_history_cursor(text: str) -> int:
    if not text:
        return 0
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or int(text) <= 0:
        raise InvalidArgument(
            "The page cursor is not one this dashboard gave; start again from the first page."
        )
    return int(text)
