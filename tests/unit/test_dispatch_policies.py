"""Backoff table, stop rule, token bucket, attempt outcomes and dispatch headers: pure, in virtual time."""

from datetime import UTC, datetime, timedelta

import pytest
from msgspec.structs import replace

from opentasks.domain.attempt import after_attempt, app_engine_headers, claim, http_headers, response_status
from opentasks.domain.limits import (
    LATEST_TIME,
    MAX_RETRY_DELAY,
    MAX_WAIT_SECONDS,
    Limits,
    bounded_wait,
    later,
)
from opentasks.domain.names import QueueName
from opentasks.domain.queue import RetryConfig
from opentasks.domain.rate_limit import TokenBucket
from opentasks.domain.retry import backoff_delay, should_stop_retrying
from opentasks.domain.task import (
    AppEngineHttpRequest,
    AttemptFailure,
    AttemptOutcome,
    HttpRequest,
    Task,
    TaskDraft,
    new_task,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def seconds(*values: float) -> list[timedelta]:
    return [timedelta(seconds=v) for v in values]


def retry(
    min_s: float, max_s: float, doublings: int, attempts: int = 100, duration_s: float = 0
) -> RetryConfig:
    return RetryConfig(
        max_attempts=attempts,
        max_retry_duration=timedelta(seconds=duration_s),
        min_backoff=timedelta(seconds=min_s),
        max_backoff=timedelta(seconds=max_s),
        max_doublings=doublings,
    )


def test_backoff_table_from_the_docs() -> None:
    config = retry(10, 300, 3)
    assert [backoff_delay(config, k) for k in range(1, 9)] == seconds(10, 20, 40, 80, 160, 240, 300, 300)


def test_backoff_second_example_and_defaults() -> None:
    assert [backoff_delay(retry(1, 100, 1), k) for k in range(1, 6)] == seconds(1, 2, 4, 6, 8)
    defaults = retry(0.1, 3600, 16)
    assert backoff_delay(defaults, 1) == timedelta(milliseconds=100)
    assert backoff_delay(defaults, 16) == timedelta(seconds=3276.8)
    assert backoff_delay(defaults, 17) == timedelta(seconds=3600)
    assert backoff_delay(defaults, 10_000) == timedelta(seconds=3600)


def test_zero_doublings_grows_linearly() -> None:
    assert [backoff_delay(retry(5, 100, 0), k) for k in range(1, 5)] == seconds(5, 10, 15, 20)


@pytest.mark.parametrize(
    ("attempts", "duration_s", "done", "elapsed_s", "stop"),
    [
        (3, 0, 2, 0, False),
        (3, 0, 3, 0, True),
        (-1, 0, 10_000, 10**6, False),
        (-1, 60, 50, 59, False),
        (-1, 60, 50, 60, True),
        (3, 60, 3, 59, False),  # both limits must be reached
        (3, 60, 2, 61, False),
        (3, 60, 3, 60, True),
    ],
)
def test_stop_rule(attempts: int, duration_s: float, done: int, elapsed_s: float, stop: bool) -> None:
    config = retry(1, 10, 3, attempts=attempts, duration_s=duration_s)
    assert should_stop_retrying(config, done, T0, T0 + timedelta(seconds=elapsed_s)) is stop


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(rate=5, capacity=10, now=0.0)
    assert bucket.available(0.0) == 10
    bucket.take(0.0, 10)
    assert bucket.available(0.0) == 0
    assert bucket.seconds_until_available(0.0) == pytest.approx(0.2)
    assert bucket.available(0.19) == 0
    assert bucket.available(0.2) == 1
    assert bucket.available(100.0) == 10  # never above capacity


def test_token_bucket_steady_rate_over_virtual_time() -> None:
    bucket = TokenBucket(rate=200, capacity=100, now=0.0)
    bucket.take(0.0, 100)
    taken, now = 0, 0.0
    while now < 60.0:
        now = round(now + 0.001, 6)
        n = bucket.available(now)
        bucket.take(now, n)
        taken += n
    assert taken == pytest.approx(200 * 60, abs=1)


def test_token_bucket_reconfigure_takes_effect_at_once() -> None:
    bucket = TokenBucket(rate=1, capacity=10, now=0.0)
    bucket.reconfigure(rate=100, capacity=2, now=0.0)
    assert bucket.available(0.0) == 2
    bucket.take(0.0, 2)
    assert bucket.seconds_until_available(0.0) == pytest.approx(0.01)


def http_task(config: RetryConfig | None = None) -> Task:
    draft = TaskDraft(
        name="projects/p/locations/l/queues/q/tasks/t1",
        http_request=HttpRequest(url="https://example.com/x"),
        retry_config=config,
    )
    return new_task(draft, QueueName("p", "l", "q"), T0, "1", Limits())


def run_sequence(task: Task, statuses: list[AttemptOutcome]) -> list[dict[str, str]]:
    """Headers of each attempt when the handler answers with ``statuses`` in turn."""
    seen = []
    now = T0
    config = retry(1, 10, 3)
    for outcome in statuses:
        claimed = claim(task, now)
        seen.append(http_headers(claimed) if task.http_request else app_engine_headers(claimed))
        after = after_attempt(claimed, outcome, now, config)
        if after is None:
            assert outcome.succeeded, "only success may end these sequences"
            break
        task, now = after, after.schedule_time
    return seen


def answered(*codes: int) -> list[AttemptOutcome]:
    return [AttemptOutcome(http_status=c) for c in codes]


def test_http_header_counting_matches_cloud_tasks() -> None:
    headers = run_sequence(http_task(), answered(503, 404, 429, 500, 302, 200))
    table = [
        (
            h["X-CloudTasks-TaskRetryCount"],
            h["X-CloudTasks-TaskExecutionCount"],
            h.get("X-CloudTasks-TaskPreviousResponse"),
            h.get("X-CloudTasks-TaskRetryReason"),
        )
        for h in headers
    ]
    assert table == [
        ("0", "0", None, None),
        ("1", "0", "503", ""),
        ("2", "1", "404", ""),
        ("3", "2", "429", ""),
        ("4", "2", "500", ""),
        ("5", "3", "302", ""),
    ]
    assert headers[0]["X-CloudTasks-QueueName"] == "q"
    assert headers[0]["X-CloudTasks-TaskName"] == "t1"
    assert headers[0]["X-CloudTasks-TaskETA"] == f"{int(T0.timestamp())}.000000"


def test_http_timeout_reads_as_504_and_is_no_execution() -> None:
    headers = run_sequence(http_task(), [AttemptOutcome(failure=AttemptFailure.TIMEOUT), *answered(200)])
    assert headers[1]["X-CloudTasks-TaskRetryCount"] == "1"
    assert headers[1]["X-CloudTasks-TaskExecutionCount"] == "0"
    assert headers[1]["X-CloudTasks-TaskPreviousResponse"] == "504"


def test_app_engine_header_counting() -> None:
    task = new_task(
        TaskDraft(app_engine_http_request=AppEngineHttpRequest()), QueueName("p", "l", "q"), T0, "7", Limits()
    )
    outcomes = [
        *answered(503, 404, 429, 500, 302),
        AttemptOutcome(failure=AttemptFailure.TIMEOUT),
        *answered(200),
    ]
    headers = run_sequence(task, outcomes)
    assert [h["X-AppEngine-TaskExecutionCount"] for h in headers] == ["0", "1", "2", "3", "4", "5", "5"]
    assert [h.get("X-AppEngine-TaskRetryReason") for h in headers] == [
        None,
        "App Error",
        "App Error",
        "App Error",
        "App Error",
        "App Error",
        "Instance Unavailable",
    ]
    assert headers[6]["X-AppEngine-TaskPreviousResponse"] == "0"


def test_after_attempt_reschedules_from_the_failure_and_records_it() -> None:
    claimed = claim(http_task(), T0)
    failed_at = T0 + timedelta(seconds=3)
    after = after_attempt(claimed, AttemptOutcome(http_status=502), failed_at, retry(10, 300, 3))
    assert after is not None
    assert after.schedule_time == failed_at + timedelta(seconds=10)
    assert (after.dispatch_count, after.response_count) == (1, 1)
    assert after.first_attempt is not None and after.first_attempt.dispatch_time == T0
    assert after.last_attempt is not None
    assert after.last_attempt.response_time == failed_at
    assert after.last_attempt.response_status is not None
    assert (after.last_attempt.response_status.code, after.last_attempt.response_status.message) == (
        13,
        "HTTP status code 502",
    )


def test_after_attempt_success_and_exhaustion() -> None:
    claimed = claim(http_task(retry(1, 10, 3, attempts=1)), T0)
    assert after_attempt(claimed, AttemptOutcome(http_status=204), T0, retry(1, 10, 3)) is None
    assert (
        after_attempt(claimed, AttemptOutcome(http_status=500), T0, retry(1, 10, 3)) is None
    )  # task-level: 1 try
    timeout = after_attempt(
        claim(http_task(), T0), AttemptOutcome(failure=AttemptFailure.TIMEOUT), T0, retry(1, 10, 3)
    )
    assert timeout is not None and timeout.response_count == 0
    assert timeout.last_attempt is not None and timeout.last_attempt.response_time is None


def test_run_task_failure_retries_from_the_call() -> None:
    called = T0 + timedelta(seconds=1)
    after = after_attempt(
        claim(http_task(), called),
        AttemptOutcome(http_status=500),
        T0 + timedelta(seconds=9),
        retry(5, 10, 3),
        retry_from=called,
    )
    assert after is not None and after.schedule_time == called + timedelta(seconds=5)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, 3),
        (401, 16),
        (403, 7),
        (404, 5),
        (409, 6),
        (429, 8),
        (500, 13),
        (502, 13),
        (503, 14),
        (504, 4),
        (302, 2),
        (418, 2),
    ],
)
def test_response_status_codes(status: int, code: int) -> None:
    assert response_status(AttemptOutcome(http_status=status)).code == code


