"""How the dashboard shows things (pure): a body as JSON, text or hex; per-minute outcomes as
the bars of a small SVG chart; ages, durations and counts as people read them.

Nothing here returns markup. The templates turn these values into HTML with autoescaping on,
so a task's bytes can never become HTML or script.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentasks.domain.browse import DEAD_LETTER_COUNT_CAP

MAX_TEXT_BYTES = 256 * 1024  # of a body shown as text or JSON
MAX_HEX_BYTES = 16 * 1024  # of a body shown as a hex dump (each byte takes about 4 characters)
HEX_ROW = 16
NONE = "\u2013"  # an en dash: no value


@dataclass(frozen=True)
class BodyView:
    """A body ready to show: ``kind`` is ``empty``, ``json`` (pretty-printed), ``text`` or
    ``hex`` (a dump with offsets and printable characters); ``size`` is the whole body's length
    and ``truncated`` says that ``text`` shows only its start."""

    kind: str
    text: str
    size: int
    truncated: bool = False


def body_view(body: bytes) -> BodyView:
    """``body`` as JSON when it parses as JSON, as text when it is UTF-8 text, else as hex."""
    if not body:
        return BodyView("empty", "", 0)
    text = _utf8_text(body[:MAX_TEXT_BYTES])
    if text is None:
        return _hex_view(body)
    if len(body) <= MAX_TEXT_BYTES:
        pretty = _pretty_json(text)
        if pretty is not None:
            return BodyView("json", pretty, len(body))
    return BodyView("text", text, len(body), truncated=len(body) > MAX_TEXT_BYTES)


def _utf8_text(data: bytes) -> str | None:
    """``data`` decoded, if it is text: UTF-8 (a character cut at the end is allowed) without
    control characters other than tab, line breaks and form feed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(data) - 3:
            return None
        text = data[: error.start].decode("utf-8")
    if any((ord(c) < 32 and c not in "\t\n\r\f") or c == "\x7f" for c in text):
        return None
    return text


def _pretty_json(text: str) -> str | None:
    stripped = text.strip()
    if not stripped or (stripped[0] not in '{["' and not _json_scalar(stripped)):
        return None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    except (ValueError, RecursionError):  # pragma: no cover - what loads also dumps
        return None


def _json_scalar(text: str) -> bool:
    return text in ("true", "false", "null") or text[0] in "-0123456789"


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _hex_view(body: bytes) -> BodyView:
    shown = body[:MAX_HEX_BYTES]
    return BodyView("hex", hex_dump(shown), len(body), truncated=len(body) > MAX_HEX_BYTES)


def hex_dump(data: bytes) -> str:
    """``data`` as rows of 16 bytes: offset, hex pairs and the printable ASCII characters."""
    rows = []
    for offset in range(0, len(data), HEX_ROW):
        chunk = data[offset : offset + HEX_ROW]
        pairs = " ".join(f"{b:02x}" for b in chunk)
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        rows.append(f"{offset:08x}  {pairs:<{HEX_ROW * 3 - 1}}  |{ascii_}|")
    return "\n".join(rows)


# -- charts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One rectangle of a chart, in the chart's own units; ``kind`` names its CSS class."""

    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str


@dataclass(frozen=True)
class Chart:
    """A stacked bar chart of per-minute outcomes: succeeded at the bottom, failed above."""

    width: int
    height: int
    bars: list[Bar]
    peak: int
    label: str


def outcome_chart(
    minutes: list[tuple[datetime, int, int]], *, width: int = 120, height: int = 28, gap: float = 1.0
) -> Chart:
    """Bars of (minute, succeeded, failed), oldest first, scaled to the busiest minute."""
    peak = max((ok + failed for _, ok, failed in minutes), default=0)
    bars: list[Bar] = []
    slot = width / len(minutes) if minutes else 0.0
    for index, minute in enumerate(minutes):
        if peak:
            bars.extend(_minute_bars(minute, index * slot, max(slot - gap, 0.5), peak, height))
    total_ok = sum(ok for _, ok, _ in minutes)
    total_failed = sum(failed for _, _, failed in minutes)
    label = f"{total_ok} succeeded and {total_failed} failed in the last {len(minutes)} minutes"
    return Chart(width, height, bars, peak, label)


def _minute_bars(
    minute: tuple[datetime, int, int], x: float, width: float, peak: int, height: int
) -> list[Bar]:
    start, ok, failed = minute
    title = f"{start:%H:%M} UTC: {ok} succeeded, {failed} failed"
    ok_height = _scaled(ok, peak, height)
    failed_height = _scaled(failed, peak, height)
    x, width = round(x, 2), round(width, 2)
    bars = []
    if ok_height:
        bars.append(Bar(x, round(height - ok_height, 2), width, ok_height, "ok", title))
    if failed_height:
        bars.append(
            Bar(x, round(height - ok_height - failed_height, 2), width, failed_height, "failed", title)
        )
    return bars


