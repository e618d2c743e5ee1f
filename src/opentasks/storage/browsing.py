"""The page logic of :meth:`~opentasks.storage.base.Store.browse_tasks`, shared by every backend.

A backend reads a state's rows in order, a bounded number at a time, and hands them to a
:class:`BrowseScan`; the scan decodes the candidates, applies the exact search, counts what was
read against the page's ``scan_limit`` and says where to read next, until the page is complete.
Reads start small (the page's size) and grow fourfold, so a page whose first rows match reads
little more than itself, and a rare search reads at most ``scan_limit`` rows in a few reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from opentasks.domain.browse import BrowseCursor, BrowsePage, TaskSearch, TaskState
from opentasks.domain.task import Task
from opentasks.storage import codec, rows

P = TypeVar("P")
GROWTH = 4
BrowseRow = tuple[int, int, P | None]
"""(key, seq, payload): the payload is None for a row that cannot match (wrong state, or the
backend's pre-filter ruled it out)."""


class BrowseScan(Generic[P]):
    """One page being built: :meth:`request` says where to read and how many rows (one more than
    the page may read, to see whether rows follow), :meth:`take` consumes them, :attr:`page` is
    the answer once :meth:`request` returns None."""

    def __init__(
        self,
        search: TaskSearch,
        after: BrowseCursor | None,
        limit: int,
        scan_limit: int,
        decode: Callable[[P], Task],
    ) -> None:
        if limit < 1 or scan_limit < 1:
            raise ValueError(f"limit and scan_limit must be at least 1 (got {limit}, {scan_limit})")
        self._search = search
        self._position = after
        self._limit = limit
        self._scan_limit = scan_limit
        self._decode = decode
        self._size = limit
        self._scanned = 0
        self._found: list[Task] = []
        self.page: BrowsePage | None = None

    def _room(self) -> int:
        return min(self._size, self._scan_limit - self._scanned)

    def request(self) -> tuple[BrowseCursor | None, int] | None:
        """(after, rows): read up to ``rows`` rows of the state's range after ``after`` (None:
        from its start); None when the page is complete."""
        if self.page is not None:
            return None
        return self._position, self._room() + 1

    def take(self, rows: Sequence[BrowseRow[P]]) -> None:
        """Consume the rows read for the last :meth:`request`, in order."""
        room = self._room()
        for index, (key, seq, payload) in enumerate(rows[:room]):
            self._scanned += 1
            self._position = BrowseCursor(key, seq)
            if payload is None:
                continue
            task = self._decode(payload)
            if not self._search.matches(task):
                continue
            self._found.append(task)
            if len(self._found) == self._limit:
                follows = index + 1 < len(rows)
                self._finish(self._position if follows else None)
                return
        if len(rows) <= room:  # the range ended
            self._finish(None)
        elif self._scanned >= self._scan_limit:
            self._finish(self._position)
        else:
            self._size *= GROWTH

    def _finish(self, cursor: BrowseCursor | None) -> None:
        self.page = BrowsePage(self._found, cursor, self._scanned)


# -- what SQL backends pre-filter with ---------------------------------------------------------

_JSON = msgspec.json.Encoder()


def search_needle(search: TaskSearch) -> str | None:
    """What a SQL backend looks for in a task's stored spec (JSON) to pre-filter ``search``:
    the folded search text as it reads inside a JSON string, when that text is ASCII (None
    otherwise, or when there is no search).

    A spec that holds only ASCII characters folds exactly as SQL's ``lower()`` folds ASCII, so
    for it ``instr(lower(spec), needle) > 0`` is necessary for a match. A spec that holds any
    other character may fold differently (``ß`` folds to ``ss``, the Kelvin sign to ``k``), so
    such rows are always decoded and searched exactly.
    """
    folded = search.folded
    if not folded or not folded.isascii():
        return None
    return _JSON.encode(folded).decode()[1:-1]


# The rows of each state in SQL, as (range condition, candidate condition). Every state reads
# tasks_due in (due_us, seq) order except IN_FLIGHT, which reads the partial index tasks_leased.
# The range's lower bound is the one row value (due_us, seq) > (:key, :seq), which both SQLite
# and PostgreSQL seek to in the index: for the states after now, the cursor is raised to
# (now, LAST_SEQ) rather than adding "due_us > now" (SQLite would then seek to the bound it
# likes better, and walk from now to a deep cursor). For SCHEDULED and RETRYING the range holds
# both (in-flight rows are left out by the range, and there are few of them), and the candidate
# condition tells them apart.
_STATE_SQL: dict[TaskState, tuple[str, str]] = {
    TaskState.DUE: ("due_us <= :now", "1 = 1"),
    TaskState.IN_FLIGHT: ("due_us != schedule_us", "1 = 1"),
    TaskState.SCHEDULED: ("due_us = schedule_us", "dispatch_count = 0"),
    TaskState.RETRYING: ("due_us = schedule_us", "dispatch_count > 0"),
}
LAST_SEQ = 2**63 - 1
START = BrowseCursor(-(2**63), 0)
"""Before every row: where a page without a cursor starts."""


@dataclass(frozen=True)
class Dialect:
    """How a SQL backend spells the pre-filter: ``contains`` whether the ASCII-folded spec holds
    ``:needle``, ``non_ascii`` whether the spec holds any character beyond ASCII; and what it
    adds to the IN_FLIGHT range (``in_flight``) to read it through tasks_leased."""

    contains: str
    non_ascii: str
    in_flight: str = ""


SQLITE = Dialect(
    contains="instr(lower(spec), :needle) > 0", non_ascii="length(CAST(spec AS BLOB)) != length(spec)"
)
# PostgreSQL's planner estimates that ``due_us <> schedule_us`` holds for 99.5 % of the rows (its
# default for comparing two columns), so it would rather walk tasks_due through every task due
# after now (the whole scheduled backlog) than use the small partial index tasks_leased. The
# distinct lease ends after the cursor are therefore read first, from tasks_leased alone (an
# index-only scan, which it does pick), and the rows are then found on tasks_due by those times:
# the first N+1 distinct times after the cursor's hold at least the first N rows after it.
POSTGRESQL = Dialect(
    contains='strpos(lower(spec COLLATE "C"), :needle) > 0',
    non_ascii="octet_length(spec) != char_length(spec)",
    in_flight=(
        " AND due_us = ANY (ARRAY(SELECT DISTINCT due_us FROM tasks WHERE queue_pk = :pk"
        " AND due_us != schedule_us AND due_us >= :key ORDER BY due_us LIMIT :rows + 1))"
    ),
)


ROW_VALUE = "(due_us, seq) > (:key, :seq)"
"""The rows after the cursor, as one row value (PostgreSQL seeks to it in tasks_due)."""
SAME_KEY = "due_us = :key AND seq > :seq"
LATER_KEY = "due_us > :key"
"""The rows after the cursor in two parts: SQLite seeks to a row value by its first column only
(and then walks every row of the cursor's time before its seq), so it reads the rest of the
cursor's time (an equality and a range: one seek) and then the later times."""


def chunk_sql(state: TaskState, search: TaskSearch, dialect: Dialect, after: str = ROW_VALUE) -> str:
    """The statement that reads up to ``:rows`` rows of ``state``'s range at ``:now`` in queue
    ``:pk`` after the cursor (``:key``, ``:seq``) as ``after`` says, in order: (key, seq,
    candidate, schedule_us, spec, progress, body), the last four only for candidates (rows of
    the state that may match).

    The inner query reads the index range and the rows' small columns; only candidates are
    joined back for their progress and body (which SQLite stores after the body, and PostgreSQL
    may keep out of line)."""
    ranged, wanted = _STATE_SQL[state]
    if state == TaskState.IN_FLIGHT:
        ranged += dialect.in_flight
    elif state == TaskState.DUE and after == SAME_KEY:
        ranged = ":key <= :now"  # as a bound on due_us, SQLite would walk it instead of seeking the time
    needle = search_needle(search)
    if not search.text:
        maybe = "1 = 1"
    elif needle is None:
        maybe = dialect.non_ascii
    else:
        maybe = f"({dialect.contains} OR {dialect.non_ascii})"
    return f"""
SELECT s.due_us, s.seq, s.hit, t.schedule_us, t.spec, t.progress, t.body
FROM (
    SELECT seq, due_us, CASE WHEN {wanted} AND {maybe} THEN 1 ELSE 0 END AS hit FROM tasks
    WHERE queue_pk = :pk AND {ranged} AND {after}
    ORDER BY due_us, seq LIMIT :rows
) s LEFT JOIN tasks t ON t.seq = s.seq AND s.hit = 1
ORDER BY s.due_us, s.seq
"""


def chunk_params(
    state: TaskState, pk: int, now_us: int, after: BrowseCursor | None, count: int, *, search: TaskSearch
) -> dict[str, int | str]:
    """The named parameters of :func:`chunk_sql` (``count``: the rows to read)."""
    start = after or START
    if state != TaskState.DUE:
        start = max(start, BrowseCursor(now_us, LAST_SEQ))
    params: dict[str, int | str] = {
        "pk": pk,
        "now": now_us,
        "key": start.key,
        "seq": start.seq,
        "rows": count,
    }
    needle = search_needle(search)
    if needle is not None:
        params["needle"] = needle
    return params


_NAMED = re.compile(r"(?<!:):([a-z_]+)")


def numbered(statement: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """``statement`` with its ``:name`` parameters as ``$1``, ``$2``... (PostgreSQL), and their
    values in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _NAMED.sub(number, statement), [params[name] for name in names]


Payload = tuple[int, str, str | None, bytes]
"""schedule_us, spec, progress, body of a candidate row."""


def browse_rows(found: Sequence[Any]) -> list[BrowseRow[Payload]]:
    """The rows of :func:`chunk_sql` as a :class:`BrowseScan` takes them."""
    return [(row[0], row[1], (row[3], row[4], row[5], row[6]) if row[2] else None) for row in found]


def decode(payload: Payload) -> Task:
    schedule_us, spec, progress, body = payload
    return rows.task_of(spec, progress, body, codec.from_micros(schedule_us))
