"""The in-memory store: product code for ``memory://`` and fast tests; nothing survives a restart."""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from msgspec.structs import replace

from opentasks.domain.attempt import claim
from opentasks.domain.browse import (
    DEAD_LETTER_COUNT_CAP,
    DEFAULT_PAGE,
    DEFAULT_SCAN_LIMIT,
    BrowseCursor,
    BrowsePage,
    OutcomeMinute,
    TaskSearch,
    TaskState,
)
from opentasks.domain.history import AttemptRecord, FinishedTask, FinishReason, HistoryPage
from opentasks.domain.lease import lease_expiry
from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.queue import Queue, QueueState
from opentasks.domain.task import Task
from opentasks.storage import base, codec
from opentasks.storage.base import AttemptResult, Claim, Fence, QueueChange, TaskPage, Windows
from opentasks.storage.browsing import BrowseRow, BrowseScan
from opentasks.storage.local_history import LocalHistory, LocalOutcomes
from opentasks.storage.local_nodes import LocalNodes


@dataclass
class _Entry:
    seq: int
    task: Task
    due: datetime  # schedule_time, or the lease expiry while claimed
    version: int = 0  # changes with every new schedule_time (marks stale schedule heap items)


_Scheduled = tuple[datetime, int, str]  # (schedule_time, version, task_id)


@dataclass
class _ScheduleCounts:
    """Counts by schedule_time, kept as tasks come, go and are retried (never by a scan).

    ``ahead`` counts the tasks scheduled after ``horizon`` (the latest time asked about);
    moving the horizon pops what fell due in between. Both heaps drop stale items lazily
    and are rebuilt when stale items outnumber live ones.
    """

    horizon: datetime
    ahead: int = 0
    ahead_heap: list[_Scheduled] = field(default_factory=list)
    oldest_heap: list[_Scheduled] = field(default_factory=list)

    def added(self, item: _Scheduled) -> None:
        heapq.heappush(self.oldest_heap, item)
        if item[0] > self.horizon:
            heapq.heappush(self.ahead_heap, item)
            self.ahead += 1

    def removed(self, schedule_time: datetime) -> None:
        if schedule_time > self.horizon:
            self.ahead -= 1

    def advance(self, now: datetime, live: Callable[[_Scheduled], bool]) -> None:
        if now <= self.horizon:
            return
        self.horizon = now
        while self.ahead_heap and self.ahead_heap[0][0] <= now:
            if live(heapq.heappop(self.ahead_heap)):
                self.ahead -= 1

    def oldest(self, live: Callable[[_Scheduled], bool]) -> datetime | None:
        while self.oldest_heap and not live(self.oldest_heap[0]):
            heapq.heappop(self.oldest_heap)
        return self.oldest_heap[0][0] if self.oldest_heap else None

    def compact(self, tasks: int, live: Callable[[_Scheduled], bool]) -> None:
        for heap in (self.oldest_heap, self.ahead_heap):
            if len(heap) > 2 * tasks + 64:
                heap[:] = [item for item in heap if live(item)]
                heapq.heapify(heap)


@dataclass
class _QueueSlot:
    queue: Queue
    counts: _ScheduleCounts
    tasks: dict[str, _Entry] = field(default_factory=dict)  # task_id -> entry, in creation order
    tombstones: dict[str, datetime] = field(default_factory=dict)  # task_id -> reserved until
    # (due, seq, task_id); entries whose due or seq no longer match the task are stale and skipped.
    due_heap: list[tuple[datetime, int, str]] = field(default_factory=list)

    def schedule(self, entry: _Entry) -> None:
        heapq.heappush(self.due_heap, (entry.due, entry.seq, entry.task.name.task_id))

    def scheduled(self, entry: _Entry, version: int) -> None:
        """``entry`` has a new schedule_time (created or retried)."""
        entry.version = version
        self.counts.added((entry.task.schedule_time, version, entry.task.name.task_id))

    def unscheduled(self, entry: _Entry) -> None:
        """``entry``'s schedule_time no longer holds (removed or about to be retried)."""
        self.counts.removed(entry.task.schedule_time)
        entry.version = -1
        self.counts.compact(len(self.tasks), self.live_schedule)

    def live_schedule(self, item: _Scheduled) -> bool:
        entry = self.tasks.get(item[2])
        return entry is not None and entry.version == item[1]

    def task_counts(self, now: datetime) -> base.TaskCounts:
        self.counts.advance(now, self.live_schedule)
        return base.TaskCounts(len(self.tasks), self.counts.ahead, self.counts.oldest(self.live_schedule))

    def _live(self, item: tuple[datetime, int, str]) -> _Entry | None:
        entry = self.tasks.get(item[2])
        return entry if entry is not None and entry.seq == item[1] and entry.due == item[0] else None

    def pop_due(self, now: datetime) -> _Entry | None:
        while self.due_heap and self.due_heap[0][0] <= now:
            entry = self._live(heapq.heappop(self.due_heap))
            if entry is not None:
                return entry
        return None

    def next_due(self) -> datetime | None:
        while self.due_heap and self._live(self.due_heap[0]) is None:
            heapq.heappop(self.due_heap)
        return self.due_heap[0][0] if self.due_heap else None


