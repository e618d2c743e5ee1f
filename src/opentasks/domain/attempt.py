"""Dispatch attempts: the task's state when claimed and after an attempt, the status an
attempt records, and the headers Cloud Tasks adds to the request (spec sections 4 and 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from msgspec.structs import replace

from opentasks.domain.limits import MAX_RETRY_DELAY, later
from opentasks.domain.queue import RetryConfig
from opentasks.domain.retry import backoff_delay, should_stop_retrying
from opentasks.domain.task import Attempt, AttemptFailure, AttemptOutcome, ResponseStatus, Task

# google.rpc.Code of an HTTP status, for Attempt.response_status.
_RPC_CODE_OF_HTTP = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 499: 1, 501: 12, 503: 14, 504: 4}
_DEADLINE_EXCEEDED = 4
_UNAVAILABLE = 14
_UNKNOWN = 2
_INTERNAL = 13
_FAILED_PRECONDITION = 9


def response_status(outcome: AttemptOutcome) -> ResponseStatus:
    """What ``Attempt.response_status`` records for an outcome."""
    if outcome.failure == AttemptFailure.TIMEOUT:
        return ResponseStatus(_DEADLINE_EXCEEDED, "The handler did not answer within the dispatch deadline.")
    if outcome.failure == AttemptFailure.UNREACHABLE:
        return ResponseStatus(_UNAVAILABLE, f"The handler could not be reached: {outcome.detail}")
    if outcome.failure == AttemptFailure.REFUSED:
        return ResponseStatus(_FAILED_PRECONDITION, outcome.detail)
    status = outcome.http_status
    if 200 <= status < 300:
        return ResponseStatus(0, "")
    code = _RPC_CODE_OF_HTTP.get(status, _INTERNAL if status >= 500 else _UNKNOWN)
    return ResponseStatus(code, f"HTTP status code {status}")


def claim(task: Task, now: datetime) -> Task:
    """The task as it is while an attempt dispatched at ``now`` is in flight."""
    first = task.first_attempt or Attempt(dispatch_time=now)
    return replace(
        task,
        dispatch_count=task.dispatch_count + 1,
        first_attempt=first,
        last_attempt=Attempt(schedule_time=task.schedule_time, dispatch_time=now),
    )


def after_attempt(
    claimed: Task,
    outcome: AttemptOutcome,
    now: datetime,
    queue_retry: RetryConfig,
    *,
    retry_from: datetime | None = None,
) -> Task | None:
    """The task after its in-flight attempt ended with ``outcome``; None if it is done.

    Done means it succeeded (any 2xx), or failed with no retries left. Otherwise it is
    rescheduled ``backoff_delay`` after the failure (after ``retry_from`` for RunTask, which
    Cloud Tasks measures from the RunTask call), or later if the handler asked for it with
    ``Retry-After`` (see :func:`retry_delay`).
    """
    if outcome.succeeded:
        return None
    config = claimed.retry_config or queue_retry
    first_dispatch = claimed.first_attempt.dispatch_time if claimed.first_attempt else None
    if should_stop_retrying(config, claimed.dispatch_count, first_dispatch, now):
        return None
    return replace(
        attempted(claimed, outcome, now),
        schedule_time=later(retry_from or now, retry_delay(claimed, outcome, config)),
    )


def attempted(claimed: Task, outcome: AttemptOutcome, now: datetime) -> Task:
    """``claimed`` with its attempt's ``outcome`` counted and recorded as its last attempt."""
    last = claimed.last_attempt or Attempt()
    answered = outcome.responded
    return replace(
        claimed,
        response_count=claimed.response_count + answered,
        execution_count=claimed.execution_count + (answered and outcome.http_status < 500),
        previous_outcome=_stored(outcome),
        last_attempt=replace(
            last, response_time=now if answered else None, response_status=response_status(outcome)
        ),
    )


