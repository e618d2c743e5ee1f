"""When a claim of a task expires: its visibility timeout (pure).

An attempt that has not reported back by then is considered lost, and the task falls due again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from opentasks.domain.limits import later
from opentasks.domain.outbound import dispatch_deadline
from opentasks.domain.task import Task


def lease_expiry(task: Task, now: datetime, grace: timedelta) -> datetime:
    """The end of the lease of ``task`` claimed at ``now``: ``now + dispatch deadline + grace``.

    An App Engine task without a deadline counts the app default (10 minutes, see
    :func:`opentasks.domain.outbound.dispatch_deadline`). The result is clamped to
    :data:`opentasks.domain.limits.LATEST_TIME`. Everything it reads is a column of the task's
    row, so a SQL backend computes the same in the claim's statement, in microseconds::

        due_us = MIN(:now_us + COALESCE(deadline_us, 600000000) + :grace_us, :latest_us)
    """
    return later(now, dispatch_deadline(task) + grace)
