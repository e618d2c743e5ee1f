"""--log-format: the JSON lines a log shipper reads, and the text lines a person reads."""

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from opentasks.logs import JsonFormatter, configure, formatter, rfc3339


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.getLogger("opentasks.test").makeRecord(
        "opentasks.test", logging.WARNING, __file__, 1, message, args or ("world",), None, extra=extra
    )
    made.created = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC).timestamp()
    return made


def test_core_fields() -> None:
    line = JsonFormatter().format(record())
    assert json.loads(line) == {
        "time": "2024-05-01T12:00:00.123Z",
        "level": "WARNING",
        "logger": "opentasks.test",
        "message": "hello world",
    }


def test_structured_fields_of_extra_are_passed_through() -> None:
    line = JsonFormatter().format(
        record(
            "task %s dropped",
            "t1",
            queue="projects/p/locations/l/queues/q",
            task="t1",
            attempt=5,
            status=503,
            duration_ms=12.5,
        )
    )
    entry = json.loads(line)
    assert entry["message"] == "task t1 dropped"
    assert entry["queue"] == "projects/p/locations/l/queues/q"
    assert (entry["task"], entry["attempt"], entry["status"], entry["duration_ms"]) == ("t1", 5, 503, 12.5)


def test_one_line_per_record_even_with_line_breaks_and_exceptions() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        made = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed:\n%s", ("why",), exc_info=sys.exc_info()
        )
    line = JsonFormatter().format(made)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed:\nwhy"
    assert "ValueError: boom" in entry["exception"]
    assert "Traceback" in entry["exception"]


def test_values_json_cannot_hold_are_strings_and_core_keys_are_not_overwritten() -> None:
    when = datetime(2024, 1, 2, tzinfo=UTC)
    entry = json.loads(JsonFormatter().format(record(when=when, level="custom", raw=b"\x00")))
    assert entry["when"] == str(when)
    assert entry["raw"] == str(b"\x00")
    assert entry["level"] == "WARNING"
    assert entry["extra_level"] == "custom"


def test_values_that_break_json_still_make_a_valid_line() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    for extra in ({"ratio": float("nan")}, {"counts": {1: "a", (2, 3): "b"}}, {"cycle": cycle}):
        line = JsonFormatter().format(record(**extra))
        entry = json.loads(line, parse_constant=pytest.fail)  # NaN/Infinity are not JSON
        assert entry["message"] == "hello world"
        assert "\n" not in line


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rfc3339(1714564800.5))


def test_formatter_names() -> None:
    assert isinstance(formatter("json"), JsonFormatter)
    assert isinstance(formatter("TEXT"), logging.Formatter)
    assert not isinstance(formatter("text"), JsonFormatter)
    with pytest.raises(ValueError, match="--log-format"):
        formatter("xml")


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restored_root")
def test_configure_json_writes_one_object_per_line_at_the_level() -> None:
    out = io.StringIO()
    configure("warning", "json", stream=out)
    log = logging.getLogger("opentasks.dispatch")
    log.info("not shown")
    log.warning("task %s failed for good", "t9", extra={"queue": "q", "attempt": 3})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["logger"] == "opentasks.dispatch"
    assert (entry["queue"], entry["attempt"]) == ("q", 3)


@pytest.mark.usefixtures("restored_root")
def test_configure_text() -> None:
    out = io.StringIO()
    configure("INFO", "text", stream=out)
    logging.getLogger("opentasks").info("listening", extra={"queue": "q"})
    assert re.fullmatch(r"\S+ \S+ INFO opentasks: listening\n", out.getvalue())
