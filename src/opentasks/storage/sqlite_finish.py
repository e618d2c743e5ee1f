"""Attempt results in SQLite, applied on the commit thread in a few statements per batch.

A batch of results keeps its attempts and finished tasks (when history is kept), reserves the
names of finished named tasks, deletes finished tasks and reschedules retried ones. Run on the
event loop, those statements cost the loop the SQLite work of every row: with history, most of
what a fast handler's task costs the server. Run on the commit thread row by row, each row
would wait for the loop to hand the GIL back (up to the switch interval). So each statement here
takes all the batch's rows as one JSON array (``json_each``) and runs in one step: the commit
thread does the batch's SQLite work with the GIL released, beside the loop, and takes the GIL
back once per statement. Bodies of answers travel as one blob, cut by offset (``substr``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import msgspec

from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue
from opentasks.storage import codec, rows
from opentasks.storage.base import AttemptResult, Windows

_ENCODE = msgspec.json.Encoder().encode

# The rows of each statement are JSON arrays; j.value->>N is the N-th value of one.
_KEEP_ATTEMPTS = (
    "INSERT INTO attempts (qkey, parent, queue_id, task_id, created_us, attempt, dispatch_us,"
    " duration_us, http_status, failure, detail, headers, body, expire_us)"
    " SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5,"
    " j.value->>6, j.value->>7, j.value->>8, j.value->>9, j.value->>10, j.value->>11,"
    " COALESCE(substr(?2, j.value->>12, j.value->>13), x''), ?3 FROM json_each(?1) j"
)
# A finished task is copied from its row (before the row goes), with why, when and until when
# it is kept, and the progress to keep (NULL: the row's own).
_KEEP_FINISHED = (
    "INSERT INTO finished_tasks (qkey, parent, queue_id, task_id, reason, finish_us, expire_us,"
    " schedule_us, spec, progress, body)"
    " SELECT j.value->>0, j.value->>1, j.value->>2, t.task_id, j.value->>3, j.value->>4, ?2,"
    " t.schedule_us, t.spec, COALESCE(j.value->>5, t.progress), t.body"
    " FROM json_each(?1) j JOIN tasks t"
    " ON t.queue_pk = j.value->>6 AND t.task_id = j.value->>7 AND t.dispatch_count = j.value->>8"
)
# Every result is fenced on (queue, task ID, dispatch count of its claim): a result of an older
# claim finds no row.
_FENCE = "t.queue_pk = j.value->>{0} AND t.task_id = j.value->>{1} AND t.dispatch_count = j.value->>{2}"
_RESERVE_NAMES = (
    "INSERT OR REPLACE INTO task_tombstones SELECT t.queue_pk, t.task_id, j.value->>0"
    f" FROM json_each(?) j JOIN tasks t ON {_FENCE.format(1, 2, 3)} WHERE t.named"
)
_DELETE_DONE = (
    "DELETE FROM tasks WHERE seq IN"
    f" (SELECT t.seq FROM json_each(?) j JOIN tasks t ON {_FENCE.format(0, 1, 2)})"
)
_RESCHEDULE = (
    "UPDATE tasks AS t SET schedule_us = j.value->>0, due_us = j.value->>0, progress = j.value->>1"
    f" FROM json_each(?) j WHERE {_FENCE.format(2, 3, 4)}"
)


@dataclass(frozen=True)
class FinishStatements:
    """What applying one batch of results takes: each list holds one statement's rows."""

    attempts: list[tuple[Any, ...]]
    bodies: bytes
    finished: list[tuple[Any, ...]]
    keep_until_us: int | None
    named: list[tuple[Any, ...]]
    done: list[tuple[Any, ...]]
    retried: list[tuple[Any, ...]]

    def __call__(self, conn: sqlite3.Connection) -> None:
        """Run the statements on ``conn`` (in the caller's transaction), history first: a
        finished task is copied before its row is deleted."""
        if self.attempts:
            conn.execute(_KEEP_ATTEMPTS, (_json(self.attempts), self.bodies, self.keep_until_us))
        if self.finished:
            conn.execute(_KEEP_FINISHED, (_json(self.finished), self.keep_until_us))
        if self.named:
            conn.execute(_RESERVE_NAMES, (_json(self.named),))
        if self.done:
            conn.execute(_DELETE_DONE, (_json(self.done),))
        if self.retried:
            conn.execute(_RESCHEDULE, (_json(self.retried),))


def finish_statements(
    results: list[AttemptResult],
    queues: dict[QueueName, tuple[int, Queue] | None],
    history_keys: dict[QueueName, int],
    windows: Windows,
) -> FinishStatements:
    """The statements that apply ``results``, given each queue's row (None: the queue is gone,
    and its tasks with it) and, when history is kept, each queue's history key."""
    keep = windows.history_until is not None
    attempts: list[tuple[Any, ...]] = []
    bodies: list[bytes] = []
    offset = 1
    finished: list[tuple[Any, ...]] = []
    named: list[tuple[Any, ...]] = []
    done: list[tuple[Any, ...]] = []
    retried: list[tuple[Any, ...]] = []
    for result in results:
        queue = result.name.queue
        if keep and result.attempt is not None:
            *values, body = rows.attempt_values(result.attempt)
            attempts.append((history_keys[queue], *values, offset, len(body)))
            bodies.append(body)
            offset += len(body)
        found = queues[queue]
        if found is None:
            continue
        fence = (found[0], result.name.task_id, result.dispatch_count)
        if result.task is not None:
            schedule = codec.to_micros(result.task.schedule_time)
            retried.append((schedule, rows.progress_json(result.task), *fence))
            continue
        done.append(fence)
        if result.named:
            named.append((codec.to_micros(windows.task_until(found[1])), *fence))
        if keep and result.finish is not None and result.finish_time is not None:
            progress = None if result.finished_as is None else rows.progress_json(result.finished_as)
            where = (history_keys[queue], str(queue.parent), queue.queue_id)
            finished.append(
                (*where, result.finish.value, codec.to_micros(result.finish_time), progress, *fence)
            )
    until = None if windows.history_until is None else codec.to_micros(windows.history_until)
    return FinishStatements(attempts, b"".join(bodies), finished, until, named, done, retried)


def _json(values: list[tuple[Any, ...]]) -> str:
    return _ENCODE(values).decode()
