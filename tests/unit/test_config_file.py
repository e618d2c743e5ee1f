"""The opentasks YAML format: what it declares, and how strictly it is read."""

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from opentasks.config_file import ConfigFileError, load
from opentasks.uri_parts import uri_override


def write(tmp_path: Path, text: str, name: str = "opentasks.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, name: str = "opentasks.yaml") -> str:
    """The message of the error ``text`` raises, with the temporary directory left out."""
    with pytest.raises(ConfigFileError) as caught:
        load(write(tmp_path, text, name))
    return str(caught.value).removeprefix(f"{tmp_path}/")


def test_opentasks_yaml(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            """
server:
  port: 9000
  storage: sqlite:///x.db
  locations: [us-central1, europe-west1]
project: shop
queues:
  - name: emails
    state: PAUSED
    rateLimits: {maxDispatchesPerSecond: 5}
    retry_config:
      max_attempts: unlimited
      min_backoff: 1s
      max_retry_duration: 2h
    app_engine_routing_override: {service: worker, version: v2}
  - name: reports
  - name: projects/shop/locations/europe-west1/queues/audits
""",
        )
    )
    assert config.kind == "opentasks"
    assert config.server == {
        "port": 9000,
        "storage": "sqlite:///x.db",
        "allowed_locations": ["us-central1", "europe-west1"],
    }
    assert config.project == "shop" and config.location is None
    emails, reports, audits = config.queues
    assert emails.state == "PAUSED" and emails.line == 8
    assert emails.settings == {
        "rate_limits.max_dispatches_per_second": 5.0,
        "retry_config.max_attempts": -1,
        "retry_config.min_backoff": timedelta(seconds=1),
        "retry_config.max_retry_duration": timedelta(hours=2),
        "app_engine_routing_override": {"service": "worker", "version": "v2"},
    }
    assert emails.origin("retry_config.min_backoff").line == 13
    assert emails.origin("retry_config.min_backoff").field == "emails.retry_config.min_backoff"
    assert emails.origin("rate_limits.max_dispatches_per_second").field == (
        "emails.rateLimits.maxDispatchesPerSecond"
    )
    assert (reports.name, reports.settings, reports.state) == ("reports", {}, None)
    assert audits.name == "projects/shop/locations/europe-west1/queues/audits"


def test_a_queue_declares_its_uri_override_in_gclouds_parts(tmp_path: Path) -> None:
    path = tmp_path / "opentasks.yaml"
    path.write_text(
        "queues:\n  - name: sendmail\n    httpTarget:\n      uriOverride:\n"
        "        {scheme: http, host: 127.0.0.1, port: 5001, path: /p/us-central1/sendmail,"
        " mode: if-not-exists}\n"
    )
    [queue] = load(path).queues
    assert queue.settings == {
        "http_target.uri_override": {
            "scheme": "HTTP",
            "host": "127.0.0.1",
            "port": 5001,
            "path_override": {"path": "/p/us-central1/sendmail"},
            "uri_override_enforce_mode": "IF_NOT_EXISTS",
        }
    }


