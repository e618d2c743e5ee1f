"""The REST answer built straight from a task equals what protobuf prints for it, over tasks of
every shape task_json builds, and it declines the others."""

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import json_format

from opentasks.api.convert import task_to_pb
from opentasks.api.task_json import task_json
from opentasks.domain.names import TaskName
from opentasks.domain.queue import HttpMethod, OAuthToken, OidcToken, RetryConfig
from opentasks.domain.task import AppEngineHttpRequest, Attempt, HttpRequest, Task, TaskView

NAME = TaskName.parse("projects/p/locations/us-central1/queues/q/tasks/t-1")
TIMES = [
    datetime(2026, 12, 2, 13, 45, 37, tzinfo=UTC),
    datetime(2026, 12, 2, 13, 45, 37, 194000, tzinfo=UTC),
    datetime(2026, 12, 2, 13, 45, 37, 194336, tzinfo=UTC),
    datetime(2026, 12, 2, 14, 45, 37, 1, tzinfo=timezone(timedelta(hours=1))),  # not in UTC
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]
DEADLINES = [None, timedelta(0), timedelta(seconds=15), timedelta(seconds=600, milliseconds=500),
             timedelta(hours=24, microseconds=1)]  # fmt: skip
REQUESTS = [
    HttpRequest("https://example.com/handler"),
    HttpRequest(
        "http://h/x?q=1", HttpMethod.GET, {"Content-Type": "application/json", "X-É": "ü"}, b"\x00\xff{}"
    ),
    HttpRequest("http://h/", HttpMethod.HTTP_METHOD_UNSPECIFIED, body=b"a" * 1000),
    HttpRequest("http://h/", HttpMethod.PUT, oauth_token=OAuthToken("sa@p.iam.gserviceaccount.com", "scope")),
    HttpRequest("http://h/", HttpMethod.OPTIONS, oauth_token=OAuthToken()),
    HttpRequest("http://h/", HttpMethod.DELETE, oidc_token=OidcToken("sa@p.iam.gserviceaccount.com", "aud")),
    HttpRequest("http://h/", HttpMethod.PATCH, oidc_token=OidcToken(audience="only-audience")),
    HttpRequest(""),
]


def printed(task: Task, view: TaskView, int_enums: bool) -> dict[str, object]:
    return json_format.MessageToDict(task_to_pb(task, view), use_integers_for_enums=int_enums)


@pytest.mark.parametrize("int_enums", [False, True])
@pytest.mark.parametrize("view", list(TaskView))
def test_the_built_answer_equals_protobufs_for_every_shape_it_builds(view: TaskView, int_enums: bool) -> None:
    shapes = itertools.product(REQUESTS, TIMES, DEADLINES, [(0, 0), (3, 2)])
    for request, when, deadline, (dispatched, responded) in shapes:
        task = Task(
            NAME,
            schedule_time=when,
            enqueue_time=when,
            http_request=request,
            dispatch_deadline=deadline,
            dispatch_count=dispatched,
            response_count=responded,
        ).in_view(view)
        built = task_json(task, view, int_enums=int_enums)
        assert built == printed(task, view, int_enums), (request, when, deadline)


@pytest.mark.parametrize(
    "task",
    [
        Task(NAME, TIMES[0], TIMES[0], app_engine_http_request=AppEngineHttpRequest(relative_uri="/x")),
        Task(
            NAME, TIMES[0], TIMES[0], http_request=REQUESTS[0], first_attempt=Attempt(dispatch_time=TIMES[0])
        ),
        Task(
            NAME, TIMES[0], TIMES[0], http_request=REQUESTS[0], last_attempt=Attempt(dispatch_time=TIMES[0])
        ),
        Task(NAME, TIMES[0], TIMES[0], http_request=REQUESTS[0], retry_config=RetryConfig(max_attempts=3)),
        Task(NAME, TIMES[0], TIMES[0], http_request=REQUESTS[0], dispatch_deadline=timedelta(seconds=-1)),
    ],
    ids=["app-engine", "first-attempt", "last-attempt", "retry-config", "negative-deadline"],
)
def test_other_shapes_are_left_to_protobuf(task: Task) -> None:
    assert task_json(task, TaskView.BASIC, int_enums=False) is None
    assert task_json(task, TaskView.FULL, int_enums=True) is None
