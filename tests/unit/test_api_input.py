"""Bad input caught in-process: protobuf -> domain conversion, page tokens, the REST helpers,
the JSON error messages and the rate-limited log."""

import base64
import gzip
import json
import logging
import zlib
from typing import Any

import pytest
from multidict import MultiDict, MultiDictProxy

from opentasks.api import convert
from opentasks.api import messages as pb
from opentasks.api.cloud_tasks_grpc import MalformedRequest, request_deserializer
from opentasks.api.content_encoding import decode_body
from opentasks.api.json_errors import parse_json
from opentasks.api.rest import camel_case_mask, decoded_path, query_parameters, response_format
from opentasks.api.status import MAX_MESSAGE_BYTES, wire_message
from opentasks.errors import InvalidArgument, PayloadTooLarge
from opentasks.service import paging
from opentasks.service.paging import next_page_token, page_request
from opentasks.throttled_log import ThrottledLog


def task_request(**fields: Any) -> Any:
    task = pb.Task()
    task.http_request.url = "https://example.com/"
    for path, value in fields.items():
        target = task
        *parents, leaf = path.split(".")
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)
    return task


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"http_request.http_method": 42}, "Invalid value for HttpRequest.httpMethod: 42."),
        ({"dispatch_deadline.seconds": 10**15}, "Invalid value for Task.dispatchDeadline"),
        ({"dispatch_deadline.seconds": 1, "dispatch_deadline.nanos": -1}, "Task.dispatchDeadline"),
        ({"dispatch_deadline.nanos": 10**9}, "Task.dispatchDeadline"),
        ({"retry_config.max_backoff.seconds": -(10**15)}, "RetryConfig.maxBackoff"),
        ({"schedule_time.seconds": 10**15}, "Invalid value for Task.scheduleTime"),
        ({"schedule_time.seconds": -(10**15)}, "Task.scheduleTime"),
        ({"schedule_time.seconds": 253_402_300_800}, "9999-12-31T23:59:59.999999999Z"),
    ],
)
def test_task_fields_out_of_range(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace(".", r"\.")):
        convert.task_draft_from_pb(task_request(**fields))


def test_the_edges_of_the_ranges_convert() -> None:
    draft = convert.task_draft_from_pb(
        task_request(
            **{
                "schedule_time.seconds": 253_402_300_799,
                "schedule_time.nanos": 999_999_999,
                "dispatch_deadline.seconds": 315_576_000_000,
            }
        )
    )
    assert draft.schedule_time is not None and draft.schedule_time.year == 9999
    assert draft.dispatch_deadline is not None and draft.dispatch_deadline.days > 3_000_000
    first = convert.task_draft_from_pb(task_request(**{"schedule_time.seconds": -62_135_596_800}))
    assert first.schedule_time is not None and first.schedule_time.year == 1


def test_app_engine_method_and_queue_enums() -> None:
    task = pb.Task()
    task.app_engine_http_request.http_method = 9
    with pytest.raises(InvalidArgument, match=r"AppEngineHttpRequest\.httpMethod: 9\."):
        convert.task_draft_from_pb(task)
    for path, label in (
        ("http_method", "HttpTarget.httpMethod"),
        ("uri_override.scheme", "UriOverride.scheme"),
        ("uri_override.uri_override_enforce_mode", "UriOverride.uriOverrideEnforceMode"),
    ):
        queue = pb.Queue(name="projects/p/locations/l/queues/q")
        target = queue.http_target
        *parents, leaf = path.split(".")
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, 77)
        with pytest.raises(InvalidArgument, match=rf"{label}: 77\."):
            convert.queue_from_pb(queue)
    with pytest.raises(InvalidArgument, match=r"Queue\.state: 9"):
        convert.queue_state(9)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_rates(value: float) -> None:
    queue = pb.Queue(name="projects/p/locations/l/queues/q")
    queue.rate_limits.max_dispatches_per_second = value
    with pytest.raises(InvalidArgument, match=r"RateLimits\.maxDispatchesPerSecond"):
        convert.queue_from_pb(queue)


