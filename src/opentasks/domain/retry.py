"""Retry policy: Cloud Tasks' backoff formula and stop rule (spec section 4.4)."""

from __future__ import annotations

from datetime import datetime, timedelta

from opentasks.domain.limits import MAX_RETRY_DELAY
from opentasks.domain.queue import RetryConfig

_MICROSECOND = timedelta(microseconds=1)


def backoff_delay(config: RetryConfig, retry_number: int) -> timedelta:
    """The wait before retry number ``retry_number`` (1 = after the first failed attempt).

    ``min_backoff`` doubles for the first ``max_doublings`` retries, then grows linearly by
    ``2**max_doublings * min_backoff`` per retry, and never exceeds ``max_backoff``:

        delay(k) = min(max_backoff, min_backoff * 2**min(k-1, D) * max(1, k - D))

    With 10 s / 300 s / 3 doublings: 10, 20, 40, 80, 160, 240, 300, 300, ...

    Computed in whole microseconds, so any accepted setting (``max_doublings`` 2**31-1, a
    10,000-year ``max_backoff``, a huge retry count) gives a result, and never more than
    :data:`MAX_RETRY_DELAY` (100 years).
    """
    k = max(retry_number, 1)
    doublings = max(config.max_doublings, 0)
    minimum = _micros(config.min_backoff)
    maximum = _micros(config.max_backoff) if config.max_backoff is not None else minimum
    ceiling = min(maximum, _micros(MAX_RETRY_DELAY))
    if minimum <= 0 or ceiling <= 0:
        return timedelta(0)
    # With minimum >= 1 us, 2**63 us already exceeds every ceiling: a larger exponent only
    # costs memory.
    exponent = min(k - 1, doublings, 63)
    delay = minimum * 2**exponent * max(1, k - doublings)
    return timedelta(microseconds=min(delay, ceiling))


def _micros(value: timedelta | None) -> int:
    return 0 if value is None else value // _MICROSECOND


def should_stop_retrying(
    config: RetryConfig, attempts: int, first_dispatch: datetime | None, now: datetime
) -> bool:
    """Whether a task that just failed its ``attempts``-th attempt is out of retries.

    With both ``max_attempts`` (-1 = unlimited) and ``max_retry_duration`` (0 = unlimited) set,
    retrying stops only when both limits are reached; with one set, when that one is.
    """
    unlimited_attempts = config.max_attempts == -1
    duration = config.max_retry_duration or timedelta(0)
    count_hit = not unlimited_attempts and attempts >= config.max_attempts
    duration_hit = duration > timedelta(0) and first_dispatch is not None and now - first_dispatch >= duration
    if duration <= timedelta(0):
        return count_hit
    if unlimited_attempts:
        return duration_hit
    return count_hit and duration_hit
