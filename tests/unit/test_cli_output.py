"""The CLI's pure parts: gcloud's --format projections, --filter expressions, flag values, and
the message classes read from the descriptor cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from google.cloud import tasks_v2

from opentasks.cli import COMMANDS, main, wire
from opentasks.cli.filters import parse_filter
from opentasks.cli.output import pruned
from opentasks.cli.params import MaxAttempts, ScheduleTime, duration, rfc3339, seconds
from opentasks.cli.projection import parse_format
from opentasks.cli.prompts import QUEUE_NAME_WINDOW, QUEUE_NAME_WINDOW_FLAG
from opentasks.cli.queues import LIST_FORMAT
from opentasks.cli.remote import field_mask, short_name

QUEUE = {
    "name": "projects/p/locations/l/queues/emails",
    "state": "PAUSED",
    "rateLimits": {"maxDispatchesPerSecond": 0.5, "maxConcurrentDispatches": 1000},
    "retryConfig": {"maxAttempts": -1},
    "stats": {"tasksCount": 3},
}


def test_the_queues_list_table_is_gcloud_s() -> None:
    table = parse_format(LIST_FORMAT)
    assert table.titles()[:5] == [
        "QUEUE_NAME",
        "STATE",
        "MAX_NUM_OF_TASKS",
        "MAX_RATE (/sec)",
        "MAX_ATTEMPTS",
    ]
    assert table.cells(QUEUE)[:6] == ["emails", "PAUSED", "1000", "0.5", "unlimited", "3"]
    assert table.cells({"name": "q", "retryConfig": {"maxAttempts": 5}})[2:5] == [
        "unlimited",
        "unlimited",
        "5",
    ]


@pytest.mark.parametrize(
    ("text", "cells", "titles"),
    [
        ("value(name.basename(), state)", ["emails", "PAUSED"], ["NAME", "STATE"]),
        ("csv[no-heading](rateLimits.maxDispatchesPerSecond:label=RATE)", ["0.5"], ["RATE"]),
        ('table(stats.tasksCount.format("{0} tasks"), missing.yesno(no="none"))', ["3 tasks", "none"], None),
        (
            'value(name.sub("emails", "x").upper(), retryConfig.len())',
            ["PROJECTS/P/LOCATIONS/L/QUEUES/X", "1"],
            None,
        ),
        ("value(rateLimits)", ["maxConcurrentDispatches=1000;maxDispatchesPerSecond=0.5"], None),
        ("table(rateLimits)", ['{"maxConcurrentDispatches": 1000, "maxDispatchesPerSecond": 0.5}'], None),
    ],
)
def test_projections(text: str, cells: list[str], titles: list[str] | None) -> None:
    projection = parse_format(text)
    assert projection.cells(QUEUE) == cells
    if titles is not None:
        assert projection.titles() == titles
    assert projection.heading == ("no-heading" not in text)


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        (0.333333333333, "0.333333"),
        (499.99999, "500.0"),
        (7.0, "7.0"),
        (1e-05, "1e-05"),
        (123456789.0, "123456789.0"),
    ],
)
def test_floats_print_as_gcloud_prints_them(number: float, shown: str) -> None:
    assert parse_format("value(rate)").cells({"rate": number}) == [shown]


@pytest.mark.parametrize("text", ["tabel(name)", "value()", "csv", "value(name.nope())", "value(a b)"])
def test_bad_formats_say_why(text: str) -> None:
    with pytest.raises(ValueError, match=r"format|key|transform|names no keys"):
        parse_format(text)


def test_unnamed_columns_take_the_default_labels_as_in_gcloud() -> None:
    default = parse_format(LIST_FORMAT)
    assert parse_format("csv(name.basename(), state)").with_defaults(default).titles() == [
        "QUEUE_NAME",
        "STATE",
    ]
    assert parse_format("table").with_defaults(default).titles() == default.titles()


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ("state:PAUSED", True),
        ("state:paused", True),
        ("state=RUNNING", False),
        ("state!=RUNNING", True),
        ("name:emails", True),
        ("name:emai*", True),
        ("name:mail", False),
        ("name~ema.ls$", True),
        ("name!~^projects", False),
        ("rateLimits.maxDispatchesPerSecond<1", True),
        ("rateLimits.maxDispatchesPerSecond>=1", False),
        ("stats.tasksCount=3 AND state:PAUSED", True),
        ("stats.tasksCount=3 state:RUNNING", False),
        ("stats.tasksCount=4 OR state:PAUSED", True),
        ("NOT state:PAUSED", False),
        ("-state:PAUSED", False),
        ("(state:RUNNING OR name:emails) AND NOT retryConfig.maxAttempts>0", True),
        ("state:(RUNNING DISABLED)", False),
        ("state:(RUNNING PAUSED)", True),
        ("httpTarget:*", False),
        ("rateLimits:*", True),
        ("name:'projects/p/locations/l/queues/emails'", True),
    ],
)
def test_filters(expression: str, matches: bool) -> None:
    assert parse_filter(expression).matches(QUEUE) is matches


@pytest.mark.parametrize("expression", ["state", "state:(PAUSED", "(state:PAUSED", "state:'x", ":x", "a:b )"])
def test_bad_filters_say_where(expression: str) -> None:
    with pytest.raises(ValueError, match="at column"):
        parse_filter(expression)


def test_describe_leaves_out_empty_fields_only() -> None:
    assert pruned({"a": {}, "b": [], "c": "", "d": None, "e": 0, "f": {"g": {}}, "h": [{"i": ""}]}) == {
        "e": 0,
        "h": [{}],
    }


def test_flag_values() -> None:
    assert MaxAttempts().convert("unlimited", None, None) == -1
    assert MaxAttempts().convert("-1", None, None) == -1
    for bad in ("five", "-2", "1.5"):
        with pytest.raises(click.BadParameter):
            MaxAttempts().convert(bad, None, None)
    assert duration("--x").convert("PT1H30M", None, None) == timedelta(hours=1, minutes=30)
    assert duration("--x").convert("250ms", None, None) == timedelta(milliseconds=250)
    when = ScheduleTime().convert("2025-01-01T12:00:00+02:00", None, None)
    assert rfc3339(when) == "2025-01-01T10:00:00Z"
    assert ScheduleTime().convert("2025-01-01T10:00:00", None, None) == datetime(2025, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(click.BadParameter, match="RFC 3339"):
        ScheduleTime().convert("tomorrow", None, None)
    assert (seconds(timedelta(milliseconds=100)), seconds(timedelta(hours=1))) == ("0.1s", "3600s")


def test_names_and_masks() -> None:
    assert short_name("projects/p/locations/l/queues/q") == "l/q"
    assert short_name("projects/p/locations/l/queues/q/tasks/t") == "l/q/tasks/t"
    assert field_mask(["rate_limits.max_dispatches_per_second", "http_target"]) == (
        "rateLimits.maxDispatchesPerSecond,httpTarget"
    )


def test_the_delete_warning_names_the_server_s_window_and_flag() -> None:
    from opentasks.config import Settings  # noqa: PLC0415 - the server's settings, for comparison

    assert Settings().queue_tombstone == timedelta(days=int(QUEUE_NAME_WINDOW.split()[0]))
    assert QUEUE_NAME_WINDOW_FLAG == "--queue-tombstone"


def test_the_cached_classes_are_the_package_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = wire.descriptor_set()
    (cached,) = tmp_path.glob("opentasks/cloudtasks-*.desc")
    assert wire.descriptor_set() == built == wire.package_descriptor_set()
    assert cached.read_bytes() == built.SerializeToString()
    queue = wire.method(f"{wire.V2}.CloudTasks", "GetQueue").output(name="q", state=2)
    assert (
        queue.SerializeToString() == tasks_v2.Queue.pb(tasks_v2.Queue(name="q", state=2)).SerializeToString()
    )
    cached.write_bytes(b"not a descriptor set")
    assert wire.descriptor_set() == built  # a broken cache is rebuilt


@click.command(name="boom")
def _boom() -> None:
    raise RuntimeError("it broke")


def test_no_traceback_for_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(COMMANDS, "boom", f"{__name__}:_boom")
    monkeypatch.delenv("OPENTASKS_TRACEBACK", raising=False)
    result = CliRunner().invoke(main, ["boom"])
    assert result.exit_code == 1
    assert result.output == "ERROR: RuntimeError: it broke (set OPENTASKS_TRACEBACK=1 for the traceback)\n"


@pytest.mark.parametrize("version", [wire.V2, wire.V2BETA3])
def test_every_rpc_the_commands_call_resolves_to_the_package_s_messages(version: str) -> None:
    for rpc, response in wire._RESPONSES.items():
        method = wire.method(f"{version}.CloudTasks", rpc)
        assert method.input.DESCRIPTOR.name == f"{rpc}Request"
        expected = response if "." in response else f"{version}.{response}"
        assert method.output.DESCRIPTOR.full_name == expected
    location = wire.method("google.cloud.location.Locations", "GetLocation")
    assert location.output.DESCRIPTOR.full_name == "google.cloud.location.Location"
