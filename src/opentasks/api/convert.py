"""Protobuf (Cloud Tasks v2) <-> domain records. The only module that knows both."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import TypeVar

from opentasks.api import messages as pb
from opentasks.api.messages import PB
from opentasks.domain.names import QueueName
from opentasks.domain.queue import (
    AppEngineRouting,
    HttpMethod,
    HttpTarget,
    OAuthToken,
    OidcToken,
    Queue,
    QueueState,
    RateLimits,
    RetryConfig,
    UriOverride,
    UriOverrideEnforceMode,
    UriScheme,
)
from opentasks.domain.task import (
    AppEngineHttpRequest,
    Attempt,
    HttpRequest,
    Task,
    TaskDraft,
    TaskView,
)
from opentasks.errors import InvalidArgument

# -- scalars --------------------------------------------------------------------------------


_E = TypeVar("_E", bound=IntEnum)

# The ranges of a valid google.protobuf.Timestamp (years 1 to 9999) and Duration (+-10000 years).
_MIN_TIMESTAMP_SECONDS = -62_135_596_800
_MAX_TIMESTAMP_SECONDS = 253_402_300_799
_MAX_DURATION_SECONDS = 315_576_000_000
_MAX_NANOS = 999_999_999


def _time(message: PB, field: str, label: str) -> datetime | None:
    """A Timestamp field as a datetime; ``label`` (``Task.scheduleTime``) names it in errors."""
    return time_value(getattr(message, field), label) if message.HasField(field) else None


def time_value(value: PB, label: str) -> datetime:
    """A Timestamp as a datetime, refused (naming ``label``) outside the years 1 to 9999."""
    seconds, nanos = value.seconds, value.nanos
    if not (_MIN_TIMESTAMP_SECONDS <= seconds <= _MAX_TIMESTAMP_SECONDS and 0 <= nanos <= _MAX_NANOS):
        raise InvalidArgument(
            f"Invalid value for {label}: {{seconds: {seconds}, nanos: {nanos}}}. "
            "A timestamp must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z."
        )
    return value.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def _duration(message: PB, field: str, label: str) -> timedelta | None:
    """A Duration field as a timedelta; ``label`` (``RetryConfig.minBackoff``) names it in errors."""
    return duration_value(getattr(message, field), label) if message.HasField(field) else None


def duration_value(value: PB, label: str) -> timedelta:
    """A Duration as a timedelta, refused (naming ``label``) outside what a Duration may hold."""
    seconds, nanos = value.seconds, value.nanos
    if (
        abs(seconds) > _MAX_DURATION_SECONDS
        or abs(nanos) > _MAX_NANOS
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        raise InvalidArgument(
            f"Invalid value for {label}: {{seconds: {seconds}, nanos: {nanos}}}. A duration must lie "
            f"between -{_MAX_DURATION_SECONDS}s and {_MAX_DURATION_SECONDS}s, its seconds and nanos "
            "of the same sign."
        )
    return value.ToTimedelta()  # type: ignore[no-any-return]


def sorted_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A request's headers in name order: a protobuf map has no order of its own (its entries
    come in hash order), so both ways of reading a request agree on the order headers are
    checked, stored and sent in."""
    return dict(sorted(headers.items()))


def _enum(cls: type[_E], value: int, label: str) -> _E:
    """An enum field's value; numbers the API does not define are refused, naming the field."""
    try:
        return cls(value)
    except ValueError:
        raise InvalidArgument(f"Invalid value for {label}: {value}.") from None


