"""The queue settings form as an UpdateQueue (pure)."""

from datetime import timedelta

import pytest

from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue, resolve_queue
from opentasks.errors import InvalidArgument
from opentasks.web.forms import (
    SETTINGS_FIELDS,
    burst_refusal,
    parse_seconds,
    settings_change,
    settings_values,
)

QUEUE = resolve_queue(Queue(QueueName("p", "l", "q")), Limits())


def test_the_form_shows_the_queue_settings() -> None:
    assert settings_values(QUEUE) == {
        "max_dispatches_per_second": "500",
        "max_burst_size": "100",
        "max_concurrent_dispatches": "1000",
        "max_attempts": "100",
        "min_backoff": "0.1s",
        "max_backoff": "3600s",
        "max_doublings": "16",
        "max_retry_duration": "0s",
    }
    assert [f.name for f in SETTINGS_FIELDS] == list(settings_values(QUEUE))


def test_an_unchanged_form_changes_nothing() -> None:
    change = settings_change(QUEUE, settings_values(QUEUE))
    assert change.mask == [] and change.queue == QUEUE


def test_changed_fields_make_the_mask() -> None:
    form = settings_values(QUEUE) | {
        "max_dispatches_per_second": " 2.5 ",
        "min_backoff": "2",
        "max_retry_duration": "90s",
    }
    change = settings_change(QUEUE, form)
    assert change.mask == [
        "rate_limits.max_dispatches_per_second",
        "retry_config.min_backoff",
        "retry_config.max_retry_duration",
    ]
    assert change.queue.rate_limits.max_dispatches_per_second == 2.5
    assert change.queue.retry_config.min_backoff == timedelta(seconds=2)
    assert change.queue.retry_config.max_retry_duration == timedelta(seconds=90)
    assert not change.burst_changed


def test_fields_left_out_are_left_alone() -> None:
    assert settings_change(QUEUE, {"max_attempts": "-1"}).mask == ["retry_config.max_attempts"]


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("max_dispatches_per_second", "fast", "max_dispatches_per_second: 'fast' is not a number."),
        ("max_dispatches_per_second", "nan", "max_dispatches_per_second: 'nan' is not a finite number."),
        ("max_attempts", "2.5", "max_attempts: '2.5' is not a whole number."),
        ("min_backoff", "1m", "min_backoff: '1m' is not a duration in seconds; write e.g. 0.5s or 3600s."),
        ("min_backoff", "-1s", "min_backoff: '-1s' is not a duration in seconds; write e.g. 0.5s or 3600s."),
        ("max_backoff", "9" * 30, "max_backoff: " + "9" * 30 + " is too long a duration."),
        ("max_doublings", "1" * 41, "max_doublings: '" + "1" * 40 + "…' is too long."),
    ],
)
def test_misspelt_values_are_refused_with_the_field(field: str, text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        settings_change(QUEUE, {field: text})
    assert refused.value.message == message


def test_seconds_are_spelt_with_or_without_s() -> None:
    assert parse_seconds("x", "0.5s") == timedelta(milliseconds=500)
    assert parse_seconds("x", " 30 ") == timedelta(seconds=30)
    assert parse_seconds("x", ".25s") == timedelta(milliseconds=250)


def test_the_burst_is_an_input_of_queue_yaml_queues_only() -> None:
    assert settings_change(QUEUE, {"max_burst_size": "5"}).burst_changed
    assert burst_refusal(QUEUE) is not None
    yaml_queue = resolve_queue(Queue(QUEUE.name, from_queue_yaml=True), Limits())
    assert burst_refusal(yaml_queue) is None