def retry_delay(claimed: Task, outcome: AttemptOutcome, config: RetryConfig) -> timedelta:
    """The wait before the next attempt: the backoff, or the handler's ``Retry-After`` if longer.

    Cloud Tasks "considers" ``Retry-After`` on 429 and 503 answers of HTTP targets, and on 503
    only for App Engine targets (spec 4.2). It is a lower bound on the delay, capped at the
    retry config's ``max_backoff`` (and the 100-year ceiling of every retry delay) so that a
    handler cannot park a task for years.
    """
    backoff = backoff_delay(config, claimed.dispatch_count)
    statuses = (503,) if claimed.app_engine_http_request is not None else RETRY_AFTER_STATUSES
    if outcome.retry_after is None or outcome.http_status not in statuses:
        return backoff
    cap = min(config.max_backoff if config.max_backoff is not None else backoff, MAX_RETRY_DELAY)
    return max(backoff, min(outcome.retry_after, cap))


RETRY_AFTER_STATUSES = (429, 503)  # the answers whose Retry-After is considered (HTTP targets)
_MAX_RETRY_AFTER_S = 10**9  # far past any max_backoff; keeps timedelta arithmetic in range


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP-date) as a delay from ``now``; None if
    absent or unreadable. Dates in the past mean no delay."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return timedelta(
            seconds=min(int(value) if len(value) <= 12 else _MAX_RETRY_AFTER_S, _MAX_RETRY_AFTER_S)
        )
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return min(max(when - now, timedelta(0)), timedelta(seconds=_MAX_RETRY_AFTER_S))
    except OverflowError:  # a date a few hours past year 9999 in UTC
        return timedelta(seconds=_MAX_RETRY_AFTER_S)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _eta(task: Task) -> str:
    """Unix seconds with six decimals, exact (no float rounding)."""
    seconds = (task.schedule_time - _EPOCH) // timedelta(seconds=1)
    return f"{seconds}.{task.schedule_time.microsecond:06d}"


def http_headers(claimed: Task) -> dict[str, str]:
    """Service headers of an HTTP-target attempt (``claimed`` counts the attempt in flight).

    Executions exclude 5xx answers and attempts without one; on a retry the previous response
    of an attempt that got no answer (a timeout) reads as 504, and the reason is empty.
    """
    previous = claimed.previous_outcome
    retry = None if previous is None else (str(previous.http_status or 504), "")
    return _service_headers("X-CloudTasks-", claimed, claimed.execution_count, retry)


def app_engine_headers(claimed: Task) -> dict[str, str]:
    """Service headers of an App Engine attempt: every answer, 5xx included, is an execution;
    after a timeout the previous response is 0 and the reason ``Instance Unavailable``."""
    previous = claimed.previous_outcome
    retry = None
    if previous is not None:
        reason = "App Error" if previous.responded else "Instance Unavailable"
        retry = (str(previous.http_status), reason)
    return _service_headers("X-AppEngine-", claimed, claimed.response_count, retry)


def _service_headers(
    prefix: str, claimed: Task, executions: int, retry: tuple[str, str] | None
) -> dict[str, str]:
    headers = {
        f"{prefix}QueueName": claimed.name.queue.queue_id,
        f"{prefix}TaskName": claimed.name.task_id,
        f"{prefix}TaskRetryCount": str(claimed.dispatch_count - 1),
        f"{prefix}TaskExecutionCount": str(executions),
        f"{prefix}TaskETA": _eta(claimed),
    }
    if retry is not None and claimed.dispatch_count > 1:
        headers[f"{prefix}TaskPreviousResponse"], headers[f"{prefix}TaskRetryReason"] = retry
    return headers


def _stored(outcome: AttemptOutcome) -> AttemptOutcome:
    """``outcome`` as a task keeps it: what the retry headers need, not what the answer said."""
    if outcome.retry_after is None and not outcome.response_headers and not outcome.response_body:
        return outcome
    return AttemptOutcome(http_status=outcome.http_status, failure=outcome.failure, detail=outcome.detail)
