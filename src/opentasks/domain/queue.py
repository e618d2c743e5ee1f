"""Queues: configuration records, Cloud Tasks' defaults, validation and field-mask updates."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

import msgspec
from msgspec.structs import replace

from opentasks.domain.headers import check_header_pairs
from opentasks.domain.limits import MAX_DURATION, MAX_INT32, Limits
from opentasks.domain.names import QueueName
from opentasks.errors import InvalidArgument

DEFAULT_MAX_DISPATCHES_PER_SECOND = 500.0
DEFAULT_MAX_CONCURRENT_DISPATCHES = 1000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = timedelta(milliseconds=100)
DEFAULT_MAX_BACKOFF = timedelta(seconds=3600)
DEFAULT_MAX_DOUBLINGS = 16
# App Engine's queue.yaml ``bucket_size``: its default and its largest value.
DEFAULT_BUCKET_SIZE = 5
MAX_BUCKET_SIZE = 500


class QueueState(IntEnum):
    """``google.cloud.tasks.v2.Queue.State``."""

    STATE_UNSPECIFIED = 0
    RUNNING = 1
    PAUSED = 2
    DISABLED = 3


class HttpMethod(IntEnum):
    """``google.cloud.tasks.v2.HttpMethod``."""

    HTTP_METHOD_UNSPECIFIED = 0
    POST = 1
    GET = 2
    HEAD = 3
    PUT = 4
    DELETE = 5
    PATCH = 6
    OPTIONS = 7


class RateLimits(msgspec.Struct, frozen=True, omit_defaults=True):
    """Token bucket and concurrency settings; zero means "not given" on input."""

    max_dispatches_per_second: float = 0.0
    max_burst_size: int = 0
    max_concurrent_dispatches: int = 0


class RetryConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """Retry settings; zero / None means "not given" on input (then the default applies)."""

    max_attempts: int = 0
    max_retry_duration: timedelta | None = None
    min_backoff: timedelta | None = None
    max_backoff: timedelta | None = None
    max_doublings: int = 0


class AppEngineRouting(msgspec.Struct, frozen=True, omit_defaults=True):
    """Service / version / instance of an App Engine target; ``host`` is output-only."""

    service: str = ""
    version: str = ""
    instance: str = ""
    host: str = ""


class OAuthToken(msgspec.Struct, frozen=True, omit_defaults=True):
    service_account_email: str = ""
    scope: str = ""


class OidcToken(msgspec.Struct, frozen=True, omit_defaults=True):
    service_account_email: str = ""
    audience: str = ""


class UriScheme(IntEnum):
    SCHEME_UNSPECIFIED = 0
    HTTP = 1
    HTTPS = 2


class UriOverrideEnforceMode(IntEnum):
    URI_OVERRIDE_ENFORCE_MODE_UNSPECIFIED = 0
    IF_NOT_EXISTS = 1
    ALWAYS = 2


class UriOverride(msgspec.Struct, frozen=True, omit_defaults=True):
    """Queue-level rewrite of task URLs; ``None`` fields are not overridden."""

    scheme: UriScheme | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    query: str | None = None
    enforce_mode: UriOverrideEnforceMode = UriOverrideEnforceMode.URI_OVERRIDE_ENFORCE_MODE_UNSPECIFIED


class HttpTarget(msgspec.Struct, frozen=True, omit_defaults=True):
    """Queue-level routing for HTTP tasks (``Queue.http_target``)."""

    uri_override: UriOverride | None = None
    http_method: HttpMethod = HttpMethod.HTTP_METHOD_UNSPECIFIED
    header_overrides: tuple[tuple[str, str], ...] = ()
    oauth_token: OAuthToken | None = None
    oidc_token: OidcToken | None = None


class Queue(msgspec.Struct, frozen=True, omit_defaults=True):
    """A queue as stored and returned (output-only fields included).

    ``iam_policy`` is the queue's IAM policy document as SetIamPolicy stored it (opaque here:
    opentasks keeps policies for clients that read them back, but does not enforce them).

    ``from_queue_yaml`` marks a queue last written from an App Engine queue.yaml: it keeps the
    file's ``bucket_size`` as its burst and, like on Cloud Tasks, reserves the names of its
    finished tasks longer. Not part of the API; any plain UpdateQueue clears it.
    """

    name: QueueName
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)
    retry_config: RetryConfig = msgspec.field(default_factory=RetryConfig)
    state: QueueState = QueueState.RUNNING
    purge_time: datetime | None = None
    app_engine_routing_override: AppEngineRouting | None = None
    http_target: HttpTarget | None = None
    logging_sampling_ratio: float = 0.0
    iam_policy: bytes = b""
    from_queue_yaml: bool = False


BurstSizeFunction = Callable[[float], int]


def default_burst_size(max_dispatches_per_second: float) -> int:
    """Cloud Tasks' undocumented burst derivation; fits every observed point (500→100, 5→10, 1→10)."""
    return min(100, max(10, math.ceil(max_dispatches_per_second)))