# -- page tokens -----------------------------------------------------------------------------


def test_page_tokens_are_signed_and_checked() -> None:
    token = next_page_token(41, fingerprint="f")
    assert page_request(5, token, max_size=10, fingerprint="f").cursor == 41
    payload, mac = token.split(".")
    forged_payload = base64.urlsafe_b64encode(json.dumps({"c": 10**20, "f": "x"}).encode()).decode()
    for bad in (
        f"{forged_payload}.{mac}",
        f"{payload}.{mac[:-2]}AA" if not mac.endswith("AA") else f"{payload}.{mac[:-2]}BB",
        payload,  # no signature (the format before signing)
        "a.b.c",
        "é.é",
        "x" * 5000,
        "",  # empty is "first page", not an error
    ):
        if bad:
            with pytest.raises(InvalidArgument, match="not a token returned"):
                page_request(5, bad, max_size=10, fingerprint="f")
    assert page_request(5, "", max_size=10, fingerprint="f").cursor is None


@pytest.mark.parametrize("cursor", [10**20, -1, True, 1.5, None, [], {}, ""])
def test_signed_tokens_with_bad_cursors_are_refused(cursor: Any) -> None:
    # Even a correctly signed token (e.g. after a key leak) carries only a valid cursor.
    raw = json.dumps({"c": cursor, "f": paging._hash("f")}, separators=(",", ":")).encode()
    token = f"{paging._b64(raw)}.{paging._b64(paging._mac(raw))}"
    with pytest.raises(InvalidArgument, match="not a token returned"):
        page_request(5, token, max_size=10, fingerprint="f")


def test_signing_key_can_be_installed() -> None:
    token = next_page_token("q", fingerprint="f")
    original = bytes(paging._key)
    try:
        paging.set_signing_key(b"k" * 32)
        with pytest.raises(InvalidArgument):
            page_request(5, token, max_size=10, fingerprint="f")
        assert (
            page_request(5, next_page_token("q", fingerprint="f"), max_size=10, fingerprint="f").cursor == "q"
        )
        with pytest.raises(ValueError, match="16 bytes"):
            paging.set_signing_key(b"short")
    finally:
        paging.set_signing_key(original)


# -- gRPC deserializer -------------------------------------------------------------------------


def test_request_deserializer_never_raises() -> None:
    parse = request_deserializer(pb.CreateQueueRequest)
    assert parse(pb.CreateQueueRequest(parent="p").SerializeToString()).parent == "p"
    for data in (b"\xff\xff\xff", b"\x0a\x02\xff\xfe", b"\x0a\x05ab"):
        assert parse(data) == MalformedRequest("google.cloud.tasks.v2.CreateQueueRequest")


# -- REST helpers ------------------------------------------------------------------------------


def test_decoded_path() -> None:
    assert decoded_path("projects/p/locations/l/queues/q%2Dx") == "projects/p/locations/l/queues/q-x"
    with pytest.raises(InvalidArgument, match="encoded '/'"):
        decoded_path("projects/p/locations/l/queues/q%2Ftasks%2Ft")
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        decoded_path("projects/p/locations/%ff")


def test_response_format() -> None:
    assert response_format({}) is False
    assert response_format({"$alt": "json;enum-encoding=int"}) is True
    assert response_format({"alt": "json", "$alt": "json;enum-encoding=string"}) is False
    for value in ("proto", "media", "json;enum-encoding=roman", "json;pretty"):
        with pytest.raises(InvalidArgument):
            response_format({"$alt": value})


def test_query_parameters() -> None:
    def query(*pairs: tuple[str, str]) -> MultiDictProxy[str]:
        return MultiDictProxy(MultiDict(pairs))

    assert query_parameters("list_tasks", query(("pageSize", "2"), ("key", "k"), ("$x", "1"))) == {
        "pageSize": "2"
    }
    assert query_parameters("list_locations", query(("extraLocationTypes", "a"))) == {}
    assert query_parameters("get_queue", query(("readMask", "name"))) == {}
    assert query_parameters("update_queue", query(("updateMask", "retry_config.max_attempts"))) == {
        "updateMask": "retryConfig.maxAttempts"
    }
    with pytest.raises(InvalidArgument, match="given 2 times"):
        query_parameters("list_tasks", query(("pageSize", "1"), ("pageSize", "2")))


