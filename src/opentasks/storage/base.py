"""The storage contract every backend implements, and the errors all backends raise alike."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

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
from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.queue import Queue, QueueState
from opentasks.domain.task import Task
from opentasks.errors import AlreadyExists, FailedPrecondition, NotFound


class StoreUnusable(RuntimeError):
    """The database cannot be used as it is (unreachable, corrupt, another program's, or of a
    newer schema); the one-line message says why and what to do."""


NO_SEARCH = TaskSearch()
"""The empty search: every task matches."""

QueueChange = Callable[[Queue | None], Queue]
"""Computes a queue's new value from its current one (None when it does not exist)."""


@dataclass(frozen=True)
class Claim:
    """Tasks just claimed for dispatch, and when the queue's next task falls due."""

    tasks: list[Task]
    next_due: datetime | None
    fenced: bool = False
    """The claim carried a :class:`Fence` that no longer holds: nothing was claimed."""


@dataclass(frozen=True)
class Fence:
    """Proof that a node dispatches a queue: the node's ID and the epoch of its ownership.

    The epoch grows each time the queue passes to another node, so a claim made under an old
    fence (by a node that lost the queue and does not know it yet) is refused."""

    node_id: str
    epoch: int


@dataclass(frozen=True)
class NodeInfo:
    """A server sharing the store: when it started, its last heartbeat, until when it counts
    as alive, and how many queues it holds."""

    node_id: str
    address: str
    started: datetime
    heartbeat: datetime
    expires: datetime
    queues: int


FORGET_NODES_AFTER = timedelta(hours=1)
"""A node gone this long is dropped from the list of nodes."""

SignalListener = Callable[[list[str]], None]
"""Receives messages that any node published with :meth:`Store.notify` (its own included)."""


@dataclass(frozen=True)
class AttemptResult:
    """What became of a claimed task.

    ``dispatch_count`` is the claim's own count and fences the write: if the task has been
    claimed again since (RunTask, an expired lease), or deleted, the result is dropped.
    ``task`` is the task's new state, or None when it is finished (deleted and, if named,
    tombstoned). ``named`` says whether its ID was chosen by the caller (only those leave a
    tombstone; knowing it spares the store a lookup).
    """

    name: TaskName
    dispatch_count: int
    task: Task | None
    named: bool = True
    attempt: AttemptRecord | None = None  # kept while ``Windows.history_until`` says so
    finish: FinishReason | None = None  # why a finished task (``task`` None) finished
    finish_time: datetime | None = None
    finished_as: Task | None = None  # the finished task with its last attempt, as history keeps it


@dataclass(frozen=True)
class TaskCounts:
    """A queue's tasks at one moment, answered from indexes alone (no task row is read).

    ``tasks`` counts every task (claimed ones too), ``scheduled`` those whose schedule_time is
    after ``now`` (so ``tasks - scheduled`` have fallen due), and ``oldest`` is the earliest
    schedule_time of any task (None when the queue is empty).
    """

    tasks: int = 0
    scheduled: int = 0
    oldest: datetime | None = None


@dataclass(frozen=True)
class TaskPage:
    """One page of ListTasks; ``next_cursor`` is None on the last page."""

    tasks: list[Task]
    next_cursor: int | None


@dataclass(frozen=True)
class Windows:
    """Until when deleted names stay reserved. Task names of queues from a queue.yaml use
    ``queue_yaml_task_tombstone_until`` (stores pick it with :meth:`task_until`)."""

    task_tombstone_until: datetime
    queue_tombstone_until: datetime
    queue_yaml_task_tombstone_until: datetime | None = None
    history_until: datetime | None = None  # until when finished tasks and attempts are kept; None: not kept
    now: datetime | None = None  # when these windows were reckoned (history past its time goes then)

    def task_until(self, queue: Queue) -> datetime:
        """Until when a finished or deleted task name of ``queue`` stays reserved."""
        if queue.from_queue_yaml and self.queue_yaml_task_tombstone_until is not None:
            return self.queue_yaml_task_tombstone_until
        return self.task_tombstone_until