def resolve_queue(queue: Queue, limits: Limits, burst_size: BurstSizeFunction = default_burst_size) -> Queue:
    """Validate a queue's settings and fill Cloud Tasks' defaults for the ones not given.

    ``max_burst_size`` is output-only in v2: it is always recomputed from the rate, except on
    queues from a queue.yaml, whose burst is the file's ``bucket_size``.
    """
    rate = _resolve_rate(queue.rate_limits, limits)
    rate_limits = RateLimits(
        max_dispatches_per_second=rate,
        max_burst_size=_bucket_size(queue.rate_limits) if queue.from_queue_yaml else burst_size(rate),
        max_concurrent_dispatches=_resolve_concurrency(queue.rate_limits, limits),
    )
    ratio = queue.logging_sampling_ratio
    if not 0.0 <= ratio <= 1.0:
        raise InvalidArgument("StackdriverLoggingConfig.samplingRatio must be between 0.0 and 1.0.")
    if queue.http_target is not None:
        validate_http_target(queue.http_target)
    return replace(queue, rate_limits=rate_limits, retry_config=resolve_retry_config(queue.retry_config))


def _resolve_rate(rate_limits: RateLimits, limits: Limits) -> float:
    """Any rate in [0, limit] is accepted, fractions included (queue.yaml's ``1/d`` is 1.16e-5).

    A tiny positive rate is honoured as given; the token bucket caps how long it waits for a
    token, so even 1e-300 overflows nothing (it just dispatches the burst and then next to nothing).
    """
    rate = rate_limits.max_dispatches_per_second
    if math.isnan(rate) or rate < 0:
        raise InvalidArgument("RateLimits.maxDispatchesPerSecond cannot be negative.")
    if rate > limits.max_dispatches_per_second or math.isinf(rate):
        raise InvalidArgument(
            "RateLimits.maxDispatchesPerSecond must be less than or equal to "
            f"{limits.max_dispatches_per_second:g}."
        )
    return rate or DEFAULT_MAX_DISPATCHES_PER_SECOND


def _bucket_size(rate_limits: RateLimits) -> int:
    size = rate_limits.max_burst_size or DEFAULT_BUCKET_SIZE
    if not 1 <= size <= MAX_BUCKET_SIZE:
        raise InvalidArgument(
            f"bucket_size of a queue.yaml queue must be between 1 and {MAX_BUCKET_SIZE}, not {size}."
        )
    return size


def _resolve_concurrency(rate_limits: RateLimits, limits: Limits) -> int:
    concurrency = rate_limits.max_concurrent_dispatches
    if concurrency < 0:
        raise InvalidArgument("RateLimits.maxConcurrentDispatches cannot be negative.")
    if concurrency > limits.max_concurrent_dispatches:
        raise InvalidArgument(
            "RateLimits.maxConcurrentDispatches must be less than or equal to "
            f"{limits.max_concurrent_dispatches}."
        )
    return concurrency or DEFAULT_MAX_CONCURRENT_DISPATCHES


