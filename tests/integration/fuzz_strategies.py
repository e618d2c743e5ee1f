"""Hypothesis strategies for fuzzing the Cloud Tasks v2 API with extreme and invalid requests.

Requests are built as *specs*: nested dicts of field name -> value (a scalar, a nested spec, a
list of specs for repeated messages, or a dict for map fields). :func:`fill` writes a spec into a
raw protobuf message without any validation, so values the client library would refuse (unknown
enum numbers, out-of-range nanos, NaN rates, ...) still reach the server.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from google.cloud import tasks_v2
from hypothesis import strategies as st

PROJECT = "fuzz-project"
LOCATION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
# Queues the module creates before fuzzing; their tasks can only go to a closed port on 127.0.0.1.
TASK_QUEUES = ("fuzz-tasks-running", "fuzz-tasks-paused")
# Queues that UpdateQueue may change (never the task queues above).
UPDATE_QUEUES = ("fuzz-update-a", "fuzz-update-b")

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_DURATION_S = 315_576_000_000  # the largest Duration protobuf allows (10 000 years)
YEAR_1_S = -62_135_596_800  # 0001-01-01T00:00:00Z
YEAR_9999_END_S = 253_402_300_799  # 9999-12-31T23:59:59Z

# ---------------------------------------------------------------- scalars

WEIRD_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "x\r\nX-Injected: 1",
    "\t",
    "\x7f",
    "\u2028",
    "\ufeff",
    "é",
    "日本語",
    "🙂",
    "\U0010ffff",
    "..",
    ".",
    "/",
    "%2F",
    "%00",
    "%",
    "%zz",
    "a/b",
    "*",
    "-",
    "A" * 100,
    "a" * 500,
    "Ω" * 1000,
    "null",
    "NaN",
    "-1",
    "0x10",
    "\uff11\uff12\uff13",  # full-width digits
    "${jndi:ldap://127.0.0.1/a}",
    "'; DROP TABLE tasks; --",
    '{"a": 1}',
)

weird_text = st.one_of(
    st.sampled_from(WEIRD_STRINGS),
    st.builds(lambda: "x" * 70_000),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), max_size=40),
    st.text(alphabet=st.characters(categories=("Cc", "Zs", "Zl", "Zp", "Cf")), max_size=20),
    st.builds(lambda ch, n: ch * n, st.characters(), st.integers(1000, 20_000)),
)

int32 = st.one_of(
    st.sampled_from((0, 1, -1, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1, 100, 1000, 5000)),
    st.integers(INT32_MIN, INT32_MAX),
)
int64 = st.one_of(
    st.sampled_from((0, -1, 1, INT64_MIN, INT64_MAX, 2**53, -(2**53), 2**32, 65535, 65536, 80, 443)),
    st.integers(INT64_MIN, INT64_MAX),
)
# Enum fields are open in proto3: any int32 goes on the wire.
enum_number = st.one_of(st.integers(-2, 12), st.sampled_from((INT32_MIN, INT32_MAX, 99, 1000)), int32)
rate = st.one_of(
    st.sampled_from(
        (math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e-300, 5e-324, 1e308, 500.0, 500.0001, 1e9, 0.5)
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _seconds() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from(
            (
                0,
                -1,
                1,
                MAX_DURATION_S,
                MAX_DURATION_S + 1,
                -MAX_DURATION_S,
                -MAX_DURATION_S - 1,
                YEAR_1_S,
                YEAR_1_S - 1,
                YEAR_9999_END_S,
                YEAR_9999_END_S + 1,
                INT64_MAX,
                INT64_MIN,
                2**31,
                86_400 * 31,
                1800,
                1801,
            )
        ),
        st.integers(INT64_MIN, INT64_MAX),
    )


nanos = st.one_of(
    st.sampled_from((0, 1, -1, 999_999_999, 1_000_000_000, -1_000_000_000, INT32_MIN, INT32_MAX)), int32
)
duration = st.fixed_dictionaries({}, optional={"seconds": _seconds(), "nanos": nanos})
timestamp = st.fixed_dictionaries({}, optional={"seconds": _seconds(), "nanos": nanos})
body_bytes = st.one_of(
    st.binary(max_size=64),
    st.sampled_from((b"", b"\x00" * 1024, b"\xff\xfe" * 100)),
    st.sampled_from((100_000, 1024 * 1024 + 1)).map(lambda n: b"y" * n),
)

# ---------------------------------------------------------------- names


def _queue_name(queue_id: str) -> str:
    return f"{PARENT}/queues/{queue_id}"


queue_ids = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9-]{1,100}\Z"),
    st.sampled_from(("q", "-", "a" * 101, "a" * 100, "Q_1", "q.1", "q%2F1", "q/tasks/t")),
    weird_text,
)
location_names = st.one_of(
    st.just(PARENT),
    st.sampled_from(
        (
            "",
            "projects",
            "projects/",
            f"projects/{PROJECT}",
            f"projects/{PROJECT}/locations",
            f"projects/{PROJECT}/locations/",
            f"projects//locations/{LOCATION}",
            f"projects/{PROJECT}/locations/{LOCATION}/",
            f"projects/{PROJECT}/locations/{LOCATION}/queues",
            f"projects/example.com:{PROJECT}/locations/{LOCATION}",
            f"projects/../locations/{LOCATION}",
            f"projects/{'p' * 1000}/locations/{LOCATION}",
            f"PROJECTS/{PROJECT}/LOCATIONS/{LOCATION}",
        )
    ),
    st.builds(lambda p, loc: f"projects/{p}/locations/{loc}", weird_text, weird_text),
)
queue_names = st.one_of(
    st.sampled_from([_queue_name(q) for q in (*TASK_QUEUES, *UPDATE_QUEUES)]),
    st.builds(_queue_name, queue_ids),
    st.builds(lambda parent, q: f"{parent}/queues/{q}", location_names, queue_ids),
    weird_text,
)
task_ids = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9_-]{1,500}\Z"),
    st.sampled_from(("t", "a" * 501, "a" * 500, "t.1", "t/1", "t:run")),
    weird_text,
)
task_names = st.one_of(
    st.just(""),
    st.builds(lambda q, t: f"{_queue_name(q)}/tasks/{t}", st.sampled_from(TASK_QUEUES), task_ids),
    # a task name in another queue than the request's parent
    st.builds(lambda q, t: f"{q}/tasks/{t}", queue_names, task_ids),
    weird_text,
)
task_parents = st.one_of(
    st.sampled_from([_queue_name(q) for q in TASK_QUEUES]),
    st.sampled_from([_queue_name(q) for q in TASK_QUEUES]),
    queue_names,
)

# ---------------------------------------------------------------- URLs and headers

CLOSED = "127.0.0.1:{port}"  # formatted with the module's closed port


def urls(closed_port: int) -> st.SearchStrategy[str]:
    base = f"http://127.0.0.1:{closed_port}"
    return st.one_of(
        st.builds(lambda p: f"{base}/{p}", weird_text),
        st.sampled_from(
            (
                base,
                f"{base}/",
                f"https://127.0.0.1:{closed_port}/x",
                f"http://127.0.0.1:{closed_port}/a?b=c#frag",
                f"http://127.0.0.\uff11:{closed_port}/",  # full-width digit
                "http://\uff11\uff12\uff17.0.0.1/",
                "http://127.0.0.1:" + "\uff11" * 4 + "/",
                "http://exämple.com/",
                "http://xn--exmple-cua.com/",
                "http://日本.jp/",
                "http://[::1]/",
                "http://[::1/",
                "http://127.0.0.1:99999/",
                "http://127.0.0.1:-1/",
                "http://127.0.0.1:0/",
                "http://user:pass@127.0.0.1:1/",
                "http://169.254.169.254/computeMetadata/v1/",
                "http://metadata.google.internal/",
                "http://2130706433/",
                "http://0x7f.1/",
                "http:///path",
                "http://",
                "http:",
                "//127.0.0.1/",
                "ftp://127.0.0.1/",
                "file:///etc/passwd",
                "javascript:alert(1)",
                "127.0.0.1/x",
                "",
                "http://127.0.0.1\r\nHost: evil/",
                "http://127.0.0.1/\x00",
                "http://" + "a" * 300 + "/",
                f"{base}/{'p' * 5000}",
            )
        ),
        st.builds(lambda h: f"http://{h}:{closed_port}/", weird_text),
        weird_text,
    )


header_names = st.one_of(
    st.sampled_from(
        (
            "Content-Type",
            "content-type",
            "User-Agent",
            "Host",
            "X-Google-Foo",
            "X-AppEngine-Foo",
            "X-CloudTasks-TaskName",
            "Authorization",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "",
            " ",
            "X Bad",
            "X:Bad",
            "X-\r\nInjected",
            "X-\x00",
            "X-é",
        )
    ),
    st.builds(lambda: "X-" + "h" * 10_000),
    weird_text,
)
header_values = st.one_of(
    st.sampled_from(("", "text/plain; charset=\x00", "a\r\nb", "\x00", "é", "gzip")),
    st.builds(lambda: "v" * 100_000),
    weird_text,
)
headers = st.one_of(
    st.dictionaries(header_names, header_values, max_size=6),
    st.builds(lambda n: {f"X-H{i}": "v" * 64 for i in range(n)}, st.integers(500, 5000)),
)


def http_requests(closed_port: int) -> st.SearchStrategy[dict[str, Any]]:
    token = st.fixed_dictionaries(
        {}, optional={"service_account_email": weird_text, "scope": weird_text, "audience": weird_text}
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "url": urls(closed_port),
            "http_method": enum_number,
            "headers": headers,
            "body": body_bytes,
            "oauth_token": token.map(lambda d: {k: v for k, v in d.items() if k != "audience"}),
            "oidc_token": token.map(lambda d: {k: v for k, v in d.items() if k != "scope"}),
        },
    )


routing = st.fixed_dictionaries(
    {}, optional={"service": weird_text, "version": weird_text, "instance": weird_text, "host": weird_text}
)
app_engine_requests = st.fixed_dictionaries(
    {},
    optional={
        "http_method": enum_number,
        "app_engine_routing": routing,
        "relative_uri": st.one_of(weird_text, st.builds(lambda s: "/" + s, weird_text)),
        "headers": headers,
        "body": body_bytes,
    },
)


def tasks(closed_port: int) -> st.SearchStrategy[dict[str, Any]]:
    target = st.one_of(
        st.fixed_dictionaries({"http_request": http_requests(closed_port)}),
        st.fixed_dictionaries({"app_engine_http_request": app_engine_requests}),
        st.just({}),
    )
    rest = st.fixed_dictionaries(
        {},
        optional={
            "name": task_names,
            "schedule_time": timestamp,
            "create_time": timestamp,
            "dispatch_deadline": duration,
            "dispatch_count": int32,
            "response_count": int32,
            "view": enum_number,
        },
    )
    return st.builds(lambda a, b: {**a, **b}, target, rest)


# ---------------------------------------------------------------- queues

rate_limits = st.fixed_dictionaries(
    {},
    optional={"max_dispatches_per_second": rate, "max_burst_size": int32, "max_concurrent_dispatches": int32},
)
retry_config = st.fixed_dictionaries(
    {},
    optional={
        "max_attempts": int32,
        "max_retry_duration": duration,
        "min_backoff": duration,
        "max_backoff": duration,
        "max_doublings": int32,
    },
)


def http_targets(closed_port: int) -> st.SearchStrategy[dict[str, Any]]:
    uri_override = st.fixed_dictionaries(
        {},
        optional={
            "scheme": enum_number,
            "host": st.one_of(st.just("127.0.0.1"), weird_text),
            "port": int64,
            "path_override": st.fixed_dictionaries({}, optional={"path": weird_text}),
            "query_override": st.fixed_dictionaries({}, optional={"query_params": weird_text}),
            "uri_override_enforce_mode": enum_number,
        },
    )
    header_override = st.builds(lambda k, v: {"header": {"key": k, "value": v}}, header_names, header_values)
    return st.fixed_dictionaries(
        {},
        optional={
            "uri_override": uri_override,
            "http_method": enum_number,
            "header_overrides": st.lists(header_override, max_size=5),
            "oidc_token": st.fixed_dictionaries(
                {}, optional={"service_account_email": weird_text, "audience": weird_text}
            ),
        },
    )


def queues(closed_port: int, names: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "name": names,
            "app_engine_routing_override": routing,
            "http_target": http_targets(closed_port),
            "rate_limits": rate_limits,
            "retry_config": retry_config,
            "state": enum_number,
            "purge_time": timestamp,
            "stackdriver_logging_config": st.fixed_dictionaries({}, optional={"sampling_ratio": rate}),
        },
    )


QUEUE_MASK_PATHS = (
    "name",
    "app_engine_routing_override",
    "app_engine_routing_override.service",
    "http_target",
    "http_target.uri_override",
    "http_target.header_overrides",
    "rate_limits",
    "rate_limits.max_dispatches_per_second",
    "rate_limits.max_burst_size",
    "rate_limits.max_concurrent_dispatches",
    "retry_config",
    "retry_config.max_attempts",
    "retry_config.min_backoff",
    "retry_config.max_backoff",
    "retry_config.max_retry_duration",
    "retry_config.max_doublings",
    "state",
    "purge_time",
    "stackdriver_logging_config",
    "stackdriver_logging_config.sampling_ratio",
    # invalid ones
    "",
    "*",
    "rateLimits",
    "rateLimits.maxDispatchesPerSecond",
    "retryConfig.minBackoff",
    "rate_limits.",
    ".rate_limits",
    "rate_limits..max_burst_size",
    "no_such_field",
    "rate_limits.max_burst_size.x",
    "tasks",
    "name.x",
)
mask_paths = st.lists(st.one_of(st.sampled_from(QUEUE_MASK_PATHS), weird_text), max_size=6)


# ---------------------------------------------------------------- page tokens


def _crafted_token(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
page_tokens = st.one_of(
    st.just(""),
    st.binary(max_size=64).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    st.dictionaries(st.text(max_size=10), json_scalars, max_size=4).map(_crafted_token),
    st.lists(json_scalars, max_size=4).map(_crafted_token),
    json_scalars.map(_crafted_token),
    st.sampled_from(("!!!", "====", "a", "ab", "abc=", "%", "null", "e30", "W10", "MA", "bnVsbA")),
    weird_text,
)

# ---------------------------------------------------------------- requests (specs)


def create_queue_requests(closed_port: int) -> st.SearchStrategy[dict[str, Any]]:
    fresh = st.builds(lambda parent, q: f"{parent}/queues/fuzz-new-{q}", location_names, queue_ids)
    names = st.one_of(fresh, st.builds(_queue_name, queue_ids.map(lambda q: f"fuzz-new-{q}")))
    return st.fixed_dictionaries({}, optional={"parent": location_names, "queue": queues(closed_port, names)})


def update_queue_requests(closed_port: int) -> st.SearchStrategy[dict[str, Any]]:
    names = st.one_of(
        st.sampled_from([_queue_name(q) for q in UPDATE_QUEUES]),
        st.builds(_queue_name, queue_ids.map(lambda q: f"fuzz-upd-{q}")),
        weird_text,
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "queue": queues(closed_port, names),
            "update_mask": st.fixed_dictionaries({"paths": mask_paths}),
        },
    )


def create_task_requests(closed_port: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {}, optional={"parent": task_parents, "task": tasks(closed_port), "response_view": enum_number}
    )


list_tasks_requests = st.fixed_dictionaries(
    {},
    optional={
        "parent": task_parents,
        "response_view": enum_number,
        "page_size": int32,
        "page_token": page_tokens,
    },
)
list_queues_requests = st.fixed_dictionaries(
    {},
    optional={
        "parent": location_names,
        "filter": weird_text,
        "page_size": int32,
        "page_token": page_tokens,
    },
)

REQUEST_CLASSES = {
    "CreateQueue": tasks_v2.CreateQueueRequest,
    "UpdateQueue": tasks_v2.UpdateQueueRequest,
    "CreateTask": tasks_v2.CreateTaskRequest,
    "ListTasks": tasks_v2.ListTasksRequest,
    "ListQueues": tasks_v2.ListQueuesRequest,
}


def rpc_requests(closed_port: int) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(RPC name, request spec) for the five fuzzed RPCs."""
    return st.one_of(
        create_queue_requests(closed_port).map(lambda r: ("CreateQueue", r)),
        update_queue_requests(closed_port).map(lambda r: ("UpdateQueue", r)),
        create_task_requests(closed_port).map(lambda r: ("CreateTask", r)),
        list_tasks_requests.map(lambda r: ("ListTasks", r)),
        list_queues_requests.map(lambda r: ("ListQueues", r)),
    )