class Store(Protocol):
    """Durable state of queues and tasks.

    Every method is one atomic operation; ``now`` always comes from the caller's clock.
    Backends raise only :mod:`opentasks.errors` exceptions for expected outcomes.
    """

    async def open(self) -> None:
        """Connect, migrate the schema, start background workers."""
        ...

    async def close(self) -> None:
        """Flush pending writes and release every resource."""
        ...

    async def create_queue(self, queue: Queue, now: datetime) -> Queue:
        """Insert a new queue; AlreadyExists if it exists, FailedPrecondition if deleted too recently."""
        ...

    async def get_queue(self, name: QueueName) -> Queue:
        """The queue, or NotFound."""
        ...

    async def list_queues(
        self, parent: LocationName, *, state: QueueState | None, after: str, limit: int
    ) -> list[Queue]:
        """Queues of ``parent`` with queue ID > ``after`` in ID order, at most ``limit``."""
        ...

    async def list_locations(self, project: str) -> list[str]:
        """IDs of the locations of ``project`` that hold at least one queue, sorted."""
        ...

    async def update_queue(self, name: QueueName, change: QueueChange, now: datetime) -> Queue:
        """Atomically replace a queue by ``change(current)``; creates it when missing (upsert).

        FailedPrecondition if the name was deleted too recently and the queue does not exist.
        """
        ...

    async def delete_queue(self, name: QueueName, now: datetime, windows: Windows) -> None:
        """Delete a queue and all its tasks, reserving its name; NotFound if missing."""
        ...

    async def purge_queue(self, name: QueueName, purge_time: datetime, windows: Windows) -> Queue:
        """Set ``purge_time`` and delete every task accepted before it (names stay reserved)."""
        ...

    async def create_task(self, task: Task, now: datetime) -> Task:
        """Insert a task. NotFound if its queue is missing; AlreadyExists if the name is live or reserved."""
        ...

    async def get_task(self, name: TaskName, now: datetime) -> Task:
        """The task; NotFound (with the "existed recently" message for reserved names)."""
        ...

    async def list_tasks(self, queue: QueueName, *, after: int, limit: int) -> TaskPage:
        """Tasks of ``queue`` in creation order after cursor ``after`` (0 = from the start)."""
        ...

    async def delete_task(self, name: TaskName, now: datetime, windows: Windows) -> None:
        """Delete a task and reserve its name if the caller chose it; NotFound if missing."""
        ...

    # -- dispatch ------------------------------------------------------------------------------

    async def all_queues(self) -> list[Queue]:
        """Every queue of every project and location."""
        ...

    async def claim_due_tasks(
        self, queue: QueueName, now: datetime, limit: int, lease_grace: timedelta, fence: Fence | None = None
    ) -> Claim:
        """Claim up to ``limit`` tasks due at ``now`` in (schedule_time, creation) order.

        With a ``fence``, nothing is claimed (``Claim.fenced``) unless its node still holds the
        queue at that epoch with a lease running past ``now`` (see :meth:`own_queues`).

        Each claimed task counts the attempt (see :func:`opentasks.domain.attempt.claim`) and
        is hidden from further claims until its lease ends at
        :func:`opentasks.domain.lease.lease_expiry` ``(task, now, lease_grace)``: a rule of the
        task's row, which a SQL backend evaluates in the claim's statement. Returns the claimed
        tasks and the queue's next due time (None if the queue is empty). When ``limit`` tasks
        were claimed, more may be due and a backend may answer ``now`` without looking.
        """
        ...

    async def claim_task(self, name: TaskName, now: datetime, lease_grace: timedelta) -> Task:
        """Claim one task whatever its schedule or lease (RunTask), leased as by
        :meth:`claim_due_tasks`; NotFound if it does not exist."""
        ...

    async def finish_attempts(self, results: list[AttemptResult], windows: Windows) -> None:
        """Record the outcomes of claimed attempts (see :class:`AttemptResult`) in one write."""
        ...

    async def release_leases(self) -> int:
        """Make every claimed task due again at its schedule time; returns how many.

        Only a store that no other process can open does so (after a restart of the only
        server, attempts in flight at the crash are dispatched again at once). A shared store
        releases nothing and answers 0: other nodes may be sending those tasks right now, and
        their leases end by themselves.
        """
        ...

    async def due_queues(self, queues: Collection[QueueName], now: datetime) -> set[QueueName]:
        """Those of ``queues`` that hold a task due at ``now`` (scheduled, retried, or whose
        lease ended): one indexed lookup per queue, no task row read."""
        ...

    async def leased_tasks(self, queue: QueueName, now: datetime) -> int:
        """How many tasks of ``queue`` are claimed with a lease running past ``now`` (attempts
        that may be in flight, on any node)."""
        ...

    # -- nodes ---------------------------------------------------------------------------------

    async def heartbeat(
        self, node_id: str, incarnation: str, address: str, now: datetime, ttl: timedelta
    ) -> None:
        """Record that ``node_id`` is alive until ``now + ttl`` (registering it if new).

        ``incarnation`` names the running process. :func:`node_id_in_use` (FailedPrecondition)
        if another incarnation of ``node_id`` is alive at ``now``. A new incarnation of a node
        whose last one is gone takes its row and releases the queues the old one held, so that
        taking them again counts their epochs up."""
        ...

    async def leave(self, node_id: str, incarnation: str) -> None:
        """Forget ``node_id`` and release every queue it holds, for others to take at once;
        nothing if the node's row belongs to another incarnation (or to none)."""
        ...

    async def nodes(self) -> list[NodeInfo]:
        """Every node known (alive or not: compare ``expires`` with now), by node ID."""
        ...

    async def own_queues(
        self, node_id: str, incarnation: str, wanted: Collection[QueueName], now: datetime, ttl: timedelta
    ) -> dict[QueueName, Fence]:
        """Renew until ``now + ttl`` the lease of every queue ``node_id`` holds, and take each
        queue of ``wanted`` that exists and that nobody holds (never held, released, or its
        lease ended by ``now``); a queue that changes hands gets the next epoch. Returns every
        queue the node holds afterwards, with its fence. Nothing is renewed or taken, and the
        answer is empty, unless the node's row (see :meth:`heartbeat`) is ``incarnation``'s:
        a process whose node ID another process has taken over holds nothing."""
        ...

    async def release_queues(self, node_id: str, queues: Collection[QueueName]) -> None:
        """End ``node_id``'s leases of ``queues`` now, so that another node may take them."""
        ...

    async def notify(self, messages: list[str]) -> None:
        """Publish ``messages`` to every subscribed node (best effort: a node that misses them
        is told by its ``on_gap`` callback)."""
        ...

    async def subscribe(self, listener: SignalListener, on_gap: Callable[[], None]) -> None:
        """Deliver published messages to ``listener``; call ``on_gap`` whenever some may have
        been missed (the connection that receives them was lost), so the node looks for work
        itself."""
        ...

    async def page_token_key(self) -> bytes:
        """A secret of at least 32 bytes that every server opening this store shares (page
        tokens signed by one node are read by the others); random per process for a store only
        one process opens."""
        ...

    # -- insights ------------------------------------------------------------------------------

    async def task_counts(self, now: datetime, queue: QueueName | None = None) -> dict[QueueName, TaskCounts]:
        """The :class:`TaskCounts` of every queue (empty queues too), or of ``queue`` alone
        (an empty answer if it does not exist).

        Reads no task rows: the tasks are counted on an index, so the cost grows with the number
        of queues and of tasks (about 70 ms for 1,000 queues holding 1,000,000 tasks in SQLite),
        never with their size.
        """
        ...

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
        """Tasks kept after they left ``queue`` (those whose keep time is after ``now``), the
        most recent first, with a reason in ``reasons`` (all if None), below the cursor
        ``before`` (0: from the most recent). Kept tasks outlive their queue.

        A filter by reason lists the dead letters among failed tasks: those already redriven
        are listed only when ``reasons`` is None."""
        ...

    async def task_history(
        self, name: TaskName, now: datetime
    ) -> tuple[list[FinishedTask], list[AttemptRecord]]:
        """Everything kept of tasks named ``name``: their ends and their attempts, oldest first."""
        ...

    async def redrive_task(self, letter: TaskName, key: int, task: Task, now: datetime) -> Task:
        """Create ``task`` (in the queue of ``letter``, as :meth:`create_task` does) from the
        kept end ``key`` of ``letter`` (its :attr:`FinishedTask.key`) and mark that end
        redriven as ``task`` at ``now``, both or neither. NotFound unless that end is kept
        past ``now`` and failed for good; FailedPrecondition when it was redriven already
        (naming the task it became)."""
        ...

    async def dead_letter_counts(
        self, now: datetime, queue: QueueName | None = None, *, cap: int = DEAD_LETTER_COUNT_CAP
    ) -> dict[QueueName, int]:
        """How many dead letters (kept tasks that failed for good and were not redriven, kept
        past ``now``) each existing queue has, of those that have any (of ``queue`` alone if
        given). Exact up to ``cap``; a queue with more is given as ``cap + 1``, so that a count
        reads at most about ``cap`` entries of an index of the dead letters (never the succeeded
        ones), however many a queue has."""
        ...

    # -- browsing (the dashboard) --------------------------------------------------------------

    async def browse_tasks(
        self,
        queue: QueueName,
        now: datetime,
        state: TaskState,
        *,
        search: TaskSearch = NO_SEARCH,
        after: BrowseCursor | None = None,
        limit: int = DEFAULT_PAGE,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
    ) -> BrowsePage:
        """Up to ``limit`` tasks of ``queue`` in ``state`` at ``now`` matching ``search``, after
        the cursor ``after``, reading at most ``scan_limit`` rows (see :class:`BrowsePage`).
        Every page costs about the same however long the queue is: no offset, no count.

        The states are the dispatcher's view of a task: IN_FLIGHT while its lease runs past
        ``now``; DUE once it may be taken (its schedule time has come, or its lease ended,
        even a lease RunTask took before the schedule time); SCHEDULED and RETRYING while its
        schedule time is ahead and it is not leased, by whether it was attempted before. All
        states sort by the time the dispatcher may take the task next (for IN_FLIGHT the
        lease's end, else the schedule time, in microseconds: the cursor's ``key``), then by
        creation (the cursor's ``seq``). A page ends at its ``limit``-th task (with a cursor
        if any row follows it), or after ``scan_limit`` rows of the state's range were read
        (the cursor then points at the last row read), or at the end of the range (no
        cursor). Tasks come as :meth:`get_task` returns them (with their bodies). The answer
        is exactly the tasks for which ``search.matches`` holds; a backend may narrow the rows
        it decodes with its own cheaper test as long as that never drops a match.

        ValueError if ``limit`` or ``scan_limit`` is below 1; NotFound if the queue is missing.
        """
        ...

    async def add_outcomes(self, node_id: str, minutes: list[OutcomeMinute]) -> None:
        """Add what node ``node_id`` saw end (summed into rows it wrote before for the same
        queue and minute; minutes are truncated to the minute). Rows of any node whose minute
        started more than an hour before the latest minute of ``minutes`` are dropped."""
        ...

    async def outcomes(self, since: datetime, queue: QueueName | None = None) -> list[OutcomeMinute]:
        """Attempts that ended in the minutes starting at or after ``since``, per queue and
        minute, summed over every node: oldest minute first, then by queue name."""
        ...


