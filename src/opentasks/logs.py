"""Log output of ``opentasks serve``: ``--log-format text`` (one readable line per record) or
``json`` (one JSON object per line, for log shippers).

A JSON line holds ``time`` (RFC 3339, UTC), ``level``, ``logger`` and ``message``, then every
structured field the caller passed with ``extra=`` (``queue``, ``task``, ``attempt``,
``status``, ``duration_ms``, ...), then ``exception`` (the formatted traceback) when the record
carries one. A field named like one of the four core keys is kept under ``extra_<name>``.
Values JSON cannot hold are written as their ``str()``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CORE = ("time", "level", "logger", "message")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON (no line breaks inside: they are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[f"extra_{key}" if key in _CORE else key] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):  # NaN, a non-string key, a cycle: each field as its str()
            safe = {key: value if isinstance(value, str) else str(value) for key, value in entry.items()}
            return json.dumps(safe, ensure_ascii=False, separators=(",", ":"))


def rfc3339(created: float) -> str:
    """A record's creation time as RFC 3339 in UTC with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``--log-format``; ValueError for an unknown name."""
    name = log_format.lower()
    if name == "json":
        return JsonFormatter()
    if name == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"--log-format: '{log_format}' is not one of {', '.join(LOG_FORMATS)}.")


def configure(level: str = "INFO", log_format: str = "text", *, stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``log_format``,
    replacing the handlers the root logger had."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
