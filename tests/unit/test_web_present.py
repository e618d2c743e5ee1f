"""How the dashboard shows bodies, charts, numbers and times (pure functions)."""

from datetime import UTC, datetime, timedelta

from opentasks.web.present import (
    MAX_HEX_BYTES,
    MAX_TEXT_BYTES,
    body_view,
    count,
    dead_letters,
    hex_dump,
    last_result,
    outcome_chart,
    percent,
    rate,
    reason_text,
    relative,
    snippet,
    span,
    timestamp,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_an_empty_body() -> None:
    assert body_view(b"").kind == "empty"


def test_json_is_pretty_printed() -> None:
    view = body_view(b'{"a":1,"b":["x",{"c":null}],"d":"\xc3\xa9"}')
    assert view.kind == "json"
    assert view.text == '{\n  "a": 1,\n  "b": [\n    "x",\n    {\n      "c": null\n    }\n  ],\n  "d": "é"\n}'
    assert body_view(b"[1, 2]").kind == "json"
    assert body_view(b"42").kind == "json"


def test_text_that_is_not_json_stays_text() -> None:
    for body in (b"hello world", b"{not json", b"NaN", b"Infinity", b"true story"):
        view = body_view(body)
        assert view.kind == "text", body
        assert view.text == body.decode()


def test_binary_is_a_hex_dump() -> None:
    view = body_view(bytes(range(256)))
    assert view.kind == "hex"
    assert view.text.splitlines()[0] == (
        "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|"
    )
    assert view.text.splitlines()[4].endswith("|@ABCDEFGHIJKLMNO|")
    assert body_view(b"\x00text").kind == "hex"  # a control character is not text
    assert body_view(b"\xff\xfe\xfd plain").kind == "hex"  # not UTF-8


def test_a_short_last_row_is_aligned() -> None:
    assert hex_dump(b"AB") == "00000000  41 42" + " " * 42 + "  |AB|"


def test_long_bodies_are_cut() -> None:
    text = body_view(b"a" * (MAX_TEXT_BYTES + 10))
    assert text.kind == "text" and text.truncated and len(text.text) == MAX_TEXT_BYTES
    assert text.size == MAX_TEXT_BYTES + 10
    binary = body_view(b"\x00" * (MAX_HEX_BYTES * 2))
    assert binary.truncated and len(binary.text.splitlines()) == MAX_HEX_BYTES // 16


def test_a_character_cut_at_the_limit_keeps_the_body_text() -> None:
    body = b"a" * (MAX_TEXT_BYTES - 1) + "é".encode() + b"b"
    assert body_view(body).kind == "text"


def test_the_chart_stacks_failures_on_successes() -> None:
    minutes = [(T0, 10, 0), (T0 + timedelta(minutes=1), 5, 5), (T0 + timedelta(minutes=2), 0, 0)]
    chart = outcome_chart(minutes, width=30, height=20, gap=1)
    assert chart.peak == 10
    ok, ok2, failed = chart.bars
    assert (ok.x, ok.y, ok.width, ok.height, ok.kind) == (0, 0, 9, 20, "ok")
    assert (ok2.x, ok2.y, ok2.height) == (10, 10, 10)
    assert (failed.x, failed.y, failed.height, failed.kind) == (10, 0, 10, "failed")
    assert failed.title == "12:01 UTC: 5 succeeded, 5 failed"
    assert chart.label == "15 succeeded and 5 failed in the last 3 minutes"


def test_one_failure_among_many_is_still_visible() -> None:
    chart = outcome_chart([(T0, 10_000, 1)], width=10, height=20)
    assert [bar.height for bar in chart.bars if bar.kind == "failed"] == [1.0]


def test_an_idle_chart_has_no_bars() -> None:
    assert outcome_chart([(T0, 0, 0)] * 30).bars == []
    assert outcome_chart([]).bars == []


def test_numbers_and_times_read_well() -> None:
    assert count(1234567) == "1,234,567"
    assert [rate(0), rate(2.5), rate(63), rate(600)] == ["0/min", "2.5/min", "63/min", "10.0/s"]
    assert [percent(1, 3), percent(0, 0), percent(1, 1000)] == ["33%", "\u2013", "<1%"]
    assert [span(0.25), span(5.25), span(42), span(245), span(3 * 3600 + 720), span(50 * 3600)] == [
        "250ms",
        "5.2s",
        "42s",
        "4m 5s",
        "3h 12m",
        "2d 2h",
    ]
    assert [span(timedelta(minutes=10)), span(3600), span(59.7)] == ["10m", "1h", "1m"]
    assert relative(T0 + timedelta(seconds=30), T0) == "in 30s"
    assert relative(T0 - timedelta(minutes=2), T0) == "2m ago"
    assert relative(T0, T0) == "now" and relative(None, T0) == "\u2013"


def test_ages_and_waits_are_rounded_as_people_say_them() -> None:
    approx = [0.014, 1.4, 8.9, 59.6, 90, 3599, 3660, 3 * 3600 + 720, 47 * 3600 + 3599, 9.5 * 86400]
    assert [span(s, approx=True) for s in approx] == [
        "<1s",
        "1s",
        "9s",
        "1m",
        "2m",
        "1h",
        "1h 1m",
        "3h 12m",
        "2d",
        "9d 12h",
    ]
    assert relative(T0 + timedelta(minutes=59, seconds=59), T0) == "in 1h"
    assert relative(T0 + timedelta(hours=1, minutes=1), T0) == "in 1h 1m"
    assert relative(T0 - timedelta(seconds=1.6), T0) == "2s ago"
    assert span(float("nan"), approx=True) == "\u2013"
    assert timestamp(T0 + timedelta(microseconds=123456)) == "2030-01-01 12:00:00.123 UTC"


def test_last_results_name_the_status_or_the_failure() -> None:
    assert last_result(None, "") == ("\u2013", "none")
    assert last_result(0, "") == ("2xx", "ok")
    assert last_result(13, "HTTP status code 500") == ("500", "failed")
    assert last_result(4, "The handler did not answer within the dispatch deadline.") == ("timeout", "failed")
    assert last_result(14, "The handler could not be reached: refused") == ("unreachable", "failed")
    assert last_result(9, "169.254.169.254 is not allowed") == ("refused", "failed")


def test_a_snippet_is_one_short_line() -> None:
    assert snippet(b"line one\n  line two") == "line one line two"
    assert snippet(b"x" * 500, chars=10) == "x" * 9 + "\u2026"
    assert snippet(b"\xff ok") == "\ufffd ok"


def test_finish_reasons_in_words() -> None:
    assert reason_text("max_attempts") == "failed for good: out of attempts"
    assert reason_text("unknown") == "unknown"


def test_dead_letter_counts_above_the_cap_read_as_more_than_it() -> None:
    assert dead_letters(0) == "0"
    assert dead_letters(10_000) == "10,000"
    assert dead_letters(10_001) == "10,000+"  # the store's way of saying "more than the cap"