# -- extreme settings: every value the API accepts must compute without raising ---------------

YEARS_10K = timedelta(seconds=315_576_000_000)  # the largest google.protobuf.Duration
INT32 = 2**31 - 1
HUGE = RetryConfig(min_backoff=YEARS_10K, max_backoff=YEARS_10K, max_doublings=INT32)


@pytest.mark.parametrize(
    ("config", "retry_number", "expected"),
    [
        (RetryConfig(min_backoff=YEARS_10K, max_backoff=YEARS_10K, max_doublings=INT32), 1, MAX_RETRY_DELAY),
        (
            RetryConfig(min_backoff=YEARS_10K, max_backoff=YEARS_10K, max_doublings=INT32),
            INT32,
            MAX_RETRY_DELAY,
        ),
        (retry(0.1, 10**10, INT32), INT32, MAX_RETRY_DELAY),
        (retry(0.1, 10**10, INT32), 2**100, MAX_RETRY_DELAY),
        (retry(0.1, 10**10, 62), 63, MAX_RETRY_DELAY),
        (retry(0.001, 3600, INT32), 10**9, timedelta(seconds=3600)),
        (retry(1, 10**10, 0), 10**18, MAX_RETRY_DELAY),  # linear growth past every ceiling
        (retry(0.001, 10**10, INT32), 20, timedelta(seconds=0.001 * 2**19)),  # exact below the ceiling
        (retry(0, 10**10, INT32), INT32, timedelta(0)),
        (retry(0.1, 0.1, INT32), INT32, timedelta(seconds=0.1)),
        (retry(1, 10, 3), -5, timedelta(seconds=1)),  # nonsense retry numbers count as the first
        (RetryConfig(min_backoff=timedelta(days=36_600)), 1, MAX_RETRY_DELAY),  # no max: min, clamped
    ],
)
def test_backoff_never_overflows_and_never_exceeds_the_ceiling(
    config: RetryConfig, retry_number: int, expected: timedelta
) -> None:
    assert backoff_delay(config, retry_number) == expected