class MemoryStore(LocalNodes):
    """Keeps everything in dictionaries; every method runs without awaiting, so each is atomic."""

    def __init__(self) -> None:
        super().__init__()
        self._queues: dict[QueueName, _QueueSlot] = {}
        self._queue_tombstones: dict[QueueName, datetime] = {}
        self._seq = itertools.count(1)
        self._history = LocalHistory()
        self._outcomes = LocalOutcomes()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, queue: Queue, now: datetime) -> Queue:
        if queue.name in self._queues:
            raise base.queue_exists()
        self._check_queue_tombstone(queue.name, now)
        self._queues[queue.name] = _QueueSlot(queue, _ScheduleCounts(now))
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

    async def all_queues(self) -> list[Queue]:
        return [slot.queue for slot in self._queues.values()]

    async def update_queue(self, name: QueueName, change: QueueChange, now: datetime) -> Queue:
        slot = self._queues.get(name)
        if slot is None:
            queue = change(None)
            self._check_queue_tombstone(name, now)
            self._queues[name] = _QueueSlot(queue, _ScheduleCounts(now))
            return queue
        slot.queue = change(slot.queue)
        return slot.queue

    async def delete_queue(self, name: QueueName, now: datetime, windows: Windows) -> None:
        if self._queues.pop(name, None) is None:
            raise base.entity_missing()
        self._forget_queue(name)
        self._queue_tombstones[name] = windows.queue_tombstone_until

    async def purge_queue(self, name: QueueName, purge_time: datetime, windows: Windows) -> Queue:
        slot = self._slot(name)
        slot.queue = replace(slot.queue, purge_time=purge_time)
        for entry in list(slot.tasks.values()):
            if entry.task.enqueue_time < purge_time:
                self._remove(slot, entry.task, windows, FinishReason.PURGED, purge_time)
        return slot.queue

    def _remove(
        self,
        slot: _QueueSlot,
        task: Task,
        windows: Windows,
        reason: FinishReason | None,
        now: datetime | None,
    ) -> None:
        slot.unscheduled(slot.tasks.pop(task.name.task_id))
        if task.named:
            slot.tombstones[task.name.task_id] = windows.task_until(slot.queue)
        if reason is not None and now is not None and windows.history_until is not None:
            self._history.keep_finished(task, reason, now, windows.history_until)

    # -- tasks -------------------------------------------------------------------------------

    async def create_task(self, task: Task, now: datetime) -> Task:
        slot = self._slot(task.name.queue)
        task_id = task.name.task_id
        if task_id in slot.tasks or slot.tombstones.get(task_id, now) > now:
            raise base.task_exists()
        slot.tombstones.pop(task_id, None)
        entry = _Entry(next(self._seq), task, task.schedule_time)
        slot.tasks[task_id] = entry
        slot.schedule(entry)
        slot.scheduled(entry, next(self._seq))
        slot.counts.advance(now, slot.live_schedule)  # keeps the heap of tasks ahead short
        return task

    def _find(self, name: TaskName, now: datetime) -> tuple[_QueueSlot, _Entry]:
        slot = self._slot(name.queue)
        entry = slot.tasks.get(name.task_id)
        if entry is not None:
            return slot, entry
        if slot.tombstones.get(name.task_id, now) > now:
            raise base.task_recently_deleted()
        raise base.entity_missing()

    async def get_task(self, name: TaskName, now: datetime) -> Task:
        return self._find(name, now)[1].task

    async def list_tasks(self, queue: QueueName, *, after: int, limit: int) -> TaskPage:
        entries = [e for e in self._slot(queue).tasks.values() if e.seq > after]  # already in seq order
        page = entries[:limit]
        more = len(entries) > limit
        return TaskPage([e.task for e in page], page[-1].seq if more else None)

    async def delete_task(self, name: TaskName, now: datetime, windows: Windows) -> None:
        slot, entry = self._find(name, now)
        self._remove(slot, entry.task, windows, FinishReason.DELETED, now)

    # -- dispatch ----------------------------------------------------------------------------

    async def claim_due_tasks(
        self, queue: QueueName, now: datetime, limit: int, lease_grace: timedelta, fence: Fence | None = None
    ) -> Claim:
        if not self._holds(fence, queue, now):
            return Claim([], None, fenced=True)
        slot = self._queues.get(queue)
        if slot is None:
            return Claim([], None)
        claimed: list[Task] = []
        while len(claimed) < limit:
            entry = slot.pop_due(now)
            if entry is None:
                break
            claimed.append(self._claim(slot, entry, now, lease_grace))
        return Claim(claimed, slot.next_due())

    def _claim(self, slot: _QueueSlot, entry: _Entry, now: datetime, lease_grace: timedelta) -> Task:
        entry.task = claim(entry.task, now)
        entry.due = lease_expiry(entry.task, now, lease_grace)
        slot.schedule(entry)
        return entry.task

    async def claim_task(self, name: TaskName, now: datetime, lease_grace: timedelta) -> Task:
        slot, entry = self._find(name, now)
        return self._claim(slot, entry, now, lease_grace)

    async def finish_attempts(self, results: list[AttemptResult], windows: Windows) -> None:
        for result in results:
            if result.attempt is not None and windows.history_until is not None:
                self._history.keep_attempt(result.attempt, windows.history_until)
            slot = self._queues.get(result.name.queue)
            entry = slot.tasks.get(result.name.task_id) if slot else None
            if slot is None or entry is None or entry.task.dispatch_count != result.dispatch_count:
                continue  # deleted, purged or claimed again since: this result is void
            if result.task is None:
                self._remove(
                    slot, result.finished_as or entry.task, windows, result.finish, result.finish_time
                )
            else:
                slot.unscheduled(entry)
                entry.task = result.task
                entry.due = result.task.schedule_time
                slot.schedule(entry)
                slot.scheduled(entry, next(self._seq))

    async def release_leases(self) -> int:
        self._forget_nodes()
        released = 0
        for slot in self._queues.values():
            for entry in slot.tasks.values():
                if entry.due != entry.task.schedule_time:
                    entry.due = entry.task.schedule_time
                    slot.schedule(entry)
                    released += 1
        return released

    async def due_queues(self, queues: Collection[QueueName], now: datetime) -> set[QueueName]:
        found = set()
        for name in queues:
            slot = self._queues.get(name)
            due = slot.next_due() if slot is not None else None
            if due is not None and due <= now:
                found.add(name)
        return found

    async def leased_tasks(self, queue: QueueName, now: datetime) -> int:
        slot = self._queues.get(queue)
        if slot is None:
            return 0
        return sum(1 for e in slot.tasks.values() if e.due > now and e.due != e.task.schedule_time)

    async def _existing_queues(self, names: Collection[QueueName]) -> set[QueueName]:
        return {name for name in names if name in self._queues}

    # -- insights ----------------------------------------------------------------------------

    async def task_counts(
        self, now: datetime, queue: QueueName | None = None
    ) -> dict[QueueName, base.TaskCounts]:
        if queue is None:
            return {name: slot.task_counts(now) for name, slot in self._queues.items()}
        slot = self._queues.get(queue)
        return {} if slot is None else {queue: slot.task_counts(now)}

    # -- history -----------------------------------------------------------------------------

    async def finished_tasks(
        self,
        queue: QueueName,
        now: datetime,
        *,
        reasons: Collection[FinishReason] | None = None,
        before: int = 0,
        limit: int = 100,
    ) -> HistoryPage:
        return self._history.finished_tasks(queue, now, reasons, before, limit)

    async def task_history(
        self, name: TaskName, now: datetime
    ) -> tuple[list[FinishedTask], list[AttemptRecord]]:
        return self._history.task_history(name, now)

    async def redrive_task(self, letter: TaskName, key: int, task: Task, now: datetime) -> Task:
        base.letter_to_redrive(letter, self._history.task_history(letter, now)[0], key)  # or refuse
        created = await self.create_task(task, now)
        self._history.mark_redriven(letter, key, task.name.task_id, now)
        return created

    async def dead_letter_counts(
        self, now: datetime, queue: QueueName | None = None, *, cap: int = DEAD_LETTER_COUNT_CAP
    ) -> dict[QueueName, int]:
        names = [queue] if queue is not None else list(self._queues)
        counts = self._history.dead_letter_counts(now, [name for name in names if name in self._queues])
        return {name: min(count, cap + 1) for name, count in counts.items()}

    # -- browsing ----------------------------------------------------------------------------

    async def browse_tasks(
        self,
        queue: QueueName,
        now: datetime,
        state: TaskState,
        *,
        search: TaskSearch = base.NO_SEARCH,
        after: BrowseCursor | None = None,
        limit: int = DEFAULT_PAGE,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
    ) -> BrowsePage:
        scan: BrowseScan[Task] = BrowseScan(search, after, limit, scan_limit, lambda task: task)
        # The memory store keeps no order by due time that could be walked from a cursor, so a
        # page costs a pass over the queue (about 0.1 µs a task, 100 ms for 1,000,000): the
        # entries of the state's range after the cursor, then the first of them (enough for a
        # page that matches at once), and if the page reads on, once more every entry it may
        # read, in order. Only lists of the existing entries are built, no object per task.
        ranged = _state_range(self._slot(queue), now, state, after)
        ordered: list[_Entry] | None = None
        while (request := scan.request()) is not None:
            position, count = request
            if position == after:
                found = heapq.nsmallest(count, ranged, key=_ORDER)
            else:
                if ordered is None:
                    ordered = heapq.nsmallest(scan_limit + 1, ranged, key=_ORDER)
                assert position is not None
                start = bisect.bisect_right(
                    ordered, (codec.from_micros(position.key), position.seq), key=_ORDER
                )
                found = ordered[start : start + count]
            scan.take([_browse_row(entry, state) for entry in found])
        assert scan.page is not None
        return scan.page

    async def add_outcomes(self, node_id: str, minutes: list[OutcomeMinute]) -> None:
        self._outcomes.add(node_id, minutes)

    async def outcomes(self, since: datetime, queue: QueueName | None = None) -> list[OutcomeMinute]:
        return self._outcomes.since(since, queue)


_ORDER = operator.attrgetter("due", "seq")


def _state_range(
    slot: _QueueSlot, now: datetime, state: TaskState, after: BrowseCursor | None
) -> list[_Entry]:
    """The entries of ``slot`` in the range ``state`` reads at ``now`` (as the SQL stores do:
    see :mod:`opentasks.storage.browsing`), after ``after``, unordered."""
    entries = slot.tasks.values()
    if state == TaskState.DUE:
        found = [e for e in entries if e.due <= now]
    elif state == TaskState.IN_FLIGHT:
        found = [e for e in entries if e.due > now and e.due != e.task.schedule_time]
    else:
        found = [e for e in entries if e.due > now and e.due == e.task.schedule_time]
    if after is None:
        return found
    due, seq = codec.from_micros(after.key), after.seq
    return [e for e in found if e.due > due or (e.due == due and e.seq > seq)]


def _browse_row(entry: _Entry, state: TaskState) -> BrowseRow[Task]:
    task = entry.task
    wanted = state in (TaskState.DUE, TaskState.IN_FLIGHT) or (state == TaskState.SCHEDULED) == (
        task.dispatch_count == 0
    )
    return codec.to_micros(entry.due), entry.seq, task if wanted else None
