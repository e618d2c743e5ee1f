"""Per-queue token bucket (``max_dispatches_per_second`` / ``max_burst_size``)."""

from __future__ import annotations

import math

from opentasks.domain.limits import MAX_WAIT_SECONDS, bounded_wait


class TokenBucket:
    """A bucket of ``capacity`` tokens refilled continuously at ``rate`` tokens per second.

    Each dispatch (first attempt or retry) takes one token. Time is a monotonic reading in
    seconds, passed by the caller, so tests run in virtual time. A new bucket starts full,
    which allows an initial burst of ``capacity``; ``full=False`` starts it empty (a queue
    taken over from another node, whose bucket may just have spent its burst).
    """

    def __init__(self, rate: float, capacity: int, now: float, *, full: bool = True) -> None:
        self.rate = _rate(rate)
        self.capacity = max(capacity, 1)
        self._tokens = float(self.capacity) if full else 0.0
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def available(self, now: float) -> int:
        """Whole tokens that can be taken now."""
        self._refill(now)
        return math.floor(self._tokens + 1e-9)

    def take(self, now: float, count: int = 1) -> None:
        """Take ``count`` tokens; the caller checked :meth:`available` first."""
        self._refill(now)
        self._tokens -= count

    def seconds_until_available(self, now: float) -> float:
        """How long until one token is there (0 if there is one now), but at most
        :data:`MAX_WAIT_SECONDS`: at a tiny rate (1e-300 is a valid setting) the caller simply
        looks again then, and no timer or datetime has to hold 1e300 seconds."""
        self._refill(now)
        missing = 1.0 - self._tokens
        if missing <= 1e-9:
            return 0.0
        if self.rate <= 0:
            return MAX_WAIT_SECONDS
        return bounded_wait(missing / self.rate)

    def reconfigure(self, rate: float, capacity: int, now: float) -> None:
        """Apply new limits at once, keeping the tokens already earned (up to the new capacity)."""
        self._refill(now)
        self.rate = _rate(rate)
        self.capacity = max(capacity, 1)
        self._tokens = min(self._tokens, self.capacity)


def _rate(rate: float) -> float:
    """A rate the arithmetic can use: NaN and negative rates (which validation refuses) earn nothing."""
    return rate if rate > 0 else 0.0
