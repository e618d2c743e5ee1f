"""Rate-limited logging for failures a caller can trigger at will.

An unexpected exception or a malformed request is logged at most once per ``interval_s``:
the first of a burst in full, the rest counted and reported with the next line that is
written, so a client sending garbage in a loop cannot flood the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

DEFAULT_INTERVAL_S = 60.0


class ThrottledLog:
    """Writes to ``logger`` at most once per ``interval_s`` seconds of ``monotonic`` time."""

    def __init__(
        self,
        logger: logging.Logger,
        monotonic: Callable[[], float],
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._logger = logger
        self._monotonic = monotonic
        self._interval_s = interval_s
        self._last: float | None = None
        self._suppressed = 0

    @property
    def suppressed(self) -> int:
        """Events counted since the last line written."""
        return self._suppressed

    def log(self, level: int, message: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``message % args`` unless a line was written less than ``interval_s`` ago, in which
        case only count it. True when the line was written."""
        now = self._monotonic()
        if self._last is not None and now - self._last < self._interval_s:
            self._suppressed += 1
            return False
        if self._suppressed:
            message += " (%d similar events were not logged in the last %.0f s)"
            args = (*args, self._suppressed, now - self._last if self._last is not None else 0.0)
        self._last = now
        self._suppressed = 0
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True

    def exception(self, message: str, *args: Any) -> bool:
        """Log an ERROR with the current exception's traceback (rate-limited)."""
        return self.log(logging.ERROR, message, *args, exc_info=True)

    def warning(self, message: str, *args: Any) -> bool:
        return self.log(logging.WARNING, message, *args)
