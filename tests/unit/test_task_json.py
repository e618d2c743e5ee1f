"""REST CreateTask's body read straight into a draft, and the answer built straight from a task,
equal what the protobuf path makes of them, over requests and tasks of every shape read or built
here; every other shape is left to protobuf."""

import copy
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from opentasks.api import messages as pb
from opentasks.api.convert import task_draft_from_pb, task_to_pb, task_view
from opentasks.api.json_errors import parse_json
from opentasks.api.task_json import create_task_request, task_json
from opentasks.domain.names import TaskName
from opentasks.domain.queue import HttpMethod, OAuthToken, OidcToken, RetryConfig
from opentasks.domain.task import AppEngineHttpRequest, Attempt, HttpRequest, Task, TaskDraft, TaskView
from opentasks.errors import InvalidArgument

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


# -- CreateTask's request -----------------------------------------------------------------------

READ_HERE = [
    {},
    {"task": {}},
    {"task": {"httpRequest": {"url": "https://example.com/x"}}},
    {
        "task": {
            "name": "projects/p/locations/l/queues/q/tasks/t-1",
            "httpRequest": {
                "url": "http://h/x?q=1",
                "httpMethod": "PUT",
                "headers": {"X-É": "ü", "Content-Type": "application/json", "b": "1", "A": "2", "a": "3"},
                "body": "AP97fQ==",
                "oauthToken": {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com", "scope": "s"},
            },
            "scheduleTime": "2026-12-02T13:45:37.194336Z",
            "dispatchDeadline": "600.5s",
        },
        "responseView": "FULL",
    },
    {"task": {"httpRequest": {"url": "http://h/", "oidcToken": {"audience": "a"}, "body": ""}}},
    {"task": {"httpRequest": {"url": "http://h/", "oidcToken": {}, "httpMethod": "HTTP_METHOD_UNSPECIFIED"}}},
    {
        "task": {
            "httpRequest": {"url": "http://h/", "body": "YWJj"},
            "scheduleTime": "2026-12-02T14:45:37+01:00",
        }
    },
    {"task": {"scheduleTime": "2026-12-02T13:45:37.123456789Z", "dispatchDeadline": "0.000001s"}},
    {"task": {"scheduleTime": "9999-12-31T23:59:59Z", "dispatchDeadline": "-5s"}, "responseView": "BASIC"},
]
LEFT_TO_PROTOBUF = [
    {"parent": "projects/p/locations/l/queues/q", "task": {}},
    {"task": {"http_request": {"url": "http://h/"}}},  # the field's proto name
    {"task": {"appEngineHttpRequest": {"relativeUri": "/x"}}},
    {"task": {"httpRequest": {"url": "http://h/", "httpMethod": 4}}},  # a number for an enum
    {"task": {"httpRequest": {"url": "http://h/", "httpMethod": "BREW"}}},
    {"task": {"httpRequest": {"url": "http://h/", "body": "-_8="}}},  # URL-safe base64
    {"task": {"httpRequest": {"url": "http://h/", "body": "YWJ"}}},  # unpadded
    {"task": {"httpRequest": {"url": "http://h/", "headers": {"X": 1}}}},
    {"task": {"httpRequest": {"url": "\ud800"}}},  # an unpaired surrogate
    {"task": {"httpRequest": None}},
    {"task": {"scheduleTime": "yesterday"}},
    {"task": {"scheduleTime": "2030-1-2T3:4:5Z"}},  # protobuf reads it; Google does not
    {"task": {"dispatchDeadline": "1.s"}},
    {"task": {"scheduleTime": "0001-01-01T00:00:00+00:01"}},  # before the year 1
    {"task": {"dispatchDeadline": "10"}},
    {"task": {"httpRequest": {"url": "http://h/", "oidcToken": {"scope": "s"}}}},
    {"task": {"retryConfig": {}}},
    {"task": [], "responseView": "FULL"},
    {"task": {}, "responseView": 2},
]


def through_protobuf(body: dict[str, object]) -> tuple[TaskDraft, TaskView]:
    message = pb.CreateTaskRequest()
    parse_json(body, message)
    return task_draft_from_pb(message.task), task_view(message.response_view)


@pytest.mark.parametrize("body", READ_HERE, ids=range(len(READ_HERE)))
def test_a_plain_create_task_body_reads_as_protobuf_reads_it(body: dict[str, object]) -> None:
    ours, theirs = create_task_request(body), through_protobuf(body)
    assert ours == theirs
    assert ours is not None and _header_order(ours[0]) == _header_order(theirs[0])


def _header_order(draft: TaskDraft) -> list[str]:
    """Dicts compare equal in any order; headers are checked, stored and sent in this one."""
    return [] if draft.http_request is None else list(draft.http_request.headers)


@pytest.mark.parametrize("body", LEFT_TO_PROTOBUF, ids=range(len(LEFT_TO_PROTOBUF)))
def test_any_other_body_is_left_to_protobuf(body: dict[str, object]) -> None:
    assert create_task_request(body) is None


# A body with every field read here, and what each field is tried with in turn: values protobuf
# reads, values it reads but Google refuses, and values it refuses.
_FULL_BODY = READ_HERE[3]
_TIMESTAMPS = [
    "2026-12-02T13:45:37Z",
    "2026-12-02T13:45:37.5+05:30",
    "2030-1-2T3:4:5Z",
    "2026-12-02t13:45:37z",
    "2026-12-02T13:45:37.1234567891Z",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-00:01",
    "2026-02-30T00:00:00Z",
    "2026-12-02T24:00:00Z",
    "2026-12-02 13:45:37Z",
    "\uff12\uff10\uff12\uff16-12-02T13:45:37Z",
]
_DURATIONS = [
    "15s",
    "0.5s",
    "1.s",
    "+1s",
    "-0.5s",
    "1e3s",
    "315576000001s",
    "1.0000000001s",
    "\uff11s",
    " 1s",
]
_BASE64 = ["", "YWJj", "YWI=", "YQ==", "YWJ", "-_8=", "YW=J", "YQ", "YQ===", " YWJj", "YW\nJj", "é"]
_ODD = [None, 0, 2, -1, True, 1.5, [], {}, "", "x", "\ud800", "é", "BREW", "FULL", "2", "POST", "BASIC"]
_TRIED = {
    ("task", "scheduleTime"): _TIMESTAMPS,
    ("task", "dispatchDeadline"): _DURATIONS,
    ("task", "httpRequest", "body"): _BASE64,
    ("task", "httpRequest", "httpMethod"): [m.name for m in HttpMethod],
    ("responseView",): [v.name for v in TaskView],
}


def _mutations() -> list[dict[str, object]]:
    """The full body with one field (or one new field) changed, every way tried."""
    found = []
    paths = [("task", "name"), ("task", "httpRequest", "url"), ("task", "httpRequest", "headers"),
             ("task", "httpRequest", "headers", "X-É"), ("task", "httpRequest", "oauthToken"),
             ("task", "httpRequest", "oauthToken", "scope"), ("task", "httpRequest", "oidcToken"),
             ("task", "httpRequest"), ("task",), ("parent",), ("task", "http_request"),
             ("task", "httpRequest", "oauthToken", "audience"), *_TRIED]  # fmt: skip
    for path in paths:
        for value in [*_TRIED.get(path, []), *_ODD]:
            body = copy.deepcopy(_FULL_BODY)
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            found.append(body)
    return found


def _outcome(read: Callable[[], object]) -> object:
    try:
        return read()
    except InvalidArgument as refused:
        return f"refused: {refused}"


@pytest.mark.parametrize("body", _mutations())
def test_a_body_read_here_is_read_as_protobuf_reads_it(body: dict[str, object]) -> None:
    """Never accepts what the protobuf path refuses, and never reads a body another way."""
    ours = _outcome(lambda: create_task_request(body))
    if ours is not None:
        assert ours == _outcome(lambda: through_protobuf(body))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6), max_size=8))
def test_headers_come_in_the_same_order_whichever_path_reads_them(headers: dict[str, str]) -> None:
    """A protobuf map gives its entries in hash order: both paths put them in name order."""
    body = {"task": {"httpRequest": {"url": "http://h/", "headers": headers}}}
    ours, theirs = create_task_request(body), through_protobuf(body)
    assert ours is not None
    assert _header_order(ours[0]) == _header_order(theirs[0]) == sorted(headers)
