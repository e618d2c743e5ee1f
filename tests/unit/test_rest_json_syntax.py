"""REST JSON values are read with Google's syntax and refused with Google's wording: the field
path, its type and the value, never a Python parser's message."""

from typing import Any

import pytest

from opentasks.api import messages as pb
from opentasks.api.json_errors import load_json, parse_json
from opentasks.api.rest import unknown_path
from opentasks.errors import InvalidArgument

# Phrases of Python's and json_format's own messages, which must never reach a client.
PYTHON_WORDING = (
    "literal",
    "int()",
    "Couldn't parse",
    "NoneType",
    "bytes-like",
    "which is",
    "does not match format",
    "Failed to parse",
    "Bool value",
    "Message type",
    "base64-encoded string",
)


def refusal(data: dict[str, Any], request_class: Any = pb.CreateTaskRequest, *, query: bool = False) -> str:
    with pytest.raises(InvalidArgument) as caught:
        parse_json(data, request_class(), query=query)
    message = caught.value.message
    for phrase in PYTHON_WORDING:
        assert phrase not in message, message
    return message


def accepted(data: dict[str, Any], request_class: Any = pb.CreateTaskRequest) -> Any:
    message = request_class()
    parse_json(data, message)
    return message


@pytest.mark.parametrize(
    "value",
    [
        "+PT1H",
        "",
        "2030-1-2T3:4:5Z",  # single digits
        "2030-01-02T03:04:05+25:00",  # offset hours past 23
        "2030-01-02T03:04:05+1:00",
        "2030-01-02T03:04:05+0100",
        "2030-01-02T03:04:05.Z",  # a dot without digits
        "2030-01-02T03:04:05.1234567891Z",  # ten fractional digits
        "2030-01-02t03:04:05z",
        "\uff12\uff10\uff13\uff10-01-02T03:04:05Z",  # fullwidth digits
        "2023-02-29T00:00:00Z",
        "2030-01-02T24:00:00Z",
        "0000-12-31T23:59:59Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 once the offset is applied
        "9999-12-31T23:59:59-01:00",  # after year 9999
        5,
        {"seconds": 1},
    ],
)
def test_timestamps_are_rfc_3339_as_google_reads_them(value: Any) -> None:
    message = refusal({"task": {"scheduleTime": value}})
    assert message.startswith(
        "Invalid value at 'task.schedule_time' (type.googleapis.com/google.protobuf.Timestamp), "
    )
    assert "Illegal timestamp format" in message


@pytest.mark.parametrize(
    ("value", "seconds", "nanos"),
    [
        ("2030-01-02T03:04:05Z", 1893553445, 0),
        ("2030-01-02T03:04:05.123456789Z", 1893553445, 123456789),
        ("2030-01-02T04:04:05+01:00", 1893553445, 0),
        ("2030-01-02T03:04:05-00:00", 1893553445, 0),
        ("2024-02-29T00:00:00Z", 1709164800, 0),
        ("0001-01-01T00:00:00Z", -62135596800, 0),
    ],
)
def test_valid_timestamps_are_read(value: str, seconds: int, nanos: int) -> None:
    schedule = accepted({"task": {"scheduleTime": value}}).task.schedule_time
    assert (schedule.seconds, schedule.nanos) == (seconds, nanos)


@pytest.mark.parametrize(
    "value", ["10", "", "1h", "PT1H", "1_0s", " 1s", "+1s", "1.s", ".5s", "1S", "\uff11s"]
)
def test_durations_are_seconds_with_an_s(value: str) -> None:
    message = refusal({"task": {"dispatchDeadline": value}})
    assert message.startswith(
        f"Invalid value at 'task.dispatch_deadline' (type.googleapis.com/google.protobuf.Duration), "
        f'"{value}": Illegal duration format'
    )


def test_valid_durations_are_read() -> None:
    deadline = accepted({"task": {"dispatchDeadline": "-1.000000001s"}}).task.dispatch_deadline
    assert (deadline.seconds, deadline.nanos) == (-1, -1)
    assert (
        accepted({"task": {"dispatchDeadline": "315576000000s"}}).task.dispatch_deadline.seconds
        == 315576000000
    )