def test_an_empty_file_declares_nothing(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")).queues == []
    assert load(write(tmp_path, "queues: []\n")).queues == []
    assert load(write(tmp_path, "queues:\n")).queues == []


def test_server_values_are_passed_on_as_written(tmp_path: Path) -> None:
    """`opentasks serve` converts them (its flags' types); the file only checks their kind."""
    config = load(
        write(
            tmp_path,
            "server:\n  no_dispatch: true\n  queue_tombstone: 1d\n  log_level: debug\n"
            "  dispatch_deny: [10.0.0.0/8]\n  max_rate_per_queue: 1000\n",
        )
    )
    assert config.server == {
        "dispatch": True,
        "queue_tombstone": "1d",
        "log_level": "debug",
        "dispatch_deny": ["10.0.0.0/8"],
        "max_rate_per_queue": 1000,
    }


def test_anchors_aliases_and_merge_keys_follow_yaml(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            """
queues:
  - name: a
    retry_config: &retry {max_attempts: 5, min_backoff: 1s}
  - name: b
    retry_config:
      <<: *retry
      max_attempts: 7
  - name: c
    retry_config: *retry
""",
        )
    )
    a, b, c = config.queues
    assert (
        a.settings
        == c.settings
        == {"retry_config.max_attempts": 5, "retry_config.min_backoff": timedelta(seconds=1)}
    )
    assert b.settings == {"retry_config.max_attempts": 7, "retry_config.min_backoff": timedelta(seconds=1)}
    assert b.origin("retry_config.max_attempts").line == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys, with the likely meant one
        ("whatever: 1\n", "opentasks.yaml:1: whatever: unknown field; expected one of server, project"),
        ("queus: []\n", "opentasks.yaml:1: queus: unknown field; did you mean queues?"),
        ("server:\n  prot: 1\n", "opentasks.yaml:2: server.prot: unknown field; did you mean port?"),
        (
            "server:\n  port: eighty\n",
            "opentasks.yaml:2: server.port: expected a whole number, not 'eighty'.",
        ),
        (
            "server:\n  no_dispatch: 1\n",
            "opentasks.yaml:2: server.no_dispatch: expected true or false, not 1.",
        ),
        (
            "server:\n  queue_tombstone: a week\n",
            "opentasks.yaml:2: server.queue_tombstone: expected a duration such as 500ms",
        ),
        (
            "server:\n  log_level: LOUD\n",
            "opentasks.yaml:2: server.log_level: expected one of DEBUG, INFO, WARNING, ERROR, not 'LOUD'.",
        ),
        ("server:\n  port: [1, 2]\n", "opentasks.yaml:2: server.port: expected a whole number, not a list."),
        (
            "queues:\n  - name: q\n    rate_limit: {}\n",
            "opentasks.yaml:3: q.rate_limit: unknown field; did you mean rate_limits?",
        ),
        (
            "queues:\n  - name: q\n    retry_config:\n      min_backof: 1s\n",
            "opentasks.yaml:4: q.retry_config.min_backof: unknown field; did you mean min_backoff?",
        ),
        (
            "queues:\n  - name: q\n    rate_limits:\n      max_concurent_dispatches: 3\n",
            "opentasks.yaml:4: q.rate_limits.max_concurent_dispatches: unknown field; "
            "did you mean max_concurrent_dispatches?",
        ),
        # wrong types
        (
            "queues:\n  - name: q\n    rate_limits: {max_dispatches_per_second: fast}\n",
            "opentasks.yaml:3: q.rate_limits.max_dispatches_per_second: expected a number, not 'fast'.",
        ),
        (
            "queues:\n  - name: q\n    rate_limits:\n      max_concurrent_dispatches: 2.5\n",
            "opentasks.yaml:4: q.rate_limits.max_concurrent_dispatches: expected a whole number, not 2.5.",
        ),
        (
            "queues:\n  - name: q\n    retry_config: {max_attempts: true}\n",
            "opentasks.yaml:3: q.retry_config.max_attempts: expected a whole number or unlimited, not true.",
        ),
        (
            "queues:\n  - name: q\n    retry_config:\n      max_backoff:\n",
            "opentasks.yaml:4: q.retry_config.max_backoff: expected a duration such as 500ms, 30s, 15m, 1h "
            "or 7d, not an empty value.",
        ),
        (
            "queues:\n  - name: q\n    retry_config:\n      min_backoff: 5 minutes\n",
            "opentasks.yaml:4: q.retry_config.min_backoff: expected a duration",
        ),
        (
            "queues:\n  - name: q\n    app_engine_routing_override: {service: [a]}\n",
            "opentasks.yaml:3: q.app_engine_routing_override.service: expected a string, not a list.",
        ),
        (
            "queues:\n  - name: q\n    http_target:\n      uri_overide: {host: a}\n",
            "opentasks.yaml:4: q.http_target.uri_overide: unknown field; did you mean uri_override?",
        ),
        (
            "queues:\n  - name: q\n    http_target:\n      uri_override: {hots: a}\n",
            "opentasks.yaml:4: q.http_target.uri_override.hots: use scheme, host, port, path, query, mode.",
        ),
        (
            "queues:\n  - name: q\n    http_target:\n      uri_override: {port: eighty}\n",
            "opentasks.yaml:4: q.http_target.uri_override: 'port:eighty': the port is a number from 1",
        ),
        (
            "queues:\n  - name: q\n    http_target:\n      uri_override: {scheme: ftp}\n",
            "opentasks.yaml:4: q.http_target.uri_override: 'ftp' is not a valid scheme: use one of http,",
        ),
        ("queues:\n  name: q\n", "opentasks.yaml:2: queues: expected a list, not a mapping."),
        ("queues:\n  - q\n", "opentasks.yaml:2: queues[]: expected a mapping of keys to values, not 'q'."),
        ("queues:\n  - rate_limits: {}\n", "opentasks.yaml:2: queues[].name: every queue needs a name."),
        (
            "queues:\n  - name: q\n    state: SLEEPING\n",
            "opentasks.yaml:3: q.state: expected RUNNING or PAUSED, not 'SLEEPING'.",
        ),
        # invalid names
        (
            "queues:\n  - name: q\n  - name: my_queue\n",
            "opentasks.yaml:3: queues[].name: 'my_queue' is not a queue ID: use 1 to 100 letters, digits "
            "and hyphens.",
        ),
        (
            "queues:\n  - name: projects/p/locations/l/queues/\n",
            'opentasks.yaml:2: queues[].name: Queue name must be formatted: "projects/<PROJECT_ID>',
        ),
        ("project: my project\n", "opentasks.yaml:1: project: 'my project' is not a valid project ID."),
        ("location: -x\n", "opentasks.yaml:1: location: '-x' is not a valid location ID."),
        # twice
        (
            "queues:\n  - name: q\n    rate_limits: {}\n    rateLimits: {}\n",
            "opentasks.yaml:4: queues[].rateLimits: given twice, at lines 3 and 4.",
        ),
        (
            "queues:\n  - name: a\n  - name: b\n  - name: a\n    state: PAUSED\n",
            "opentasks.yaml:4: a: the queue is declared twice, at lines 2 and 4.",
        ),
        # out of range: the API's own message
        (
            "queues:\n  - name: q\n    retry_config:\n      max_attempts: -2\n",
            "opentasks.yaml:4: q.retry_config.max_attempts: RetryConfig.maxAttempts must be greater or "
            "equal to -1.",
        ),
        (
            "queues:\n  - name: q\n    rate_limits: {max_dispatches_per_second: -1}\n",
            "opentasks.yaml:3: q.rate_limits.max_dispatches_per_second: RateLimits.maxDispatchesPerSecond "
            "cannot be negative.",
        ),
        (
            "queues:\n  - name: q\n    rate_limits: {max_concurrent_dispatches: 3000000000}\n",
            "opentasks.yaml:3: q.rate_limits.max_concurrent_dispatches: RateLimits.maxConcurrentDispatches "
            "must be less than or equal to 2147483647.",
        ),
        (
            "queues:\n  - name: q\n    retry_config:\n      max_backoff: 5s\n      min_backoff: 10s\n",
            "opentasks.yaml:5: q.retry_config.min_backoff: RetryConfig.minBackoff must be less than or "
            "equal to RetryConfig.maxBackoff.",
        ),
        ("queues: [\n", "opentasks.yaml:2: not valid YAML"),
        (
            "queues:\n  - name: !secret q\n",
            "opentasks.yaml:2: queues[].name: cannot read the value: could not determine a constructor",
        ),
        (
            "queues:\n  - name: q\n    retry_config:\n      <<: 5\n",
            "opentasks.yaml:4: q.retry_config: cannot merge: expected a mapping or list of mappings",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text).startswith(message)


