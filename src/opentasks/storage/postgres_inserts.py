"""CreateTask in groups: tasks that arrive while a group is being stored form the next group,
inserted by one statement in one commit (the PostgreSQL counterpart of SQLite's group commit).

Under load one commit, and one round trip, covers dozens of CreateTasks; alone, a CreateTask is
stored at once. Each caller still gets its own outcome: its task, NotFound for a missing queue,
or AlreadyExists for a live or reserved name. Nothing is acknowledged before its commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from opentasks.domain.task import Task
from opentasks.storage import base, codec, rows
from opentasks.storage import postgres_sql as sql
from opentasks.storage.postgres_sql import Conn

MAX_ROWS = 500
MAX_BYTES = 4 << 20  # bodies of one statement (a task body may be up to 1 MB)
MAX_TURNS = 64  # event loop turns a group may wait for more CreateTasks
QUIET_TURNS = 4  # ... ending after this many turns in which none arrived
Runner = Callable[[str, Callable[[Conn], Awaitable[Any]]], Awaitable[Any]]
"""Runs an operation on a pooled connection, turning driver errors into Unavailable."""


@dataclass
class _Create:
    task: Task
    now_us: int
    body: bytes
    future: asyncio.Future[Task]


class TaskInserter:
    """Collects CreateTasks and stores them in groups, one group at a time."""

    def __init__(self, run: Runner) -> None:
        self._run = run
        self._waiting: list[_Create] = []
        self._flusher: asyncio.Task[None] | None = None

    async def insert(self, task: Task, now: datetime) -> Task:
        """Store ``task`` with the next group; returns it once committed."""
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Create(task, codec.to_micros(now), rows.body_of(task), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def drain(self) -> None:
        """Wait until every CreateTask handed in has its outcome."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._waiting:
            await self._gather()
            group = self._take()
            try:
                if await self._store(group):
                    continue
                for create in group:  # a queue was deleted meanwhile: one by one
                    if not await self._store([create]):
                        _settle(create.future, base.queue_missing())
            except Exception as error:  # Unavailable: nothing of the group was stored
                for create in group:
                    _settle(create.future, error)

    async def _gather(self) -> None:
        """Let the event loop run while CreateTasks keep arriving (a busy server's calls are a
        few turns apart), and stop after a few quiet turns: under load a group grows from two
        or three CreateTasks to about twenty, which more than halves the database's CPU per
        task; a lone CreateTask waits only those few turns."""
        quiet = 0
        for _ in range(MAX_TURNS):
            before = len(self._waiting)
            await _next_turn()
            quiet = 0 if len(self._waiting) > before else quiet + 1
            if quiet == QUIET_TURNS or len(self._waiting) >= MAX_ROWS:
                return

    def _take(self) -> list[_Create]:
        taken, size = 0, 0
        for create in self._waiting:
            if taken and (taken == MAX_ROWS or size + len(create.body) > MAX_BYTES):
                break
            taken += 1
            size += len(create.body)
        group, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return group

    async def _store(self, group: list[_Create]) -> bool:
        """Insert ``group`` and settle each future; a name repeated in the group is stored once
        and the repeats answer as a second CreateTask would (AlreadyExists, or NotFound).

        False, with nothing stored or settled, if a queue of the group was deleted while the
        statement ran (a foreign key violation)."""
        distinct, repeats = _distinct(group)
        columns = _columns(distinct)

        async def run(conn: Conn) -> list[asyncpg.Record] | None:
            try:
                return await conn.fetch(sql.CREATE_TASKS, *columns)
            except asyncpg.ForeignKeyViolationError:
                return None

        found: list[asyncpg.Record] | None = await self._run("store the task", run)
        if found is None:
            return False
        missing: set[int] = set()
        for row in found:
            create = distinct[row["n"] - 1]
            if row["pk"] is None:
                missing.add(id(create))
                _settle(create.future, base.queue_missing())
            else:
                _settle(create.future, create.task if row["added"] else base.task_exists())
        for create, original in repeats:
            _settle(create.future, base.queue_missing() if id(original) in missing else base.task_exists())
        return True


async def insert_one(conn: Conn, task: Task, now: datetime) -> Task:
    """Store ``task`` on ``conn`` alone (in the caller's transaction): NotFound for a missing
    queue, AlreadyExists for a live or reserved name, as a group would answer."""
    create = _Create(
        task, codec.to_micros(now), rows.body_of(task), asyncio.get_running_loop().create_future()
    )
    try:
        row = await conn.fetchrow(sql.CREATE_TASKS, *_columns([create]))
    except asyncpg.ForeignKeyViolationError:  # the queue was deleted while the statement ran
        raise base.queue_missing() from None
    if row is None or row["pk"] is None:
        raise base.queue_missing()
    if not row["added"]:
        raise base.task_exists()
    return task


def _distinct(group: list[_Create]) -> tuple[list[_Create], list[tuple[_Create, _Create]]]:
    """The first CreateTask of each name, and every repeat with the first of its name."""
    first: dict[tuple[str, str, str], _Create] = {}
    repeats: list[tuple[_Create, _Create]] = []
    for create in group:
        name = create.task.name
        key = (str(name.queue.parent), name.queue.queue_id, name.task_id)
        if key in first:
            repeats.append((create, first[key]))
        else:
            first[key] = create
    return list(first.values()), repeats


def _columns(creates: list[_Create]) -> tuple[list[Any], ...]:
    """The parameters of CREATE_TASKS: one array per column."""
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
    for create in creates:
        task = create.task
        values = (
            str(task.name.queue.parent),
            task.name.queue.queue_id,
            task.name.task_id,
            task.named,
            codec.to_micros(task.schedule_time),
            codec.to_micros(task.enqueue_time),
            rows.spec_json(task),
            create.body,
            create.now_us,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


def _settle(future: asyncio.Future[Task], outcome: Task | BaseException) -> None:
    if future.done():  # the caller was cancelled; the insert happened all the same
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


async def _next_turn() -> None:
    """Return after the event loop ran every callback that was ready (one turn)."""
    loop = asyncio.get_running_loop()
    turned: asyncio.Future[None] = loop.create_future()
    loop.call_soon(turned.set_result, None)
    await turned