QUEUE_MISSING = (
    "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize."
)
ENTITY_MISSING = "Requested entity was not found."
TASK_RECENTLY_DELETED = (
    "The task no longer exists, though a task with this name existed recently. "
    "The task either successfully completed or was deleted."
)


def node_id_in_use(node_id: str, heartbeat: datetime) -> FailedPrecondition:
    return FailedPrecondition(
        f"--node-id {node_id} is in use by another running server (last heartbeat "
        f"{heartbeat:%Y-%m-%dT%H:%M:%S}Z); give each server its own --node-id"
    )


def queue_missing() -> NotFound:
    return NotFound(QUEUE_MISSING)


def entity_missing() -> NotFound:
    return NotFound(ENTITY_MISSING)


def task_recently_deleted() -> NotFound:
    return NotFound(TASK_RECENTLY_DELETED)


def queue_exists() -> AlreadyExists:
    return AlreadyExists("Queue already exists")


def task_exists() -> AlreadyExists:
    return AlreadyExists("Requested entity already exists")


def queue_recently_deleted() -> FailedPrecondition:
    return FailedPrecondition(
        "The queue cannot be created because a queue with this name existed too recently."
    )


def no_dead_letter(letter: TaskName) -> NotFound:
    return NotFound(
        f"Task {letter.task_id} of {letter.queue} is not a kept dead letter (a task that failed for good)."
    )


def already_redriven(letter: TaskName, redriven_as: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"Dead letter {letter.task_id} of {letter.queue} was already redriven as task {redriven_as}."
    )


def letter_to_redrive(letter: TaskName, ends: list[FinishedTask], key: int | None = None) -> int:
    """Where in ``letter``'s kept ``ends`` (oldest first) the end to redrive is: the failed one
    whose key is ``key`` or, without a key, the latest failed one not redriven yet. NotFound
    when there is no such failed end, FailedPrecondition when it was redriven already."""
    failed = [at for at, end in enumerate(ends) if end.reason.failed and key in (None, end.key)]
    if not failed:
        raise no_dead_letter(letter)
    waiting = [at for at in failed if ends[at].redriven_as is None]
    if not waiting:
        raise already_redriven(letter, ends[failed[-1]].redriven_as or "")
    return waiting[-1]