def test_camel_case_mask() -> None:
    assert camel_case_mask("retry_config.max_attempts, rateLimits") == "retryConfig.maxAttempts,rateLimits"
    assert camel_case_mask(["x"]) == ["x"]  # not a string: left for the parser to refuse


# -- JSON error messages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "request_class", "fragments"),
    [
        (
            {"task": {"scheduleTime": "+PT1H"}},
            pb.CreateTaskRequest,
            ["'task.schedule_time' (type.googleapis.com/google.protobuf.Timestamp)", '"+PT1H"', "'Z'"],
        ),
        ({"task": {"dispatchDeadline": "10"}}, pb.CreateTaskRequest, ["'task.dispatch_deadline'", '"10"']),
        ({"pageSize": "99999999999"}, pb.ListTasksRequest, ["'page_size' (TYPE_INT32)", "99999999999"]),
        ({"responseView": "X"}, pb.ListTasksRequest, ["Task.View", '"X"', "BASIC"]),
        ({"requests": [{}, {"task": {"name": 5}}]}, pb.BatchCreateTasksRequest, ["'requests[1].task.name'"]),
        ({"task": "x"}, pb.CreateTaskRequest, ["'task'", "Expected a JSON object"]),
        ({"updateMask": "a_b"}, pb.UpdateQueueRequest, ["'update_mask'", "Illegal field mask"]),
        ({"task": {"colour": 1}}, pb.CreateTaskRequest, ["Unknown name \"colour\" at 'task'"]),
    ],
)
def test_json_errors_name_the_field_and_value(
    data: dict[str, Any], request_class: Any, fragments: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_json(data, request_class())
    for fragment in fragments:
        assert fragment in caught.value.message
    assert "Failed to parse" not in caught.value.message


def test_unknown_query_parameter_wording() -> None:
    with pytest.raises(InvalidArgument, match='Unknown name "foo": Cannot bind query parameter'):
        parse_json({"foo": "1"}, pb.ListTasksRequest(), query=True)


# -- rate-limited log --------------------------------------------------------------------------


def test_throttled_log(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    log = ThrottledLog(logging.getLogger("test.throttled"), lambda: now[0], interval_s=10)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        assert log.warning("bad %s", "one")
        for _ in range(5):
            now[0] += 1
            assert not log.warning("bad %s", "again")
        assert log.suppressed == 5
        now[0] += 10
        assert log.warning("bad %s", "later")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "bad one"
    assert messages[1].startswith("bad later (5 similar events were not logged")
    assert len(messages) == 2 and log.suppressed == 0


# -- Content-Encoding and messages on the wire ----------------------------------------------------


def test_bodies_are_decoded_by_every_listed_coding_and_bounded() -> None:
    data = b'{"name": "q"}'
    assert decode_body(data, "", 100) == data
    assert decode_body(gzip.compress(data), "gzip", 100) == data
    assert decode_body(zlib.compress(gzip.compress(data)), "gzip, deflate", 100) == data
    assert decode_body(zlib.compress(data)[2:-4], "deflate", 100) == data
    with pytest.raises(PayloadTooLarge):
        decode_body(gzip.compress(b"x" * 101), "gzip", 100)
    with pytest.raises(InvalidArgument, match="incomplete"):
        decode_body(gzip.compress(data)[:-10], "gzip", 100)
    with pytest.raises(InvalidArgument, match="not supported"):
        decode_body(data, "zstd", 100)


def test_messages_on_the_wire_are_utf8_and_bounded() -> None:
    assert wire_message(InvalidArgument('Invalid value "\ud800".')) == 'Invalid value "\\ud800".'
    long = wire_message(InvalidArgument("\U000d3994" * 10_000))
    assert len(long.encode()) <= MAX_MESSAGE_BYTES and long.endswith("…")
