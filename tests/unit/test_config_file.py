from datetime import timedelta
from pathlib import Path

import pytest

from opentasks.config_file import ConfigFileError, load


def write(tmp_path: Path, text: str, name: str = "opentasks.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


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
    emails, reports = config.queues
    assert emails.state == "PAUSED" and emails.line == 8
    assert emails.settings == {
        "rate_limits.max_dispatches_per_second": 5.0,
        "retry_config.max_attempts": -1,
        "retry_config.min_backoff": timedelta(seconds=1),
        "retry_config.max_retry_duration": timedelta(hours=2),
        "app_engine_routing_override": {"service": "worker", "version": "v2"},
    }
    assert (reports.name, reports.settings, reports.state) == ("reports", {}, None)


def test_queue_yaml_is_converted_as_cloud_tasks_documents(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            """
total_storage_limit: 120M
queue:
- name: default
  rate: 10/m
  bucket_size: 20
  max_concurrent_requests: 7
  target: v2.worker
  retry_parameters:
    task_retry_limit: 5
    task_age_limit: 2d
    min_backoff_seconds: 0.5
    max_backoff_seconds: 30
    max_doublings: 3
- name: hourly
  rate: 1/h
  mode: push
  acl: [{user_email: a@b}]
""",
            "queue.yaml",
        )
    )
    assert config.kind == "queue.yaml"
    default, hourly = config.queues
    assert default.settings == {
        "rate_limits.max_dispatches_per_second": pytest.approx(10 / 60),
        "rate_limits.max_concurrent_dispatches": 7,
        "rate_limits.max_burst_size": 20,
        "app_engine_routing_override": {"service": "worker", "version": "v2"},
        "retry_config.max_attempts": 5,
        "retry_config.max_retry_duration": timedelta(days=2),
        "retry_config.min_backoff": timedelta(seconds=0.5),
        "retry_config.max_backoff": timedelta(seconds=30),
        "retry_config.max_doublings": 3,
    }
    assert hourly.settings == {
        "rate_limits.max_dispatches_per_second": pytest.approx(1 / 3600),
        "rate_limits.max_burst_size": 5,  # App Engine's default bucket
    }
    notes = "\n".join(config.notes)
    assert "queue.yaml:2: total_storage_limit: has no Cloud Tasks equivalent" in notes
    assert "bucket_size" not in notes
    assert "queue.yaml:18: hourly.acl: has no Cloud Tasks equivalent" in notes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "queues:\n  - name: q\n    rate_limits: {max_dispatches_per_second: fast}\n",
            "opentasks.yaml:3: q.rate_limits.max_dispatches_per_second: 'fast' is not a valid float",
        ),
        (
            "queues:\n  - name: q\n    retry_config:\n      min_backof: 1s\n",
            "opentasks.yaml:4: q.retry_config.min_backof: unknown; expected one of max_attempts",
        ),
        ("queues:\n  - rate_limits: {}\n", "opentasks.yaml:2: queues[].name: every queue needs a name."),
        (
            "queues:\n  - name: q\n    state: SLEEPING\n",
            "opentasks.yaml:3: q.state: expected RUNNING or PAUSED.",
        ),
        ("server:\n  prot: 1\n", "opentasks.yaml:2: server.prot: unknown setting"),
        ("queue:\n- name: q\n  rate: lots\n", "opentasks.yaml:3: q.rate: 'lots' is not a rate"),
        (
            "queue:\n- name: q\n  bucket_size: 501\n",
            "opentasks.yaml:3: q.bucket_size: must be between 1 and 500",
        ),
        ("queues: [\n", "opentasks.yaml:2: not valid YAML"),
        ("whatever: 1\n", "opentasks.yaml:1: whatever: unknown"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        load(write(tmp_path, text))
    assert str(caught.value).startswith(
        str(tmp_path / message.split(":", 1)[0]) + ":" + message.split(":", 1)[1]
    )