def fill(message: Any, spec: dict[str, Any]) -> Any:
    """Write ``spec`` into the raw protobuf ``message`` (no validation beyond the wire types)."""
    for key, value in spec.items():
        field = message.DESCRIPTOR.fields_by_name[key]
        target = getattr(message, key)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for k, v in value.items():
                target[k] = v
        elif field.is_repeated and field.message_type is not None:
            for item in value:
                fill(target.add(), item)
        elif field.is_repeated:
            target.extend(value)
        elif field.message_type is not None:
            target.SetInParent()
            fill(target, value)
        else:
            setattr(message, key, value)
    return message


def build(rpc: str, spec: dict[str, Any]) -> Any:
    """The raw protobuf request of ``rpc`` holding ``spec``."""
    return fill(REQUEST_CLASSES[rpc].pb()(), spec)


# ---------------------------------------------------------------- JSON (REST)

json_numbers = st.one_of(
    st.sampled_from(
        (
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-1e400",
            "1e-400",
            "9" * 400,
            "-0",
            "0.5",
            "1.0",
            "2147483648",
            "-2147483649",
            "9223372036854775808",
            "18446744073709551616",
        )
    ),
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
duration_strings = st.one_of(
    st.sampled_from(
        (
            "",
            "s",
            "1",
            "1s",
            "-1s",
            "1.5s",
            "0.000000001s",
            "0.0000000001s",
            "1e3s",
            "315576000000s",
            "315576000001s",
            "-315576000001s",
            "9223372036854775807s",
            "99999999999999999999999s",
            "1.s",
            ".5s",
            "NaNs",
            "infs",
            "1m",
            "\uff11s",
            "1 s",
            " 1s",
        )
    ),
    st.builds(lambda n: f"{n}s", st.integers(INT64_MIN * 10, INT64_MAX * 10)),
    weird_text,
)
timestamp_strings = st.one_of(
    st.sampled_from(
        (
            "",
            "0001-01-01T00:00:00Z",
            "0000-12-31T23:59:59Z",
            "9999-12-31T23:59:59.999999999Z",
            "10000-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+25:00",
            "2024-01-01T00:00:00.1234567891Z",
            "2024-01-01",
            "-2024-01-01T00:00:00Z",
            "\uff12\uff10\uff12\uff14-01-01T00:00:00Z",
            "now",
        )
    ),
    weird_text,
)


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    scalar = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**80), 2**80),
        st.floats(allow_nan=False, allow_infinity=False),
        weird_text,
    )
    return st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _field_value(kind: str, closed_port: int) -> st.SearchStrategy[Any]:
    anything = json_values()
    by_kind: dict[str, st.SearchStrategy[Any]] = {
        "int": st.one_of(int32, int64, json_numbers, anything),
        "float": st.one_of(rate.filter(math.isfinite), json_numbers, anything),
        "enum": st.one_of(
            enum_number,
            st.sampled_from(("RUNNING", "PAUSED", "DISABLED", "POST", "GET", "FULL", "BASIC", "HTTPS", "x")),
            anything,
        ),
        "duration": st.one_of(duration_strings, anything),
        "timestamp": st.one_of(timestamp_strings, anything),
        "bytes": st.one_of(
            st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
            st.sampled_from(("!!", "a", "ab=", "====", "%%%", "YQ", "YQ==", "Y Q = =")),
            anything,
        ),
        "string": st.one_of(weird_text, anything),
        "url": st.one_of(urls(closed_port), anything),
        "headers": st.one_of(headers, anything),
        "mask": st.one_of(
            mask_paths.map(",".join),
            st.lists(st.sampled_from(QUEUE_MASK_PATHS).map(_camel), max_size=4).map(",".join),
            st.fixed_dictionaries({"paths": mask_paths}),
            anything,
        ),
    }
    return by_kind[kind]