def _scaled(value: int, peak: int, height: int) -> float:
    """A non-zero value is at least one unit high, so a single failure is visible."""
    if value <= 0:
        return 0.0
    return round(max(1.0, value / peak * height), 2)


# -- numbers and times -------------------------------------------------------------------------


def count(value: int) -> str:
    """``1234567`` as ``1,234,567``."""
    return f"{value:,}"


def dead_letters(value: int) -> str:
    """A queue's dead-letter count as the store gives it: above the cap it means "more than the
    cap" (``10,000+``)."""
    if value > DEAD_LETTER_COUNT_CAP:
        return f"{DEAD_LETTER_COUNT_CAP:,}+"
    return f"{value:,}"


def rate(per_minute: float) -> str:
    """A per-minute rate, shown per second above 120/min."""
    if per_minute >= 120:
        return f"{per_minute / 60:,.1f}/s"
    if per_minute >= 10 or per_minute == 0:
        return f"{per_minute:,.0f}/min"
    return f"{per_minute:.1f}/min"


def percent(part: int, whole: int) -> str:
    if whole <= 0:
        return NONE
    share = 100 * part / whole
    if 0 < share < 1:
        return "<1%"
    return f"{share:.0f}%"


def span(delta: timedelta | float, *, approx: bool = False) -> str:
    """A length of time, short: ``350ms``, ``5.2s``, ``12s``, ``4m 5s``, ``3h 12m``, ``2d 4h``
    (a zero second part is left out: ``10m``, ``1h``).

    ``approx`` rounds it as people say an age or a wait: ``<1s``, ``12s``, ``4m``, ``3h 12m``,
    ``2d 4h``."""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if math.isnan(seconds) or math.isinf(seconds):
        return NONE
    seconds = abs(seconds)
    if approx:
        return _approx(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = math.floor(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return _two(minutes, "m", secs, "s")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return _two(hours, "h", minutes, "m")
    days, hours = divmod(hours, 24)
    return _two(days, "d", hours, "h")


def _approx(seconds: float) -> str:
    """``seconds`` rounded to one unit below an hour, to two above: ``<1s``, ``59s``, ``1m``,
    ``59m``, ``1h``, ``1h 1m``, ``2d 4h``."""
    if seconds < 1:
        return "<1s"
    whole = math.floor(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    minutes = math.floor(seconds / 60 + 0.5)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        hours, minutes = divmod(minutes, 60)
        return _two(hours, "h", minutes, "m")
    days, hours = divmod(math.floor(seconds / 3600 + 0.5), 24)
    return _two(days, "d", hours, "h")


def _two(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}" if not small else f"{big}{big_unit} {small}{small_unit}"


def relative(when: datetime | None, now: datetime) -> str:
    """``when`` from ``now``'s point of view, rounded as people say it: ``in 5m``, ``12s ago``,
    ``in 1h 2m``, ``now`` (the exact time is the ``timestamp``)."""
    if when is None:
        return NONE
    delta = (when - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    shown = span(delta, approx=True)
    return f"in {shown}" if delta > 0 else f"{shown} ago"


def timestamp(when: datetime | None) -> str:
    """``2030-01-01 12:00:00.123 UTC``."""
    if when is None:
        return NONE
    return f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d} UTC"


def seconds_text(value: timedelta | None) -> str:
    """A duration as the settings form shows it: ``0.1s``, ``3600s``."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    return f"{seconds:g}s" if seconds != int(seconds) else f"{int(seconds)}s"


def last_result(status_code: int | None, message: str) -> tuple[str, str]:
    """(text, kind) of a task's last attempt as ``Attempt.response_status`` records it: the
    HTTP status when the handler answered, else why there was no answer. ``kind`` is ``ok``,
    ``failed`` or ``none`` (no attempt ended yet)."""
    if status_code is None:
        return NONE, "none"
    if status_code == 0 and not message:
        return "2xx", "ok"
    prefix = "HTTP status code "
    if message.startswith(prefix):
        return message[len(prefix) :], "failed"
    if message.startswith("The handler did not answer"):
        return "timeout", "failed"
    if message.startswith("The handler could not be reached"):
        return "unreachable", "failed"
    return "refused", "failed"


def snippet(body: bytes, chars: int = 160) -> str:
    """The start of a body on one line (undecodable bytes shown as \ufffd)."""
    text = " ".join(body[: chars * 4].decode("utf-8", errors="replace").split())
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


REASONS = {
    "succeeded": "succeeded",
    "max_attempts": "failed for good: out of attempts",
    "max_retry_duration": "failed for good: out of retry time",
    "deleted": "deleted",
    "purged": "purged with its queue",
}


def reason_text(reason: str) -> str:
    """Why a task left its queue, in words."""
    return REASONS.get(reason, reason)
