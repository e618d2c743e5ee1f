"""Service limits that Cloud Tasks enforces and that an operator may change, and the ceilings
of the dispatcher's time arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# -- value ranges of the wire types ------------------------------------------------------------

# ``google.protobuf.Duration`` holds at most 315,576,000,000 s (10,000 years); a longer duration
# could be stored but never sent back to a client.
MAX_DURATION = timedelta(seconds=315_576_000_000)
# The int32 fields of RetryConfig and RateLimits.
MAX_INT32 = 2**31 - 1

# -- arithmetic ceilings -----------------------------------------------------------------------
# The API accepts settings whose exact consequences no datetime can hold (a 10,000-year
# max_backoff, a rate of 1e-300). The dispatcher clamps them here, so that its arithmetic never
# overflows.

# The longest wait before a retry, whatever the retry config says (100 years: far beyond Cloud
# Tasks' 31-day task retention, so no working config is changed by it).
MAX_RETRY_DELAY = timedelta(days=36_525)
# The longest a queue's worker sleeps on a timer before it looks again (a far-off due time or a
# token that takes ages to earn is simply waited for in steps of at most this).
MAX_WAIT_SECONDS = 3600.0
# The latest time the dispatcher computes (``datetime.max``, which a Timestamp still holds).
LATEST_TIME = datetime.max.replace(tzinfo=UTC)


def later(start: datetime, delay: timedelta) -> datetime:
    """``start + delay``, clamped to :data:`LATEST_TIME` instead of overflowing."""
    if delay > LATEST_TIME - start:
        return LATEST_TIME
    return start + delay


def bounded_wait(seconds: float) -> float:
    """A timer's length in seconds, within ``[0, MAX_WAIT_SECONDS]`` (NaN and infinity included)."""
    if not seconds < MAX_WAIT_SECONDS:  # also true for NaN
        return MAX_WAIT_SECONDS
    return max(seconds, 0.0)


@dataclass(frozen=True)
class Limits:
    """Validation limits, defaulting to Cloud Tasks' own.

    Attributes:
        max_dispatches_per_second: the highest ``RateLimits.max_dispatches_per_second`` a queue
            may ask for (Cloud Tasks: 500; self-hosters may lift it).
        max_concurrent_dispatches: the highest ``RateLimits.max_concurrent_dispatches``.
        max_schedule_ahead: how far in the future ``schedule_time`` may lie (720 h).
        max_task_size_bytes: the largest stored task (1 MiB - 7, as probed on Cloud Tasks).
        require_https_for_tokens: if True, tasks carrying an OIDC/OAuth token must use
            ``https://`` everywhere, as on Cloud Tasks. If False (the default), plain ``http://``
            is also accepted for loopback, private-network and single-label hosts.
    """

    max_dispatches_per_second: float = 500.0
    max_concurrent_dispatches: int = 5000
    max_schedule_ahead: timedelta = timedelta(hours=720)
    max_task_size_bytes: int = 1_048_569
    require_https_for_tokens: bool = False