@pytest.mark.parametrize("value", ["a..b", "a b", "rateLimits,", "a_b", 5, ["rateLimits"]])
def test_field_masks_are_comma_separated_camel_case_paths(value: Any) -> None:
    message = refusal({"updateMask": value}, pb.UpdateQueueRequest)
    assert "Invalid value at 'update_mask' (type.googleapis.com/google.protobuf.FieldMask)" in message
    assert "Illegal field mask" in message


def test_valid_field_masks_are_read() -> None:
    mask = accepted({"updateMask": "rateLimits.maxBurstSize,retryConfig"}, pb.UpdateQueueRequest).update_mask
    assert list(mask.paths) == ["rate_limits.max_burst_size", "retry_config"]
    assert list(accepted({"updateMask": ""}, pb.UpdateQueueRequest).update_mask.paths) == []
    assert list(accepted({"updateMask": "*"}, pb.UpdateQueueRequest).update_mask.paths) == ["*"]


@pytest.mark.parametrize("value", [True, "FOO", "", 1.5, "GET "])
def test_enums_take_a_name_or_a_number(value: Any) -> None:
    message = refusal({"task": {"httpRequest": {"httpMethod": value}}})
    assert message.startswith(
        "Invalid value at 'task.http_request.http_method' "
        "(type.googleapis.com/google.cloud.tasks.v2.HttpMethod)"
    )
    assert "use one of HTTP_METHOD_UNSPECIFIED, POST, GET" in message


def test_enum_names_numbers_and_numeric_query_strings_are_read() -> None:
    assert accepted({"task": {"httpRequest": {"httpMethod": "PUT"}}}).task.http_request.http_method == 4
    assert accepted({"task": {"httpRequest": {"httpMethod": 2}}}).task.http_request.http_method == 2
    listed = pb.ListTasksRequest()
    parse_json({"responseView": "2", "pageSize": "10"}, listed, query=True)
    assert (listed.response_view, listed.page_size) == (2, 10)


@pytest.mark.parametrize(
    ("data", "request_class", "start"),
    [
        (
            {"pageSize": ""},
            pb.ListTasksRequest,
            "Invalid value at 'page_size' (TYPE_INT32), \"\": Expected an integer",
        ),
        ({"pageSize": "abc"}, pb.ListTasksRequest, "Invalid value at 'page_size' (TYPE_INT32), \"abc\""),
        ({"pageSize": "1_0"}, pb.ListTasksRequest, "Invalid value at 'page_size' (TYPE_INT32), \"1_0\""),
        ({"pageSize": 1.5}, pb.ListTasksRequest, "Invalid value at 'page_size' (TYPE_INT32), 1.5"),
        ({"pageSize": True}, pb.ListTasksRequest, "Invalid value at 'page_size' (TYPE_INT32), true"),
        (
            {"queue": {"rateLimits": {"maxDispatchesPerSecond": "fast"}}},
            pb.CreateQueueRequest,
            "Invalid value at 'queue.rate_limits.max_dispatches_per_second' (TYPE_DOUBLE), \"fast\": "
            "Expected a number.",
        ),
        (
            {"queue": {"httpTarget": {"uriOverride": {"port": "https"}}}},
            pb.CreateQueueRequest,
            "Invalid value at 'queue.http_target.uri_override.port' (TYPE_INT64), \"https\"",
        ),
        (
            {"task": {"httpRequest": {"body": "a"}}},
            pb.CreateTaskRequest,
            "Invalid value at 'task.http_request.body' (TYPE_BYTES), \"a\": Base64 decoding failed",
        ),
        (
            {"task": {"httpRequest": {"body": "!!"}}},
            pb.CreateTaskRequest,
            "Invalid value at 'task.http_request.body' (TYPE_BYTES), \"!!\": Base64 decoding failed",
        ),
        (
            {"task": {"httpRequest": {"headers": {"X-A": 1}}}},
            pb.CreateTaskRequest,
            "Invalid value at 'task.http_request.headers[X-A]' (TYPE_STRING), 1: Expected a string.",
        ),
        (
            {"task": {"httpRequest": {"headers": {"X-A": None}}}},
            pb.CreateTaskRequest,
            "Invalid value at 'task.http_request.headers[X-A]' (TYPE_STRING), null",
        ),
        (
            {"task": {"httpRequest": {"headers": ["X-A: 1"]}}},
            pb.CreateTaskRequest,
            "Invalid value at 'task.http_request.headers' (map<TYPE_STRING, TYPE_STRING>), [\"X-A: 1\"]: "
            "Expected a JSON object.",
        ),
        (
            {"queue": {"httpTarget": {"headerOverrides": {"header": {}}}}},
            pb.CreateQueueRequest,
            "Invalid value at 'queue.http_target.header_overrides' "
            '(type.googleapis.com/google.cloud.tasks.v2.HttpTarget.HeaderOverride), {"header": {}}: '
            "Expected a JSON array.",
        ),
        (
            {"task": []},
            pb.CreateTaskRequest,
            "Invalid value at 'task' (type.googleapis.com/google.cloud.tasks.v2.Task), []: "
            "Expected a JSON object.",
        ),
        (
            {"policy": {"etag": "!"}},
            pb.SetIamPolicyRequest,
            "Invalid value at 'policy.etag' (TYPE_BYTES), \"!\"",
        ),
    ],
)
def test_scalars_maps_and_lists_are_refused_in_googles_words(
    data: dict[str, Any], request_class: Any, start: str
) -> None:
    assert refusal(data, request_class).startswith(start)


