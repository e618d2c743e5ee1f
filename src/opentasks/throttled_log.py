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

    def admit(self) -> int | None:
        """Whether a line may be written now: the number of events counted since the last one
        (to report with it), or None when this event is only counted."""
        now = self._monotonic()
        if self._last is not None and now - self._last < self._interval_s:
            self._suppressed += 1
            return None
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        return suppressed

    def log(self, level: int, message: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``message % args`` unless a line was written less than ``interval_s`` ago, in which
        case only count it. True when the line was written."""
        suppressed = self.admit()
        if suppressed is None:
            return False
        if suppressed:
            message += " (%d similar events were not logged since the previous line)"
            args = (*args, suppressed)
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True

    def exception(self, message: str, *args: Any) -> bool:
        """Log an ERROR with the current exception's traceback (rate-limited)."""
        return self.log(logging.ERROR, message, *args, exc_info=True)

    def warning(self, message: str, *args: Any) -> bool:
        return self.log(logging.WARNING, message, *args)

    def error(self, message: str, *args: Any) -> bool:
        return self.log(logging.ERROR, message, *args)