def resolve_retry_config(config: RetryConfig) -> RetryConfig:
    """Validate a retry config and fill the defaults of the fields not given.

    Used for queues and for task-level retry configs. Besides Cloud Tasks' own rules, the int32
    fields must fit an int32 and the durations a ``google.protobuf.Duration`` (10,000 years), as
    any value arriving through the API does: a larger one could not be sent back. Within those
    bounds everything is accepted; the dispatcher clamps what its arithmetic cannot hold
    (:func:`opentasks.domain.retry.backoff_delay`).
    """
    _check_counts(config)
    for label, value in (
        ("maxRetryDuration", config.max_retry_duration),
        ("minBackoff", config.min_backoff),
        ("maxBackoff", config.max_backoff),
    ):
        if value is not None and value < timedelta(0):
            raise InvalidArgument(f"RetryConfig.{label} cannot be negative.")
        if value is not None and value > MAX_DURATION:
            raise InvalidArgument(
                f"RetryConfig.{label} must be at most {MAX_DURATION // timedelta(seconds=1)}s (10,000 years)."
            )
    min_backoff = _to_millis(config.min_backoff if config.min_backoff is not None else DEFAULT_MIN_BACKOFF)
    max_backoff = _to_millis(config.max_backoff if config.max_backoff is not None else DEFAULT_MAX_BACKOFF)
    if min_backoff > max_backoff:
        raise InvalidArgument("RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.")
    retry_duration = config.max_retry_duration or timedelta(0)
    return RetryConfig(
        max_attempts=config.max_attempts or DEFAULT_MAX_ATTEMPTS,
        max_retry_duration=timedelta(seconds=retry_duration // timedelta(seconds=1)),
        min_backoff=min_backoff,
        max_backoff=max_backoff,
        max_doublings=config.max_doublings or DEFAULT_MAX_DOUBLINGS,
    )


def _check_counts(config: RetryConfig) -> None:
    if config.max_attempts < -1:
        raise InvalidArgument("RetryConfig.maxAttempts must be greater or equal to -1.")
    if config.max_doublings < 0:
        raise InvalidArgument("RetryConfig.maxDoublings cannot be negative.")
    for label, count in (("maxAttempts", config.max_attempts), ("maxDoublings", config.max_doublings)):
        if count > MAX_INT32:
            raise InvalidArgument(f"RetryConfig.{label} must be less than or equal to {MAX_INT32}.")


def _to_millis(value: timedelta) -> timedelta:
    return timedelta(milliseconds=value // timedelta(milliseconds=1))


def validate_http_target(target: HttpTarget) -> None:
    """Check queue-level routing (``Queue.http_target``)."""
    if target.uri_override is not None:
        _validate_uri_override(target.uri_override)
    if target.oidc_token is not None and not (
        target.oidc_token.service_account_email and target.oidc_token.audience
    ):
        raise InvalidArgument("HttpTarget.oidcToken needs both serviceAccountEmail and audience.")
    if target.oauth_token is not None and not (
        target.oauth_token.service_account_email and target.oauth_token.scope
    ):
        raise InvalidArgument("HttpTarget.oauthToken needs both serviceAccountEmail and scope.")
    check_header_pairs(target.header_overrides, "HttpTarget.headerOverrides")


_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+")


def _validate_uri_override(override: UriOverride) -> None:
    """Parts that could not form a URL are refused here, not at dispatch."""
    if override.host == "":
        raise InvalidArgument("HttpTarget.uriOverride.host must not be empty when it is set.")
    if override.host is not None and not _HOST.fullmatch(override.host):
        raise InvalidArgument(
            f"HttpTarget.uriOverride.host '{override.host}' is not a host name or IP address "
            "(give the port, path and query in their own fields)."
        )
    if override.port is not None and not 0 <= override.port <= 65535:
        raise InvalidArgument("HttpTarget.uriOverride.port must be between 1 and 65535 (0 clears the port).")
    for label, part in (("pathOverride.path", override.path), ("queryOverride.queryParams", override.query)):
        if part is not None and any(c.isspace() or c == "#" for c in part):
            raise InvalidArgument(f"HttpTarget.uriOverride.{label} must not contain spaces or '#'.")


# Field-mask paths (proto field names) that UpdateQueue may change, each as an attribute chain
# on :class:`Queue`. A sub-path of http_target changes that field of it alone (gcloud sends one
# path per --http-...-override flag); deeper paths, and those of app_engine_routing_override,
# replace the field or message they are in.
_UPDATABLE_PATHS: dict[str, tuple[str, ...]] = {
    "rate_limits.max_dispatches_per_second": ("rate_limits", "max_dispatches_per_second"),
    "rate_limits.max_concurrent_dispatches": ("rate_limits", "max_concurrent_dispatches"),
    "retry_config.max_attempts": ("retry_config", "max_attempts"),
    "retry_config.max_retry_duration": ("retry_config", "max_retry_duration"),
    "retry_config.min_backoff": ("retry_config", "min_backoff"),
    "retry_config.max_backoff": ("retry_config", "max_backoff"),
    "retry_config.max_doublings": ("retry_config", "max_doublings"),
    "app_engine_routing_override": ("app_engine_routing_override",),
    "http_target": ("http_target",),
    "stackdriver_logging_config.sampling_ratio": ("logging_sampling_ratio",),
}
_GROUPS = ("rate_limits", "retry_config", "stackdriver_logging_config")
_OUTPUT_ONLY_PATHS = frozenset({"name", "state", "purge_time", "rate_limits.max_burst_size"})


_BURST_PATH = "rate_limits.max_burst_size"


def apply_update_mask(existing: Queue, update: Queue, paths: list[str], *, queue_yaml: bool = False) -> Queue:
    """Copy the fields named by ``paths`` from ``update`` onto ``existing``.

    An empty mask updates every input field. Output-only paths are ignored, as on Cloud Tasks;
    unknown paths are an error. With ``queue_yaml`` (a write from a queue.yaml) the burst is an
    input too; without it the queue stops being a queue.yaml queue, so its burst is derived from
    the rate again, as Cloud Tasks does. The result still needs :func:`resolve_queue`.
    """
    result = replace(existing, from_queue_yaml=queue_yaml)
    for chain in _expand_paths(paths):
        result = _copy_chain(result, update, chain)
    if queue_yaml and (not paths or _BURST_PATH in paths or "rate_limits" in paths):
        result = replace(
            result,
            rate_limits=replace(result.rate_limits, max_burst_size=update.rate_limits.max_burst_size),
        )
    return result


def _expand_paths(paths: list[str]) -> list[tuple[str, ...]]:
    if not paths:
        return list(_UPDATABLE_PATHS.values())
    chains: list[tuple[str, ...]] = []
    for path in paths:
        chains.extend(_chains_for_path(path))
    return chains


def _chains_for_path(path: str) -> list[tuple[str, ...]]:
    if path in _UPDATABLE_PATHS:
        return [_UPDATABLE_PATHS[path]]
    if path in _GROUPS:
        return [chain for key, chain in _UPDATABLE_PATHS.items() if key.startswith(path + ".")]
    head, *rest = path.split(".")
    if head == "http_target" and rest:
        if rest[0] not in HttpTarget.__struct_fields__:
            raise InvalidArgument(f'Invalid update_mask path "{path}": Queue has no such updatable field.')
        return [(head, rest[0])]
    if head in ("app_engine_routing_override", "http_target"):
        return [(head,)]
    if path in _OUTPUT_ONLY_PATHS:
        return []
    raise InvalidArgument(f'Invalid update_mask path "{path}": Queue has no such updatable field.')


def _copy_chain(target: Any, source: Any, chain: tuple[str, ...]) -> Any:
    head = chain[0]
    if len(chain) == 1:
        return replace(target, **{head: getattr(source, head)})
    if head == "http_target":  # optional: a field of it is set on an empty one, and none left is none
        inner = _copy_chain(target.http_target or HttpTarget(), source.http_target or HttpTarget(), chain[1:])
        return replace(target, http_target=None if inner == HttpTarget() else inner)
    inner = _copy_chain(getattr(target, head), getattr(source, head), chain[1:])
    return replace(target, **{head: inner})