def test_integers_in_range_as_numbers_or_strings_are_read() -> None:
    queue = accepted(
        {"queue": {"httpTarget": {"uriOverride": {"port": "8443"}}}}, pb.CreateQueueRequest
    ).queue
    assert queue.http_target.uri_override.port == 8443
    assert accepted({"pageSize": 2.0}, pb.ListTasksRequest).page_size == 2
    assert accepted({"task": {"httpRequest": {"body": "aGVsbG8"}}}).task.http_request.body == b"hello"
    assert accepted({"task": {"httpRequest": {"body": "-_8="}}}).task.http_request.body == b"\xfb\xff"


def test_two_members_of_a_oneof_are_refused() -> None:
    message = refusal({"task": {"httpRequest": {"url": "https://a/"}, "appEngineHttpRequest": {}}})
    assert message == (
        "Invalid JSON payload received. Oneof field 'message_type' is already set by \"httpRequest\" "
        "at 'task'. Cannot set \"appEngineHttpRequest\"."
    )
    nested = refusal({"task": {"httpRequest": {"oidcToken": {}, "oauthToken": {}}}})
    assert "'authorization_header'" in nested and "at 'task.http_request'" in nested
    assert accepted(
        {"task": {"httpRequest": {"oidcToken": {}, "oauthToken": None}}}
    ).task.http_request.HasField("oidc_token")


def test_an_unserved_api_version_is_named() -> None:
    error = unknown_path("GET", "/v2beta2/projects/p/locations/l/queues", ("v2", "v2beta3"))
    assert error.message == (
        "No Cloud Tasks v2beta2 method is served at GET /v2beta2/projects/p/locations/l/queues: this server "
        "serves the Cloud Tasks API versions v2, v2beta3."
    )
    assert unknown_path("GET", "/favicon.ico", ("v2",)).message == (
        "No Cloud Tasks v2 method is served at GET /favicon.ico."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{bad", "Expected an object key in double quotes. Line 1, column 2."),
        ('{"a" 1}', "Expected : between key:value pair. Line 1, column 6."),
        ('{"a": 1 "b": 2}', "Expected , or a closing bracket after a value. Line 1, column 9."),
        ('{"a": 1}x', "Unexpected data after the JSON value. Line 1, column 9."),
        ('{"a": "x', "Closing quote expected in string. Line 1, column 7."),
        ('{"a":\n tru}', "Unexpected token. Line 2, column 2."),
        ('{"a": "\\q"}', "Invalid escape sequence in string. Line 1, column 8."),
        (
            '{"a": NaN}',
            'Unexpected token "NaN": JSON has no such literal; a number field takes the string "NaN".',
        ),
        ("[" * 100_000, "The JSON is nested too deeply."),
    ],
)
def test_json_syntax_errors_in_googles_words(text: str, expected: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_json(text)
    assert caught.value.message == f"Invalid JSON payload received. {expected}"
