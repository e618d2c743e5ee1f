"""The page logic of :meth:`~opentasks.storage.base.Store.browse_tasks`, shared by every backend.

A backend reads a state's rows in order, a bounded number at a time, and hands them to a
:class:`BrowseScan`; the scan decodes the candidates, applies the exact search, counts what was
read against the page's ``scan_limit`` and says where to read next, until the page is complete.
Reads start small (the page's size) and grow fourfold, so a page whose first rows match reads
little more than itself, and a rare search reads at most ``scan_limit`` rows in a few reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import msgspec

from opentasks.domain.browse import BrowseCursor, BrowsePage, TaskSearch, TaskState
from opentasks.domain.task import Task

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
# ``:now`` stands for the time of the page. For SCHEDULED and RETRYING, the range holds both
# (a few in-flight rows are excluded by the range), and the candidate test tells them apart.
STATE_SQL: dict[TaskState, tuple[str, str | None]] = {
    TaskState.DUE: ("due_us <= :now", None),
    TaskState.IN_FLIGHT: ("due_us != schedule_us AND due_us > :now", None),
    TaskState.SCHEDULED: ("due_us > :now AND due_us = schedule_us", "dispatch_count = 0"),
    TaskState.RETRYING: ("due_us > :now AND due_us = schedule_us", "dispatch_count > 0"),
}
