"""Hostile input against a real server: every class of bad input is a 4xx (never INTERNAL,
UNKNOWN or 500) with a message naming what was wrong, the server keeps answering, and the
log holds no traceback."""

import base64
import gzip
import http.client
import json
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.cloud import tasks_v2

from opentasks.api import messages as pb
from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/bad-input/locations/us-central1"
QUEUE = f"{PARENT}/queues/q"
SERVICE = "/google.cloud.tasks.v2.CloudTasks/"


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened


@pytest.fixture(scope="module", autouse=True)
def queue(server: ServerProcess) -> str:
    client = server.client()
    client.create_queue(parent=PARENT, queue={"name": QUEUE})
    client.pause_queue(name=QUEUE)
    for _ in range(3):
        client.create_task(parent=QUEUE, task={"http_request": {"url": "https://example.com/"}})
    return QUEUE


def grpc_error(channel: grpc.Channel, method: str, request: Any) -> grpc.RpcError:
    """The error of a call that must fail; ``request`` is a message or raw bytes."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    call = channel.unary_unary(SERVICE + method)
    with pytest.raises(grpc.RpcError) as caught:
        call(data, timeout=10)
    return caught.value


def assert_invalid(error: grpc.RpcError, *fragments: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    for fragment in fragments:
        assert fragment in (error.details() or ""), error.details()


def still_answers(server: ServerProcess) -> None:
    assert server.client().get_queue(name=QUEUE).name == QUEUE
    assert rest(server, "GET", f"/v2/{QUEUE}")[0] == 200


def no_traceback_in_log(server: ServerProcess) -> None:
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "Unhandled exception" not in log, log[-3000:]


# -- gRPC ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "data", "type_name"),
    [
        ("CreateTask", b"\xff\xff\xff\xff", "google.cloud.tasks.v2.CreateTaskRequest"),
        ("ListQueues", b"\x0a\x05ab", "google.cloud.tasks.v2.ListQueuesRequest"),  # truncated
        ("CreateQueue", b"\x0a\x02\xff\xfe", "google.cloud.tasks.v2.CreateQueueRequest"),  # not UTF-8
        ("GetTask", b"\x12" * 50, "google.cloud.tasks.v2.GetTaskRequest"),
    ],
)
def test_grpc_malformed_messages(
    server: ServerProcess, channel: grpc.Channel, method: str, data: bytes, type_name: str
) -> None:
    for _ in range(20):  # a burst: answered each time, logged at most once
        error = grpc_error(channel, method, data)
        assert_invalid(error, f"The request is not a valid {type_name} message.")
    still_answers(server)
    no_traceback_in_log(server)


def http_task(**fields: Any) -> Any:
    request = pb.CreateTaskRequest(parent=QUEUE)
    request.task.http_request.url = "https://example.com/x"
    for path, value in fields.items():
        target = request.task
        *parents, leaf = path.split(".")
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)
    return request


def queue_request(**fields: Any) -> Any:
    request = pb.CreateQueueRequest(parent=PARENT)
    request.queue.name = f"{PARENT}/queues/bad"
    for path, value in fields.items():
        target = request.queue
        *parents, leaf = path.split(".")
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)
    return request


def app_engine_task() -> Any:
    request = pb.CreateTaskRequest(parent=QUEUE)
    request.task.app_engine_http_request.relative_uri = "/x"
    request.task.app_engine_http_request.http_method = 42
    return request


@pytest.mark.parametrize(
    ("method", "build", "fragment"),
    [
        ("CreateTask", lambda: http_task(**{"http_request.http_method": 42}), "HttpRequest.httpMethod: 42"),
        ("CreateTask", app_engine_task, "AppEngineHttpRequest.httpMethod: 42"),
        (
            "CreateQueue",
            lambda: queue_request(**{"http_target.http_method": 42}),
            "HttpTarget.httpMethod: 42",
        ),
        (
            "CreateQueue",
            lambda: queue_request(**{"http_target.uri_override.scheme": 42}),
            "UriOverride.scheme: 42",
        ),
        (
            "CreateQueue",
            lambda: queue_request(**{"http_target.uri_override.uri_override_enforce_mode": 42}),
            "UriOverride.uriOverrideEnforceMode: 42",
        ),
        (
            "CreateTask",
            lambda: http_task(**{"dispatch_deadline.seconds": 10**15}),
            "Task.dispatchDeadline",
        ),
        (
            "CreateTask",
            lambda: http_task(**{"retry_config.min_backoff.seconds": 10**15}),
            "RetryConfig.minBackoff",
        ),
        (
            "CreateQueue",
            lambda: queue_request(**{"retry_config.max_backoff.seconds": 10**15}),
            "RetryConfig.maxBackoff",
        ),
        (
            "CreateQueue",
            lambda: queue_request(**{"retry_config.max_retry_duration.seconds": -(10**15)}),
            "RetryConfig.maxRetryDuration",
        ),
        ("CreateTask", lambda: http_task(**{"schedule_time.seconds": 10**15}), "Task.scheduleTime"),
        ("CreateTask", lambda: http_task(**{"schedule_time.seconds": -(10**15)}), "Task.scheduleTime"),
        ("CreateTask", lambda: http_task(**{"schedule_time.nanos": -5}), "Task.scheduleTime"),
        (
            "CreateQueue",
            lambda: queue_request(**{"rate_limits.max_dispatches_per_second": float("nan")}),
            "RateLimits.maxDispatchesPerSecond",
        ),
        (
            "CreateQueue",
            lambda: queue_request(**{"stackdriver_logging_config.sampling_ratio": float("inf")}),
            "StackdriverLoggingConfig.samplingRatio",
        ),
    ],
)
def test_grpc_values_out_of_range(
    server: ServerProcess, channel: grpc.Channel, method: str, build: Callable[[], Any], fragment: str
) -> None:
    assert_invalid(grpc_error(channel, method, build()), "Invalid value for", fragment)
    still_answers(server)
    no_traceback_in_log(server)


def test_schedule_time_at_the_edges_of_the_range(server: ServerProcess, channel: grpc.Channel) -> None:
    # Year 1 is a valid (past) time: accepted (as "now"); year 9999 is too far ahead: the usual message.
    call = channel.unary_unary(SERVICE + "CreateTask", response_deserializer=pb.Task.FromString)
    past = call(http_task(**{"schedule_time.seconds": -62_135_596_800}).SerializeToString(), timeout=10)
    assert past.schedule_time.seconds > 0
    error = grpc_error(channel, "CreateTask", http_task(**{"schedule_time.seconds": 253_402_300_799}))
    assert_invalid(error, "too far in the future")
    no_traceback_in_log(server)


def crafted_token(cursor: Any) -> str:
    raw = json.dumps({"c": cursor, "f": "0" * 16}).encode()
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize("cursor", [10**20, -1, "x", None, [1]])
def test_crafted_page_tokens(server: ServerProcess, channel: grpc.Channel, cursor: Any) -> None:
    token = crafted_token(cursor)
    for method, request in (
        ("ListTasks", pb.ListTasksRequest(parent=QUEUE, page_token=token)),
        ("ListQueues", pb.ListQueuesRequest(parent=PARENT, page_token=token)),
    ):
        assert_invalid(grpc_error(channel, method, request), "page_token")
    code, body = rest(server, "GET", f"/v2/{QUEUE}/tasks?pageToken={token}")
    assert code == 400 and "page_token" in body["error"]["message"]
    no_traceback_in_log(server)


def test_genuine_page_tokens_still_work(server: ServerProcess) -> None:
    client = server.client()
    pages = client.list_tasks(request={"parent": QUEUE, "page_size": 1}).pages
    assert sum(len(page.tasks) for page in pages) >= 3
    tampered = client.list_tasks(request={"parent": QUEUE, "page_size": 1}).next_page_token
    tampered = tampered[:-2] + ("AA" if not tampered.endswith("AA") else "BB")
    code, body = rest(server, "GET", f"/v2/{QUEUE}/tasks?pageToken={tampered}")
    assert code == 400 and "page_token" in body["error"]["message"]


# -- REST ------------------------------------------------------------------------------------


def rest(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A raw HTTP call on its own connection (the path is sent exactly as given)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        all_headers = {"Content-Type": "application/json"} | (headers or {})
        if body is not None:
            all_headers["Content-Length"] = str(len(body))
        for key, value in all_headers.items():
            connection.putheader(key, value)
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data) if data else {}
        except ValueError:  # aiohttp's own plain-text answer to an unparsable HTTP request
            return response.status, {"text": data.decode(errors="replace")}
    finally:
        connection.close()


def assert_rest_error(result: tuple[int, dict[str, Any]], code: int, *fragments: str) -> None:
    status, body = result
    assert status == code, (status, body)
    assert body["error"]["code"] == code and body["error"]["status"] != "INTERNAL"
    for fragment in fragments:
        assert fragment in body["error"]["message"], body["error"]["message"]


def test_rest_enum_numbers_and_values_out_of_range(server: ServerProcess) -> None:
    tasks = f"/v2/{QUEUE}/tasks"
    task: dict[str, Any] = {"httpRequest": {"url": "https://example.com/", "httpMethod": 42}}
    assert_rest_error(rest(server, "POST", tasks, json.dumps({"task": task}).encode()), 400, "httpMethod: 42")
    queue = {"name": f"{PARENT}/queues/r", "httpTarget": {"uriOverride": {"scheme": 7}}}
    assert_rest_error(
        rest(server, "POST", f"/v2/{PARENT}/queues", json.dumps(queue).encode()), 400, "UriOverride.scheme: 7"
    )
    rate = {"name": f"{PARENT}/queues/r", "rateLimits": {"maxDispatchesPerSecond": "NaN"}}
    assert_rest_error(rest(server, "POST", f"/v2/{PARENT}/queues", json.dumps(rate).encode()), 400, "nan")
    big = {"name": f"{PARENT}/queues/r", "rateLimits": {"maxConcurrentDispatches": 2**40}}
    assert_rest_error(
        rest(server, "POST", f"/v2/{PARENT}/queues", json.dumps(big).encode()),
        400,
        "'queue.rate_limits.max_concurrent_dispatches' (TYPE_INT32), 1099511627776",
    )
    assert_rest_error(rest(server, "GET", f"{tasks}?pageSize=99999999999"), 400, "'page_size'", "99999999999")
    still_answers(server)
    no_traceback_in_log(server)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("scheduleTime", "+PT1H", "'task.schedule_time' (type.googleapis.com/google.protobuf.Timestamp)"),
        ("scheduleTime", "10000-01-01T00:00:00Z", "Illegal timestamp format"),
        ("dispatchDeadline", "1000000000000000s", "'task.dispatch_deadline'"),
        ("dispatchDeadline", "30", "Illegal duration format"),
    ],
)
def test_rest_unparsable_times(server: ServerProcess, field: str, value: str, fragment: str) -> None:
    task = {"httpRequest": {"url": "https://example.com/"}, field: value}
    result = rest(server, "POST", f"/v2/{QUEUE}/tasks", json.dumps({"task": task}).encode())
    assert_rest_error(result, 400, fragment, json.dumps(value))
    assert "does not match format" not in result[1]["error"]["message"]


def test_rest_bodies(server: ServerProcess) -> None:
    queues = f"/v2/{PARENT}/queues"
    big = b'{"name": "' + b"x" * (9 * 2**20) + b'"}'
    status, body = rest(server, "POST", queues, big)
    assert status == 413 and "exceeds the limit" in body["error"]["message"]
    assert body["error"]["code"] == 413
    assert_rest_error(rest(server, "POST", queues, b'{"name": "\xff\xfe"}'), 400, "not valid utf-8")
    assert_rest_error(
        rest(server, "POST", queues, b"{}", {"Content-Type": "application/json; charset=klingon"}),
        400,
        'Unsupported charset "klingon"',
    )
    assert_rest_error(rest(server, "POST", queues, b"[" * 100_000), 400, "nested too deeply")
    assert_rest_error(rest(server, "POST", queues, b'{"a":' * 100_000), 400, "Invalid JSON payload")
    assert_rest_error(rest(server, "POST", queues, b"[1, 2]"), 400, "must be a JSON object")
    assert_rest_error(rest(server, "POST", queues, b"42"), 400, "must be a JSON object")
    assert_rest_error(rest(server, "POST", queues, b'{"rateLimits": 5}'), 400, "'queue.rate_limits'")
    for encoding in ("gzip", "deflate"):
        result = rest(server, "POST", queues, b"not compressed at all", {"Content-Encoding": encoding})
        assert_rest_error(result, 400, f"not valid {encoding} data")
    endless = b"[" * 100_000 + b"]" * 100_000  # read as raw deflate, it never reaches its end
    result = rest(server, "POST", queues, endless, {"Content-Encoding": "deflate"})
    assert_rest_error(result, 400, "the stream is incomplete")
    bomb = gzip.compress(b" " * (9 * 2**20))
    assert_rest_error(
        rest(server, "POST", queues, bomb, {"Content-Encoding": "gzip"}), 413, "exceeds the limit"
    )
    assert_rest_error(
        rest(server, "POST", queues, b"{}", {"Content-Encoding": "br"}), 400, '"br" is not supported'
    )
    members = gzip.compress(b"", mtime=0) * 150_000  # costly if each member copied the rest
    result = rest(server, "POST", queues, members, {"Content-Encoding": "gzip"})
    assert_rest_error(result, 400, "streams")
    for charset in ("rot13", "base64", "punycode"):  # codecs that are no text encodings
        result = rest(server, "POST", queues, b"{}", {"Content-Type": f"application/json; charset={charset}"})
        assert_rest_error(result, 400, "charset" if charset != "punycode" else "punycode")
    body = b'{"task": {"httpRequest": {"httpMethod": 1e400}}}'
    assert_rest_error(rest(server, "POST", f"/v2/{PARENT}/queues/q/tasks", body), 400, "http_method")
    for number, (encoding, encode) in enumerate(
        [
            ("gzip", gzip.compress),
            ("gzip", lambda data: gzip.compress(data[:5]) + gzip.compress(data[5:])),  # two members
            ("deflate", zlib.compress),
            ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as many clients send
            ("gzip, identity", gzip.compress),
        ]
    ):
        good = json.dumps({"name": f"{PARENT}/queues/zipped-{number}"}).encode()
        assert rest(server, "POST", queues, encode(good), {"Content-Encoding": encoding})[0] == 200
    still_answers(server)
    no_traceback_in_log(server)


def test_rest_query_parameters_and_paths(server: ServerProcess) -> None:
    tasks = f"/v2/{QUEUE}/tasks"
    assert_rest_error(
        rest(server, "GET", f"{tasks}?pageSize=1&pageSize=2"), 400, '"pageSize" is given 2 times'
    )
    assert_rest_error(rest(server, "GET", f"{tasks}?colour=blue"), 400, 'Unknown name "colour"')
    assert_rest_error(rest(server, "GET", f"{tasks}?responseView=HUGE"), 400, "'response_view'", '"HUGE"')
    assert_rest_error(rest(server, "GET", f"{tasks}?%24alt=proto"), 400, "JSON only")
    assert_rest_error(
        rest(server, "GET", f"{tasks}?%24alt=json%3Benum-encoding%3Dwords"), 400, "enum-encoding"
    )
    assert rest(server, "GET", f"{tasks}?%24alt=json%3Benum-encoding%3Dint&%24unknown=1")[0] == 200
    assert_rest_error(rest(server, "GET", f"/v2/{PARENT}/queues/q%2Ftasks%2Fx"), 400, "encoded '/'")
    assert_rest_error(rest(server, "GET", f"/v2/{PARENT}/queues/%FF"), 400, "not UTF-8")
    assert_rest_error(rest(server, "GET", f"/v2/{PARENT}/queues/bad%20name"), 400, "Queue name")
    assert_rest_error(rest(server, "GET", "/v2/projects/p/locations/l%00/queues"), 400)
    assert_rest_error(rest(server, "GET", "/v2//%0D%0A/"), 404, "No Cloud Tasks v2 method")
    assert_rest_error(rest(server, "GET", "/%0A"), 404, "No Cloud Tasks v2 method")
    still_answers(server)
    no_traceback_in_log(server)


def test_rest_documented_parameters_and_snake_case_masks(server: ServerProcess) -> None:
    assert rest(server, "GET", "/v2/projects/bad-input/locations?extraLocationTypes=x")[0] == 200
    assert rest(server, "GET", f"/v2/{QUEUE}?readMask=name,state")[0] == 200
    assert rest(server, "GET", f"/v2/{PARENT}/queues?readMask=name")[0] == 200
    name = f"{PARENT}/queues/masked"
    body = json.dumps(
        {"name": name, "retryConfig": {"maxAttempts": 7}, "rateLimits": {"maxConcurrentDispatches": 9}}
    )
    status, queue = rest(server, "PATCH", f"/v2/{name}?updateMask=retry_config.max_attempts", body.encode())
    assert status == 200 and queue["retryConfig"]["maxAttempts"] == 7
    assert queue["rateLimits"]["maxConcurrentDispatches"] != 9  # not in the mask
    body = json.dumps(
        {"name": name, "retryConfig": {"maxAttempts": 8}, "updateMask": "retry_config.max_attempts"}
    )
    status, queue = rest(server, "PATCH", f"/v2/{name}", body.encode())
    assert status == 200 and queue["retryConfig"]["maxAttempts"] == 8, queue
    body = json.dumps({"name": name, "rateLimits": {"maxConcurrentDispatches": 9}})
    mask = "update_mask=rate_limits.max_concurrent_dispatches"
    status, queue = rest(server, "PATCH", f"/v2/{name}?{mask}", body.encode())
    assert status == 200 and queue["rateLimits"]["maxConcurrentDispatches"] == 9, queue
    cmek = f"/v2/{PARENT}/cmekConfig?updateMask=kms_key"
    status, config = rest(server, "PATCH", cmek, json.dumps({"kmsKey": ""}).encode())
    assert status == 200, config


def test_official_rest_client_with_snake_case_mask(server: ServerProcess) -> None:
    client = server.client("rest")
    name = f"{PARENT}/queues/rest-masked"
    client.create_queue(parent=PARENT, queue={"name": name})
    updated = client.update_queue(
        queue={"name": name, "retry_config": {"max_attempts": 3}},
        update_mask={"paths": ["retry_config.max_attempts"]},
    )
    assert updated.retry_config.max_attempts == 3
    assert isinstance(updated, tasks_v2.Queue)


def test_malformed_requests_are_logged_once_per_burst(server: ServerProcess, channel: grpc.Channel) -> None:
    for _ in range(50):
        grpc_error(channel, "DeleteQueue", b"\xff")
    assert server.log_path is not None
    lines = [line for line in server.log_path.read_text().splitlines() if "is not a valid" in line]
    assert len(lines) <= 1, lines  # the module's earlier bursts fall in the same minute


def test_unparsable_http_requests_are_logged_without_traceback(server: ServerProcess) -> None:
    for _ in range(5):
        status, _ = rest(server, "GET", f"/v2/{PARENT}/queues?" + "a" * 20_000)
        assert status == 400
    status, _ = rest(server, "GET", f"/v2/{QUEUE}", headers={"X-Big": "b" * 20_000})
    assert status == 400
    still_answers(server)
    no_traceback_in_log(server)
