from datetime import timedelta

import pytest
from msgspec.structs import replace

from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import (
    HttpMethod,
    HttpTarget,
    OidcToken,
    Queue,
    RateLimits,
    RetryConfig,
    UriOverride,
    apply_update_mask,
    default_burst_size,
    resolve_queue,
)
from opentasks.errors import InvalidArgument

NAME = QueueName("p", "l", "q")


def resolve(queue: Queue, **limits: object) -> Queue:
    return resolve_queue(queue, Limits(**limits))  # type: ignore[arg-type]


def test_defaults_match_cloud_tasks() -> None:
    queue = resolve(Queue(NAME))
    assert queue.rate_limits == RateLimits(500.0, 100, 1000)
    assert queue.retry_config == RetryConfig(
        max_attempts=100,
        max_retry_duration=timedelta(0),
        min_backoff=timedelta(milliseconds=100),
        max_backoff=timedelta(seconds=3600),
        max_doublings=16,
    )


@pytest.mark.parametrize(("rate", "burst"), [(500, 100), (5, 10), (1, 10), (0.5, 10), (50, 50), (1000, 100)])
def test_burst_size_fits_observed_points(rate: float, burst: int) -> None:
    assert default_burst_size(rate) == burst


def test_burst_is_output_only_and_follows_the_rate() -> None:
    queue = resolve(Queue(NAME, rate_limits=RateLimits(max_dispatches_per_second=5, max_burst_size=-5)))
    assert queue.rate_limits.max_burst_size == 10


