"""App Engine's queue.yaml: converted as `gcloud app deploy` converts it, and read strictly."""

from datetime import timedelta
from pathlib import Path

import pytest

from opentasks.config_file import ConfigFile, ConfigFileError, load
from opentasks.queue_yaml import PUSH_QUEUE_DEFAULTS


def load_queue_yaml(tmp_path: Path, text: str) -> ConfigFile:
    path = tmp_path / "queue.yaml"
    path.write_text(text)
    return load(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigFileError) as caught:
        load_queue_yaml(tmp_path, text)
    return str(caught.value).removeprefix(f"{tmp_path}/")


def test_queue_yaml_is_converted_as_cloud_tasks_converts_it(tmp_path: Path) -> None:
    path = tmp_path / "queue.yaml"
    path.write_text(
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
  acl:
  - user_email: a@b
  - writer_email: c@d
"""
    )
    config = load(path)
    assert config.kind == "queue.yaml"
    default, hourly = config.queues
    assert default.settings == {
        "rate_limits.max_dispatches_per_second": pytest.approx(10 / 60),
        "rate_limits.max_concurrent_dispatches": 7,
        "rate_limits.max_burst_size": 20,
        "app_engine_routing_override": {"service": "worker", "version": "v2"},
        "retry_config.max_attempts": 6,  # 5 retries after the first attempt
        "retry_config.max_retry_duration": timedelta(days=2),
        "retry_config.min_backoff": timedelta(seconds=0.5),
        "retry_config.max_backoff": timedelta(seconds=30),
        "retry_config.max_doublings": 3,
    }
    assert default.state == "RUNNING"  # a positive rate resumes a paused queue
    assert default.origin("retry_config.max_attempts").line == 10
    assert default.origin("retry_config.max_attempts").field == "default.retry_parameters.task_retry_limit"
    # What a queue leaves out gets App Engine's defaults: removing a line resets the setting.
    assert hourly.settings == {
        "rate_limits.max_dispatches_per_second": pytest.approx(1 / 3600),
        **PUSH_QUEUE_DEFAULTS,
    }
    assert hourly.settings["retry_config.max_attempts"] == -1  # unlimited, unlike the API's 100
    assert config.notes == [
        f"{path}:2: total_storage_limit: has no Cloud Tasks equivalent; not applied.",
        f"{path}:18: hourly.acl: has no Cloud Tasks equivalent (access is IAM's); not applied.",
    ]


def test_a_zero_rate_pauses_and_resume_paused_queues_false_leaves_paused_queues(tmp_path: Path) -> None:
    config = load_queue_yaml(
        tmp_path,
        "resume_paused_queues: False\nqueue:\n- name: stopped\n  rate: 0\n- name: slow\n  rate: 0.5/s\n",
    )
    stopped, slow = config.queues
    assert stopped.state == "PAUSED"
    assert "rate_limits.max_dispatches_per_second" not in stopped.settings
    assert slow.state is None and slow.settings["rate_limits.max_dispatches_per_second"] == 0.5


def test_a_lone_backoff_moves_the_default_other_one_as_app_engine_does(tmp_path: Path) -> None:
    config = load_queue_yaml(
        tmp_path,
        "queue:\n- name: a\n  rate: 1/s\n  retry_parameters: {min_backoff_seconds: 7200}\n"
        "- name: b\n  rate: 1/s\n  retry_parameters: {max_backoff_seconds: 0.05}\n",
    )
    a, b = config.queues
    assert a.settings["retry_config.max_backoff"] == timedelta(seconds=7200)
    assert b.settings["retry_config.min_backoff"] == timedelta(seconds=0.05)


def test_pull_queues_are_noted_and_checked_as_app_engine_checks_them(tmp_path: Path) -> None:
    config = load_queue_yaml(
        tmp_path, "queue:\n- name: leases\n  mode: pull\n  retry_parameters: {task_retry_limit: 2}\n"
    )
    (leases,) = config.queues
    assert leases.settings == {"retry_config.max_attempts": 3}
    assert config.notes == [
        f"{tmp_path}/queue.yaml:3: leases.mode: pull queues have no Cloud Tasks v2 equivalent; "
        "applied as a push queue."
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a typo is an error, not a note
        (
            "queue:\n- name: q\n  rate: 5/s\n  max_concurent_requests: 7\n",
            "queue.yaml:4: q.max_concurent_requests: unknown field; did you mean max_concurrent_requests?",
        ),
        (
            "queue:\n- name: q\n  rate: 5/s\n  retry_parameters:\n    task_retry_limt: 3\n",
            "queue.yaml:5: q.retry_parameters.task_retry_limt: unknown field; did you mean task_retry_limit?",
        ),
        (
            "total_storage_limt: 1G\nqueue: []\n",
            "queue.yaml:1: total_storage_limt: unknown field; did you mean",
        ),
        (
            "queue:\n- name: q\n  rate: 5/s\n  acl:\n  - user_mail: a@b\n",
            "queue.yaml:5: q.acl[].user_mail: unknown field; did you mean user_email?",
        ),
        # App Engine's own formats and rules
        ("queue:\n- name: q\n  rate: lots\n", "queue.yaml:3: q.rate: 'lots' is not a rate"),
        ("queue:\n- name: q\n  rate: 5/y\n", "queue.yaml:3: q.rate: '5/y' is not a rate"),
        ("queue:\n- name: q\n", "queue.yaml:2: q.rate: Refill rate must be specified for push-based queue."),
        (
            "queue:\n- name: q\n  rate: 1/s\n  mode: lazy\n",
            "queue.yaml:4: q.mode: expected push or pull, not 'lazy'.",
        ),
        (
            "queue:\n- name: q\n  mode: pull\n  rate: 1/s\n",
            "queue.yaml:4: q.rate: must not be specified for a pull queue.",
        ),
        (
            "queue:\n- name: q\n  mode: pull\n  retry_parameters: {min_backoff_seconds: 1}\n",
            "queue.yaml:4: q.retry_parameters.min_backoff_seconds: can't be specified for a pull queue.",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n  target: Worker_1\n",
            "queue.yaml:4: q.target: 'Worker_1' is not a target; write SERVICE or VERSION.SERVICE.",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n  retry_parameters: {task_retry_limit: -1}\n",
            "queue.yaml:4: q.retry_parameters.task_retry_limit: Task retry limit must not be less than zero.",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n  retry_parameters: {task_age_limit: 0s}\n",
            "queue.yaml:4: q.retry_parameters.task_age_limit: Task age limit must be greater than zero.",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n  retry_parameters: {task_age_limit: 3}\n",
            "queue.yaml:4: q.retry_parameters.task_age_limit: '3' is not an age",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n  retry_parameters:\n    min_backoff_seconds: 10\n"
            "    max_backoff_seconds: 5\n",
            "queue.yaml:5: q.retry_parameters.min_backoff_seconds: Min backoff sec must not be greater than "
            "max backoff sec.",
        ),
        ("total_storage_limit: lots\nqueue: []\n", "queue.yaml:1: total_storage_limit: expected a size"),
        (
            "resume_paused_queues: maybe\nqueue: []\n",
            "queue.yaml:1: resume_paused_queues: expected true or false",
        ),
        # types, names, twice, range
        (
            "queue:\n- name: q\n  rate: 1/s\n  max_concurrent_requests: ten\n",
            "queue.yaml:4: q.max_concurrent_requests: expected a whole number, not 'ten'.",
        ),
        (
            "queue:\n- name: queue.one\n  rate: 1/s\n",
            "queue.yaml:2: queue[].name: 'queue.one' is not a queue ID: use 1 to 100 letters",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n- name: r\n  rate: 1/s\n- name: q\n  rate: 2/s\n",
            "queue.yaml:6: q: the queue is declared twice, at lines 2 and 6.",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n  rate: 2/s\n",
            "queue.yaml:4: queue[].rate: given twice, at lines 3 and 4.",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n  bucket_size: 501\n",
            "queue.yaml:4: q.bucket_size: bucket_size of a queue.yaml queue must be between 1 and 500",
        ),
        (
            "queue:\n- name: q\n  rate: 1/s\n  max_concurrent_requests: -3\n",
            "queue.yaml:4: q.max_concurrent_requests: RateLimits.maxConcurrentDispatches cannot be negative.",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text).startswith(message)