def test_a_lone_backoff_is_not_compared_with_a_default(tmp_path: Path) -> None:
    """The server keeps the current max_backoff, which may well exceed a 2 h min_backoff."""
    config = load(write(tmp_path, "queues:\n  - name: q\n    retry_config: {min_backoff: 2h}\n"))
    assert config.queues[0].settings == {"retry_config.min_backoff": timedelta(hours=2)}


def test_rates_above_cloud_tasks_limit_are_left_to_the_server(tmp_path: Path) -> None:
    """A server may lift the 500/s limit (--max-rate-per-queue): the server decides."""
    config = load(
        write(tmp_path, "queues:\n  - name: q\n    rate_limits: {max_dispatches_per_second: 2000}\n")
    )
    assert config.queues[0].settings == {"rate_limits.max_dispatches_per_second": 2000.0}


# Keys and values near the real ones, so that generated files reach deep into both readers.
_KEYS = st.sampled_from(
    [
        "queues", "queue", "server", "project", "location", "name", "state", "rate_limits", "retry_config",
        "max_dispatches_per_second", "max_attempts", "min_backoff", "max_backoff", "rate", "bucket_size",
        "max_concurrent_requests", "retry_parameters", "task_retry_limit", "task_age_limit", "target", "mode",
        "acl", "user_email", "port", "log_level", "<<", "total_storage_limit",
    ]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.sampled_from(["q", "5/s", "0", "1s", "2d", "pull", "push", "unlimited", "PAUSED", "v1.w", "", "-"]),
    st.text(max_size=8),
)
_ANY = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)
_SECTION = st.dictionaries(_KEYS, _SCALARS, max_size=4)
_QUEUE = st.dictionaries(_KEYS, _SCALARS | _SECTION, max_size=5).map(lambda d: {"name": "q", **d})
_DOCUMENTS = _ANY | st.builds(
    lambda key, queues: {key: queues}, st.sampled_from(["queue", "queues"]), st.lists(_QUEUE, max_size=3)
)


@settings(max_examples=150, deadline=None)
@given(_DOCUMENTS)
def test_any_document_is_read_or_refused_in_one_line(document: object) -> None:
    """Whatever the file holds, reading it gives queues or a FILE:LINE error, never a crash."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "queues.yaml"
        path.write_text(yaml.safe_dump(document))
        try:
            load(path)
        except ConfigFileError as error:
            assert str(error).startswith(f"{path}:")
            assert "\n" not in str(error)


def test_empty_uri_override_parts_are_left_out_so_apply_settles() -> None:
    assert uri_override({"host": "h", "path": "", "query": " "}) == {"host": "h"}
    with pytest.raises(ValueError, match="from 1 to 65535"):
        uri_override({"port": "0"})
