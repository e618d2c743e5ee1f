from datetime import UTC, datetime, timedelta

import pytest
from msgspec.structs import replace

from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import AppEngineRouting, HttpMethod, OidcToken, RetryConfig
from opentasks.domain.task import (
    AppEngineHttpRequest,
    HttpRequest,
    TaskDraft,
    TaskView,
    new_task,
)
from opentasks.errors import InvalidArgument

QUEUE = QueueName("p", "l", "q")
NOW = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make(draft: TaskDraft, **limits: object):  # type: ignore[no-untyped-def]
    return new_task(draft, QUEUE, NOW, "1234567890123456789", Limits(**limits))  # type: ignore[arg-type]


def http(**fields: object) -> TaskDraft:
    return TaskDraft(http_request=HttpRequest(**{"url": "https://example.com/h", **fields}))  # type: ignore[arg-type]


def error_of(draft: TaskDraft, **limits: object) -> str:
    with pytest.raises(InvalidArgument) as caught:
        make(draft, **limits)
    return caught.value.message


def test_http_task_gets_cloud_tasks_stored_form() -> None:
    task = make(
        http(
            headers={
                "Content-Type": "application/json",
                "user-agent": "mine",
                "Host": "x",
                "X-CloudTasks-TaskName": "forged",
                "X-Google-Foo": "1",
            },
            body=b"{}",
        )
    )
    assert str(task.name) == "projects/p/locations/l/queues/q/tasks/1234567890123456789"
    assert not task.named
    assert task.http_request is not None
    assert task.http_request.http_method == HttpMethod.POST
    assert task.http_request.headers == {
        "Content-Type": "application/json",
        "User-Agent": "Google-Cloud-Tasks",
    }
    assert task.dispatch_deadline == timedelta(seconds=600)
    assert task.schedule_time == NOW
    assert task.create_time == NOW.replace(microsecond=0)


def test_named_task_must_belong_to_the_parent() -> None:
    task = make(replace(http(), name=f"{QUEUE}/tasks/abc"))
    assert task.named and task.name.task_id == "abc"
    message = error_of(replace(http(), name="projects/p/locations/l/queues/other/tasks/abc"))
    assert message == (
        "The queue name from request ('projects/p/locations/l/queues/q') must be the same as the queue name "
        "in the named task ('projects/p/locations/l/queues/other')."
    )
    assert "Task name must be formatted" in error_of(replace(http(), name="abc"))


@pytest.mark.parametrize(
    ("draft", "message"),
    [
        (http(url=""), "HttpRequest.url is required."),
        (http(url="ftp://x/"), "HttpTarget.url must start with 'http://' or 'https://'."),
        (http(url="example.com/x"), "HttpTarget.url must start with 'http://' or 'https://'."),
        (http(url="https://x/" + "a" * 2100), "HttpRequest.url must be at most 2083 characters long."),
        (http(url="http://"), "HttpRequest.url must name a host."),
        (
            http(http_method=HttpMethod.GET, body=b"x"),
            "HttpRequest.body is allowed only with POST, PUT or PATCH; this task's method is GET.",
        ),
        (
            http(headers={"a": "1", "A": "2"}),
            'Headers "a" and "A" differ only in case; send each header once.',
        ),
        (http(headers={"big": "x" * 81920}), "Task headers must be smaller than 80KB in total."),
        (TaskDraft(), "Task must set a target: httpRequest or appEngineHttpRequest."),
    ],
)
def test_http_validation_messages(draft: TaskDraft, message: str) -> None:
    assert error_of(draft) == message


def test_body_allowed_with_put_and_patch() -> None:
    for method in (HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.POST):
        assert make(http(http_method=method, body=b"x")).http_request.body == b"x"  # type: ignore[union-attr]


def test_tokens_need_https_except_for_local_hosts() -> None:
    token = OidcToken(service_account_email="sa@p.iam.gserviceaccount.com")
    message = "HttpRequest.url must start with 'https://' for request with HttpRequest.authorization_header"
    assert error_of(http(url="http://example.com/x", oidc_token=token)) == message
    for local in ("http://localhost:8080/x", "http://127.0.0.1/x", "http://10.1.2.3/x", "http://worker:80/x"):
        assert make(http(url=local, oidc_token=token)).http_request is not None
    assert (
        error_of(http(url="http://localhost/x", oidc_token=token), require_https_for_tokens=True) == message
    )


