"""Service limits that Cloud Tasks enforces and that an operator may change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


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