def _finite(value: float, label: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(f"Invalid value for {label}: {value}. It must be a finite number.")
    return value


def _set_time(target: PB, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)


# -- queues ---------------------------------------------------------------------------------


def queue_from_pb(message: PB) -> Queue:
    """The caller's queue; output-only fields are dropped, except the burst, which the domain
    honours only for queues from a queue.yaml."""
    return Queue(
        name=QueueName.parse(message.name),
        rate_limits=RateLimits(
            max_dispatches_per_second=_finite(
                message.rate_limits.max_dispatches_per_second, "RateLimits.maxDispatchesPerSecond"
            ),
            max_burst_size=message.rate_limits.max_burst_size,
            max_concurrent_dispatches=message.rate_limits.max_concurrent_dispatches,
        ),
        retry_config=retry_config_from_pb(message.retry_config),
        app_engine_routing_override=(
            _routing_from_pb(message.app_engine_routing_override)
            if message.HasField("app_engine_routing_override")
            else None
        ),
        http_target=_http_target_from_pb(message.http_target) if message.HasField("http_target") else None,
        logging_sampling_ratio=_finite(
            message.stackdriver_logging_config.sampling_ratio, "StackdriverLoggingConfig.samplingRatio"
        ),
    )


def retry_config_from_pb(message: PB) -> RetryConfig:
    return RetryConfig(
        max_attempts=message.max_attempts,
        max_retry_duration=_duration(message, "max_retry_duration", "RetryConfig.maxRetryDuration"),
        min_backoff=_duration(message, "min_backoff", "RetryConfig.minBackoff"),
        max_backoff=_duration(message, "max_backoff", "RetryConfig.maxBackoff"),
        max_doublings=message.max_doublings,
    )


def _routing_from_pb(message: PB) -> AppEngineRouting:
    return AppEngineRouting(service=message.service, version=message.version, instance=message.instance)


def _http_target_from_pb(message: PB) -> HttpTarget:
    return HttpTarget(
        uri_override=_uri_override_from_pb(message.uri_override)
        if message.HasField("uri_override")
        else None,
        http_method=_enum(HttpMethod, message.http_method, "HttpTarget.httpMethod"),
        header_overrides=tuple((h.header.key, h.header.value) for h in message.header_overrides),
        oauth_token=_oauth_from_pb(message.oauth_token) if message.HasField("oauth_token") else None,
        oidc_token=_oidc_from_pb(message.oidc_token) if message.HasField("oidc_token") else None,
    )


def _uri_override_from_pb(message: PB) -> UriOverride:
    return UriOverride(
        scheme=_enum(UriScheme, message.scheme, "UriOverride.scheme") if message.HasField("scheme") else None,
        host=message.host if message.HasField("host") else None,
        port=message.port if message.HasField("port") else None,
        path=message.path_override.path if message.HasField("path_override") else None,
        query=message.query_override.query_params if message.HasField("query_override") else None,
        enforce_mode=_enum(
            UriOverrideEnforceMode, message.uri_override_enforce_mode, "UriOverride.uriOverrideEnforceMode"
        ),
    )


def _oauth_from_pb(message: PB) -> OAuthToken:
    return OAuthToken(service_account_email=message.service_account_email, scope=message.scope)


def _oidc_from_pb(message: PB) -> OidcToken:
    return OidcToken(service_account_email=message.service_account_email, audience=message.audience)


def queue_to_pb(queue: Queue) -> PB:
    message = pb.Queue(name=str(queue.name), state=int(queue.state))
    limits = message.rate_limits
    limits.max_dispatches_per_second = queue.rate_limits.max_dispatches_per_second
    limits.max_burst_size = queue.rate_limits.max_burst_size
    limits.max_concurrent_dispatches = queue.rate_limits.max_concurrent_dispatches
    retry_config_to_pb(queue.retry_config, message.retry_config)
    _set_time(message.purge_time, queue.purge_time)
    if queue.app_engine_routing_override is not None:
        _routing_to_pb(queue.app_engine_routing_override, message.app_engine_routing_override)
    if queue.http_target is not None:
        _http_target_to_pb(queue.http_target, message.http_target)
    if queue.logging_sampling_ratio:
        message.stackdriver_logging_config.sampling_ratio = queue.logging_sampling_ratio
    return message


def retry_config_to_pb(config: RetryConfig, message: PB) -> None:
    message.max_attempts = config.max_attempts
    message.max_doublings = config.max_doublings
    for field in ("min_backoff", "max_backoff"):
        value = getattr(config, field)
        if value is not None:
            getattr(message, field).FromTimedelta(value)
    if config.max_retry_duration:
        message.max_retry_duration.FromTimedelta(config.max_retry_duration)


def _routing_to_pb(routing: AppEngineRouting, message: PB) -> None:
    message.SetInParent()
    message.service = routing.service
    message.version = routing.version
    message.instance = routing.instance
    message.host = routing.host


def _http_target_to_pb(target: HttpTarget, message: PB) -> None:
    message.SetInParent()
    message.http_method = int(target.http_method)
    for key, value in target.header_overrides:
        header = message.header_overrides.add().header
        header.key, header.value = key, value
    if target.uri_override is not None:
        _uri_override_to_pb(target.uri_override, message.uri_override)
    if target.oauth_token is not None:
        message.oauth_token.service_account_email = target.oauth_token.service_account_email
        message.oauth_token.scope = target.oauth_token.scope
    if target.oidc_token is not None:
        message.oidc_token.service_account_email = target.oidc_token.service_account_email
        message.oidc_token.audience = target.oidc_token.audience


def _uri_override_to_pb(override: UriOverride, message: PB) -> None:
    message.SetInParent()
    message.uri_override_enforce_mode = int(override.enforce_mode)
    if override.scheme is not None:
        message.scheme = int(override.scheme)
    if override.host is not None:
        message.host = override.host
    if override.port is not None:
        message.port = override.port
    # Cloud Tasks echoes the path and query sub-messages even when they are empty.
    message.path_override.path = override.path or ""
    message.query_override.query_params = override.query or ""


# -- tasks ----------------------------------------------------------------------------------


def task_draft_from_pb(message: PB) -> TaskDraft:
    """What the caller asked CreateTask for; output-only fields are dropped."""
    return TaskDraft(
        name=message.name,
        http_request=_http_request_from_pb(message.http_request)
        if message.HasField("http_request")
        else None,
        app_engine_http_request=(
            _app_engine_request_from_pb(message.app_engine_http_request)
            if message.HasField("app_engine_http_request")
            else None
        ),
        schedule_time=_time(message, "schedule_time", "Task.scheduleTime"),
        dispatch_deadline=_duration(message, "dispatch_deadline", "Task.dispatchDeadline"),
        retry_config=retry_config_from_pb(message.retry_config) if message.HasField("retry_config") else None,
    )


def _http_request_from_pb(message: PB) -> HttpRequest:
    return HttpRequest(
        url=message.url,
        http_method=_enum(HttpMethod, message.http_method, "HttpRequest.httpMethod"),
        headers=sorted_headers(message.headers),
        body=message.body,
        oauth_token=_oauth_from_pb(message.oauth_token) if message.HasField("oauth_token") else None,
        oidc_token=_oidc_from_pb(message.oidc_token) if message.HasField("oidc_token") else None,
    )


def _app_engine_request_from_pb(message: PB) -> AppEngineHttpRequest:
    return AppEngineHttpRequest(
        http_method=_enum(HttpMethod, message.http_method, "AppEngineHttpRequest.httpMethod"),
        app_engine_routing=(
            _routing_from_pb(message.app_engine_routing) if message.HasField("app_engine_routing") else None
        ),
        relative_uri=message.relative_uri,
        headers=sorted_headers(message.headers),
        body=message.body,
    )


def task_to_pb(task: Task, view: TaskView) -> PB:
    """The task as the API returns it; the caller has already applied ``view`` to the record."""
    message = pb.Task(
        name=str(task.name),
        dispatch_count=task.dispatch_count,
        response_count=task.response_count,
        view=int(view) if view != TaskView.VIEW_UNSPECIFIED else int(TaskView.BASIC),
    )
    message.schedule_time.FromDatetime(task.schedule_time)
    message.create_time.FromDatetime(task.create_time)
    if task.dispatch_deadline is not None:
        message.dispatch_deadline.FromTimedelta(task.dispatch_deadline)
    if task.http_request is not None:
        _http_request_to_pb(task.http_request, message.http_request)
    if task.app_engine_http_request is not None:
        _app_engine_request_to_pb(task.app_engine_http_request, message.app_engine_http_request)
    if task.first_attempt is not None:
        _attempt_to_pb(task.first_attempt, message.first_attempt)
    if task.last_attempt is not None:
        _attempt_to_pb(task.last_attempt, message.last_attempt)
    if task.retry_config is not None:
        retry_config_to_pb(task.retry_config, message.retry_config)
    return message


def _http_request_to_pb(request: HttpRequest, message: PB) -> None:
    message.url = request.url
    message.http_method = int(request.http_method)
    message.headers.update(request.headers)
    message.body = request.body
    if request.oauth_token is not None:
        message.oauth_token.service_account_email = request.oauth_token.service_account_email
        message.oauth_token.scope = request.oauth_token.scope
    if request.oidc_token is not None:
        message.oidc_token.service_account_email = request.oidc_token.service_account_email
        message.oidc_token.audience = request.oidc_token.audience


def _app_engine_request_to_pb(request: AppEngineHttpRequest, message: PB) -> None:
    message.http_method = int(request.http_method)
    message.relative_uri = request.relative_uri
    message.headers.update(request.headers)
    message.body = request.body
    if request.app_engine_routing is not None:
        _routing_to_pb(request.app_engine_routing, message.app_engine_routing)


def _attempt_to_pb(attempt: Attempt, message: PB) -> None:
    message.SetInParent()
    _set_time(message.schedule_time, attempt.schedule_time)
    _set_time(message.dispatch_time, attempt.dispatch_time)
    _set_time(message.response_time, attempt.response_time)
    if attempt.response_status is not None:
        message.response_status.code = attempt.response_status.code
        message.response_status.message = attempt.response_status.message


def task_view(value: int) -> TaskView:
    """A request's ``response_view``; unknown numbers read as BASIC."""
    try:
        return TaskView(value)
    except ValueError:
        return TaskView.BASIC


def queue_state(value: int) -> QueueState:
    return _enum(QueueState, value, "Queue.state")