def test_token_replaces_authorization_header() -> None:
    token = OidcToken(service_account_email="sa@p.iam.gserviceaccount.com")
    task = make(http(oidc_token=token, headers={"Authorization": "Bearer mine"}))
    assert "Authorization" not in task.http_request.headers  # type: ignore[union-attr]
    assert make(http(headers={"Authorization": "Bearer mine"})).http_request.headers["Authorization"]  # type: ignore[union-attr]


def test_dispatch_deadline_ranges() -> None:
    assert make(replace(http(), dispatch_deadline=timedelta(seconds=15))).dispatch_deadline == timedelta(
        seconds=15
    )
    assert error_of(replace(http(), dispatch_deadline=timedelta(seconds=14))) == (
        "Task.dispatchDeadline must be between [15s, 30m]."
    )
    assert error_of(replace(http(), dispatch_deadline=timedelta(minutes=31))) == (
        "Task.dispatchDeadline must be between [15s, 30m]."
    )
    engine = TaskDraft(app_engine_http_request=AppEngineHttpRequest(), dispatch_deadline=timedelta(hours=24))
    assert make(engine).dispatch_deadline == timedelta(hours=24)
    assert make(replace(engine, dispatch_deadline=None)).dispatch_deadline is None
    assert error_of(replace(engine, dispatch_deadline=timedelta(hours=25))) == (
        "Task.dispatchDeadline must be between [15s, 24h15s]."
    )


def test_schedule_time_rules() -> None:
    past = make(replace(http(), schedule_time=NOW - timedelta(days=1)))
    assert past.schedule_time == NOW
    later = NOW + timedelta(hours=720)
    assert make(replace(http(), schedule_time=later)).schedule_time == later
    message = error_of(replace(http(), schedule_time=datetime(2030, 7, 1, tzinfo=UTC)))
    assert message == (
        "The Task.scheduleTime, 2030-06-30T17:00:00-07:00, is too far in the future. "
        "Schedule time must be no more than 720h in the future."
    )


def test_task_size_limit() -> None:
    assert make(http(body=b"x" * 1_000_000)).http_request is not None
    assert error_of(http(body=b"x" * 1_048_570)) == "Task size too large"


def test_app_engine_stored_form() -> None:
    draft = TaskDraft(
        app_engine_http_request=AppEngineHttpRequest(
            relative_uri="/work?x=1",
            body=b"abc",
            headers={"User-Agent": "app/1", "X-AppEngine-Foo": "no"},
            app_engine_routing=AppEngineRouting(service="worker"),
        )
    )
    request = make(draft).app_engine_http_request
    assert request is not None
    assert request.headers == {
        "User-Agent": "app/1 AppEngine-Google; (+http://code.google.com/appengine)",
        "Content-Length": "3",
        "Content-Type": "application/octet-stream",
    }
    assert error_of(TaskDraft(app_engine_http_request=AppEngineHttpRequest(relative_uri="no-slash"))) == (
        "AppEngineHttpRequest.relativeUri must start with '/' and contain no spaces."
    )
    assert "allowed only with POST or PUT" in error_of(
        TaskDraft(app_engine_http_request=AppEngineHttpRequest(http_method=HttpMethod.PATCH, body=b"x"))
    )


def test_default_relative_uri() -> None:
    request = make(
        TaskDraft(app_engine_http_request=AppEngineHttpRequest(relative_uri=""))
    ).app_engine_http_request
    assert request is not None and request.relative_uri == "/"


def test_views_drop_bodies() -> None:
    task = make(http(body=b"payload"))
    assert task.in_view(TaskView.BASIC).http_request.body == b""  # type: ignore[union-attr]
    assert task.in_view(TaskView.FULL).http_request.body == b"payload"  # type: ignore[union-attr]


def test_task_level_retry_config_is_resolved() -> None:
    task = make(replace(http(), retry_config=RetryConfig(max_attempts=3)))
    assert task.retry_config is not None
    assert task.retry_config.max_attempts == 3
    assert task.retry_config.max_doublings == 16