@pytest.mark.parametrize(
    ("limits", "retry", "message"),
    [
        (
            RateLimits(max_dispatches_per_second=501),
            RetryConfig(),
            "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
        ),
        (
            RateLimits(max_dispatches_per_second=-1),
            RetryConfig(),
            "RateLimits.maxDispatchesPerSecond cannot be negative.",
        ),
        (
            RateLimits(max_concurrent_dispatches=5001),
            RetryConfig(),
            "RateLimits.maxConcurrentDispatches must be less than or equal to 5000.",
        ),
        (
            RateLimits(max_concurrent_dispatches=-1),
            RetryConfig(),
            "RateLimits.maxConcurrentDispatches cannot be negative.",
        ),
        (
            RateLimits(),
            RetryConfig(max_attempts=-2),
            "RetryConfig.maxAttempts must be greater or equal to -1.",
        ),
        (RateLimits(), RetryConfig(max_doublings=-1), "RetryConfig.maxDoublings cannot be negative."),
        (
            RateLimits(),
            RetryConfig(min_backoff=timedelta(seconds=-1)),
            "RetryConfig.minBackoff cannot be negative.",
        ),
        (
            RateLimits(),
            RetryConfig(min_backoff=timedelta(seconds=10), max_backoff=timedelta(seconds=5)),
            "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.",
        ),
    ],
)
def test_validation_messages(limits: RateLimits, retry: RetryConfig, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve(Queue(NAME, rate_limits=limits, retry_config=retry))
    assert caught.value.message == message


def test_operator_can_lift_the_rate_cap() -> None:
    queue = resolve(
        Queue(NAME, rate_limits=RateLimits(max_dispatches_per_second=5000)), max_dispatches_per_second=10000
    )
    assert queue.rate_limits.max_dispatches_per_second == 5000
    assert queue.rate_limits.max_burst_size == 100


def test_retry_durations_are_truncated() -> None:
    retry = resolve(
        Queue(
            NAME,
            retry_config=RetryConfig(
                max_retry_duration=timedelta(seconds=7.9),
                min_backoff=timedelta(microseconds=1_500_999),
                max_attempts=-1,
            ),
        )
    ).retry_config
    assert retry.max_retry_duration == timedelta(seconds=7)
    assert retry.min_backoff == timedelta(milliseconds=1500)
    assert retry.max_attempts == -1


def test_explicit_zero_min_backoff_is_kept() -> None:
    retry = resolve(Queue(NAME, retry_config=RetryConfig(min_backoff=timedelta(0)))).retry_config
    assert retry.min_backoff == timedelta(0)


def test_update_mask_changes_only_named_fields() -> None:
    existing = resolve(Queue(NAME, rate_limits=RateLimits(max_dispatches_per_second=5)))
    update = Queue(
        NAME,
        rate_limits=RateLimits(max_concurrent_dispatches=3, max_dispatches_per_second=99),
        retry_config=RetryConfig(max_attempts=7),
    )
    merged = resolve(apply_update_mask(existing, update, ["rate_limits.max_concurrent_dispatches"]))
    assert merged.rate_limits == RateLimits(5, 10, 3)
    assert merged.retry_config.max_attempts == 100


def test_update_mask_group_and_empty_mask() -> None:
    existing = resolve(Queue(NAME, retry_config=RetryConfig(max_attempts=5, max_doublings=2)))
    update = Queue(NAME, retry_config=RetryConfig(max_attempts=9))
    assert resolve(apply_update_mask(existing, update, ["retry_config"])).retry_config.max_doublings == 16
    everything = resolve(apply_update_mask(existing, update, []))
    assert everything.retry_config.max_attempts == 9
    assert everything.rate_limits.max_dispatches_per_second == 500


def test_update_mask_ignores_output_only_and_rejects_unknown() -> None:
    existing = resolve(Queue(NAME))
    assert (
        apply_update_mask(existing, Queue(NAME), ["state", "purge_time", "rate_limits.max_burst_size"])
        == existing
    )
    with pytest.raises(InvalidArgument, match=r'"rate_limits\.bogus"'):
        apply_update_mask(existing, Queue(NAME), ["rate_limits.bogus"])


def test_http_target_validation() -> None:
    with pytest.raises(InvalidArgument, match="host must not be empty"):
        resolve(Queue(NAME, http_target=HttpTarget(uri_override=UriOverride(host=""))))
    with pytest.raises(InvalidArgument, match="both serviceAccountEmail and audience"):
        resolve(Queue(NAME, http_target=HttpTarget(oidc_token=OidcToken(service_account_email="a@b"))))
    for bad, message in (
        (UriOverride(host="example.com/path"), "is not a host name or IP address"),
        (UriOverride(host="a b"), "is not a host name or IP address"),
        (UriOverride(port=70000), "port must be between 1 and 65535"),
        (UriOverride(path="/a b"), "must not contain spaces"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            resolve(Queue(NAME, http_target=HttpTarget(uri_override=bad)))
    with pytest.raises(InvalidArgument, match="not a valid HTTP header name"):
        resolve(Queue(NAME, http_target=HttpTarget(header_overrides=(("X Bad", "1"),))))
    with pytest.raises(InvalidArgument, match="line breaks"):
        resolve(Queue(NAME, http_target=HttpTarget(header_overrides=(("X-Ok", "a\r\nInjected: 1"),))))
    for host in ("127.0.0.1", "[::1]", "::1", "worker.internal"):
        resolve(Queue(NAME, http_target=HttpTarget(uri_override=UriOverride(host=host))))
    ok = Queue(NAME, http_target=HttpTarget(uri_override=UriOverride(host="example.com", port=8080)))
    assert resolve(ok).http_target == ok.http_target


def test_sampling_ratio_bounds() -> None:
    with pytest.raises(InvalidArgument, match="samplingRatio"):
        resolve(replace(Queue(NAME), logging_sampling_ratio=1.5))


TEN_THOUSAND_YEARS = timedelta(seconds=315_576_000_000)  # the largest google.protobuf.Duration


@pytest.mark.parametrize(
    ("limits", "retry", "message"),
    [
        (
            RateLimits(max_dispatches_per_second=float("inf")),
            RetryConfig(),
            "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
        ),
        (
            RateLimits(max_dispatches_per_second=float("nan")),
            RetryConfig(),
            "RateLimits.maxDispatchesPerSecond cannot be negative.",
        ),
        (
            RateLimits(),
            RetryConfig(max_attempts=2**31),
            "RetryConfig.maxAttempts must be less than or equal to 2147483647.",
        ),
        (
            RateLimits(),
            RetryConfig(max_doublings=2**31),
            "RetryConfig.maxDoublings must be less than or equal to 2147483647.",
        ),
        (
            RateLimits(),
            RetryConfig(max_backoff=TEN_THOUSAND_YEARS + timedelta(seconds=1)),
            "RetryConfig.maxBackoff must be at most 315576000000s (10,000 years).",
        ),
        (
            RateLimits(),
            RetryConfig(max_retry_duration=timedelta(days=999_999_999)),
            "RetryConfig.maxRetryDuration must be at most 315576000000s (10,000 years).",
        ),
        (
            RateLimits(),
            RetryConfig(min_backoff=timedelta(days=999_999_999), max_backoff=timedelta(days=999_999_999)),
            "RetryConfig.minBackoff must be at most 315576000000s (10,000 years).",
        ),
    ],
)
def test_values_no_wire_type_holds_are_refused(limits: RateLimits, retry: RetryConfig, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve(Queue(NAME, rate_limits=limits, retry_config=retry))
    assert caught.value.message == message


def test_an_infinite_rate_is_refused_even_when_the_operator_lifts_the_cap() -> None:
    with pytest.raises(InvalidArgument):
        resolve(
            Queue(NAME, rate_limits=RateLimits(max_dispatches_per_second=float("inf"))),
            max_dispatches_per_second=float("inf"),
        )


def test_extreme_values_the_api_can_carry_are_accepted_as_given() -> None:
    """They are stored and returned unchanged; the dispatcher clamps what it cannot compute."""
    queue = resolve(
        Queue(
            NAME,
            rate_limits=RateLimits(max_dispatches_per_second=1e-300, max_concurrent_dispatches=5000),
            retry_config=RetryConfig(
                max_attempts=2**31 - 1,
                max_retry_duration=TEN_THOUSAND_YEARS,
                min_backoff=TEN_THOUSAND_YEARS,
                max_backoff=TEN_THOUSAND_YEARS,
                max_doublings=2**31 - 1,
            ),
        )
    )
    assert queue.rate_limits.max_dispatches_per_second == 1e-300
    assert queue.rate_limits.max_burst_size == 10
    assert queue.retry_config == RetryConfig(
        max_attempts=2**31 - 1,
        max_retry_duration=TEN_THOUSAND_YEARS,
        min_backoff=TEN_THOUSAND_YEARS,
        max_backoff=TEN_THOUSAND_YEARS,
        max_doublings=2**31 - 1,
    )


def test_a_sub_path_of_http_target_changes_that_field_alone() -> None:
    name = QueueName("p", "l", "q")
    target = HttpTarget(
        uri_override=UriOverride(host="example.com"),
        http_method=HttpMethod.PUT,
        header_overrides=(("X-A", "1"),),
    )
    existing = Queue(name, http_target=target)
    change = Queue(name, http_target=HttpTarget(http_method=HttpMethod.GET))
    updated = apply_update_mask(existing, change, ["http_target.http_method"])
    assert updated.http_target == replace(target, http_method=HttpMethod.GET)
    cleared = apply_update_mask(existing, Queue(name), ["http_target.header_overrides"])
    assert cleared.http_target == replace(target, header_overrides=())
    deeper = apply_update_mask(existing, Queue(name), ["http_target.uri_override.host"])
    assert deeper.http_target == replace(target, uri_override=None)
    onto_none = apply_update_mask(Queue(name), change, ["http_target.http_method"])
    assert onto_none.http_target == HttpTarget(http_method=HttpMethod.GET)
    emptied = apply_update_mask(
        Queue(name, http_target=HttpTarget(http_method=HttpMethod.GET)),
        Queue(name),
        ["http_target.http_method"],
    )
    assert emptied.http_target is None
    with pytest.raises(InvalidArgument, match="no such updatable field"):
        apply_update_mask(existing, change, ["http_target.nonsense"])