# field -> kind, with nested messages as dicts (JSON names are made from the snake_case names)
_HTTP_REQUEST = {
    "url": "url",
    "http_method": "enum",
    "headers": "headers",
    "body": "bytes",
    "oidc_token": {"service_account_email": "string", "audience": "string"},
    "oauth_token": {"service_account_email": "string", "scope": "string"},
}
_TASK = {
    "name": "string",
    "http_request": _HTTP_REQUEST,
    "app_engine_http_request": {
        "http_method": "enum",
        "app_engine_routing": {"service": "string", "version": "string", "host": "string"},
        "relative_uri": "string",
        "headers": "headers",
        "body": "bytes",
    },
    "schedule_time": "timestamp",
    "dispatch_deadline": "duration",
    "dispatch_count": "int",
    "view": "enum",
}
_DURATION_FIELDS = ("max_retry_duration", "min_backoff", "max_backoff")
_QUEUE = {
    "name": "string",
    "rate_limits": {
        "max_dispatches_per_second": "float",
        "max_burst_size": "int",
        "max_concurrent_dispatches": "int",
    },
    "retry_config": {
        "max_attempts": "int",
        **dict.fromkeys(_DURATION_FIELDS, "duration"),
        "max_doublings": "int",
    },
    "state": "enum",
    "purge_time": "timestamp",
    "app_engine_routing_override": {"service": "string", "version": "string"},
    "http_target": {
        "uri_override": {
            "scheme": "enum",
            "host": "string",
            "port": "int",
            "path_override": {"path": "string"},
        },
        "http_method": "enum",
        "header_overrides": "string",
    },
    "stackdriver_logging_config": {"sampling_ratio": "float"},
}