@pytest.mark.parametrize("retry_number", [1, 2, 17, 63, 64, 1000, INT32])
@pytest.mark.parametrize("doublings", [0, 1, 16, 62, 63, 64, INT32])
def test_backoff_is_monotonic_and_bounded_for_huge_settings(retry_number: int, doublings: int) -> None:
    config = RetryConfig(
        min_backoff=timedelta(milliseconds=1), max_backoff=YEARS_10K, max_doublings=doublings
    )
    delay = backoff_delay(config, retry_number)
    assert timedelta(milliseconds=1) <= delay <= MAX_RETRY_DELAY
    assert backoff_delay(config, retry_number + 1) >= delay


@pytest.mark.parametrize(
    "config",
    [
        RetryConfig(max_attempts=-1, min_backoff=YEARS_10K, max_backoff=YEARS_10K, max_doublings=INT32),
        RetryConfig(
            max_attempts=INT32,
            max_retry_duration=YEARS_10K,
            min_backoff=timedelta(seconds=1),
            max_backoff=YEARS_10K,
            max_doublings=INT32,
        ),
    ],
)
@pytest.mark.parametrize("dispatch_count", [1, 64, INT32])
def test_after_attempt_with_extreme_retry_configs_reschedules_within_the_ceiling(
    config: RetryConfig, dispatch_count: int
) -> None:
    claimed = replace(claim(http_task(), T0), dispatch_count=dispatch_count)
    after = after_attempt(claimed, AttemptOutcome(http_status=503), T0, config)
    assert after is not None
    assert T0 < after.schedule_time <= T0 + MAX_RETRY_DELAY


def test_task_level_extreme_retry_config_is_clamped_too() -> None:
    config = RetryConfig(min_backoff=YEARS_10K, max_backoff=YEARS_10K, max_doublings=INT32)
    claimed = claim(http_task(config), T0)
    after = after_attempt(claimed, AttemptOutcome(http_status=500), T0, retry(1, 10, 3))
    assert after is not None and after.schedule_time == T0 + MAX_RETRY_DELAY


@pytest.mark.parametrize("rate", [1e-300, 5e-324, 1e-9, 0.0, float("nan")])
def test_tiny_rates_wait_at_most_the_ceiling_for_a_token(rate: float) -> None:
    bucket = TokenBucket(rate=rate, capacity=10, now=0.0)
    bucket.take(0.0, 10)
    wait = bucket.seconds_until_available(0.0)
    assert 0 < wait <= MAX_WAIT_SECONDS
    assert T0 + timedelta(seconds=wait) > T0  # a datetime holds it
    assert bucket.available(10.0**9) == (1 if rate == 1e-9 else 0)


def test_tiny_rate_still_earns_tokens_in_time() -> None:
    bucket = TokenBucket(rate=1 / 86400, capacity=1, now=0.0)  # queue.yaml's 1/d
    bucket.take(0.0, 1)
    assert bucket.seconds_until_available(0.0) == MAX_WAIT_SECONDS
    assert bucket.seconds_until_available(86400.0 - 60) == pytest.approx(60)
    assert bucket.available(86400.0) == 1


@pytest.mark.parametrize(
    ("start", "delay", "expected"),
    [
        (T0, timedelta(seconds=30), T0 + timedelta(seconds=30)),
        (T0, timedelta.max, LATEST_TIME),
        (LATEST_TIME - timedelta(seconds=1), timedelta(seconds=2), LATEST_TIME),
        (LATEST_TIME, timedelta(0), LATEST_TIME),
    ],
)
def test_later_clamps_instead_of_overflowing(start: datetime, delay: timedelta, expected: datetime) -> None:
    assert later(start, delay) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.5, 0.5),
        (-1.0, 0.0),
        (1e300, MAX_WAIT_SECONDS),
        (float("inf"), MAX_WAIT_SECONDS),
        (float("nan"), MAX_WAIT_SECONDS),
    ],
)
def test_bounded_wait(seconds: float, expected: float) -> None:
    assert bounded_wait(seconds) == expected