def json_message(shape: dict[str, Any], closed_port: int, depth: int = 0) -> st.SearchStrategy[Any]:
    """A JSON object shaped like ``shape`` with wild values, camelCase or snake_case keys, unknown
    fields, and sometimes a wrong type in place of the whole object."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, kind in shape.items():
        value = (
            json_message(kind, closed_port, depth + 1)
            if isinstance(kind, dict)
            else _field_value(kind, closed_port)
        )
        fields[_camel(name)] = value
        fields[name + "\x00snake"] = value  # placeholder key, renamed below
    obj = st.fixed_dictionaries({}, optional=fields).map(
        lambda d: {k.replace("\x00snake", ""): v for k, v in d.items()}
    )
    with_unknown = st.builds(
        lambda d, extra: {**d, **extra},
        obj,
        st.dictionaries(st.text(max_size=12), json_values(3), max_size=2),
    )
    return st.one_of(obj, obj, with_unknown, json_values(4))


def rest_calls(closed_port: int) -> st.SearchStrategy[tuple[str, str, Any]]:
    """(HTTP method, path after /v2/, JSON body or None) for the five fuzzed RPCs."""
    queue_path = st.one_of(
        st.sampled_from([_queue_name(q) for q in TASK_QUEUES]),
        st.builds(_queue_name, queue_ids.map(lambda q: f"fuzz-rest-{q}")),
    )
    update_path = st.one_of(
        st.sampled_from([_queue_name(q) for q in UPDATE_QUEUES]),
        st.builds(_queue_name, queue_ids.map(lambda q: f"fuzz-rest-upd-{q}")),
    )
    task_body = st.fixed_dictionaries(
        {},
        optional={
            "task": json_message(_TASK, closed_port),
            "responseView": _field_value("enum", closed_port),
            "response_view": _field_value("enum", closed_port),
        },
    )
    return st.one_of(
        st.tuples(st.just("POST"), st.just(f"{PARENT}/queues"), json_message(_QUEUE, closed_port)),
        st.tuples(st.just("PATCH"), update_path, json_message(_QUEUE, closed_port)),
        st.tuples(st.just("POST"), queue_path.map(lambda q: f"{q}/tasks"), task_body),
        st.tuples(st.just("GET"), queue_path.map(lambda q: f"{q}/tasks"), st.none()),
        st.tuples(st.just("GET"), st.just(f"{PARENT}/queues"), st.none()),
    )


query_values = st.one_of(
    json_numbers, page_tokens, weird_text, _field_value("mask", 1).filter(lambda v: isinstance(v, str))
)
query_params = st.dictionaries(
    st.one_of(
        st.sampled_from(
            (
                "pageSize",
                "page_size",
                "pageToken",
                "updateMask",
                "update_mask",
                "updateMask.paths",
                "responseView",
                "response_view",
                "$alt",
                "alt",
                "filter",
                "readMask",
                "queue.name",
                "queue.rateLimits.maxBurstSize",
                "fields",
                "key",
                "parent",
                "name",
                "unknownParam",
                "",
            )
        ),
        weird_text,
    ),
    st.one_of(query_values, st.sampled_from(("json;enum-encoding=int", "proto", "media"))),
    max_size=4,
)
