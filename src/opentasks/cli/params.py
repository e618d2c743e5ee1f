"""Command-line parameter types shared by the commands: a bad value is a usage error that names
the flag, never a traceback."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

_ISO_DURATION = re.compile(
    r"P(?:(?P<days>\d+(?:\.\d+)?)D)?(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?"
    r"(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)


def duration(setting: str) -> click.ParamType[timedelta, Any]:
    """A duration flag: ``10s``, ``5m``, ``1h``, ``7d``, ``250ms``, plain seconds or ISO 8601 (``PT1H``)."""

    class Duration(click.ParamType[timedelta, Any]):
        name = "duration"

        def convert(
            self, value: object, param: click.Parameter | None, ctx: click.Context | None
        ) -> timedelta:
            if isinstance(value, timedelta):
                return value
            iso = _iso_duration(str(value))
            if iso is not None:
                return iso
            from opentasks.config import ConfigError, parse_duration  # noqa: PLC0415 - slow to import

            try:
                return parse_duration(str(value), setting=setting)
            except ConfigError as error:
                self.fail(str(error), param, ctx)

    return Duration()


def _iso_duration(text: str) -> timedelta | None:
    found = _ISO_DURATION.fullmatch(text.strip())
    if found is None or not any(found.groups()):
        return None
    parts = {key: float(value) for key, value in found.groupdict().items() if value}
    return timedelta(**parts)


class MaxAttempts(click.ParamType[int, Any]):
    """A count of attempts: a whole number, or -1 / ``unlimited``."""

    name = "count"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = str(value).strip().lower()
        if text == "unlimited":
            return -1
        try:
            number = int(text)
        except ValueError:
            self.fail(f"'{value}' is not a whole number or 'unlimited'.", param, ctx)
        if number < -1:
            self.fail(f"{number} is less than -1 (-1 means unlimited).", param, ctx)
        return number


class ScheduleTime(click.ParamType[datetime, Any]):
    """When a task is due: RFC 3339 (a missing offset means UTC) or ``+DURATION`` from now."""

    name = "time"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        if text.startswith("+"):
            from opentasks.clock import SystemClock  # noqa: PLC0415 - only relative times need it

            delay = duration("--schedule-time").convert(text[1:], param, ctx)
            return SystemClock().now() + delay
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"'{text}' is neither RFC 3339 (2025-01-01T10:00:00Z) nor +DURATION (+10m).", param, ctx
            )
        return when if when.tzinfo else when.replace(tzinfo=UTC)


def seconds(value: timedelta) -> str:
    """A ``google.protobuf.Duration`` in its JSON form: ``1.5s``."""
    text = f"{value.total_seconds():.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def rfc3339(value: datetime) -> str:
    """A ``google.protobuf.Timestamp`` in its JSON form."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def key_value(text: str, flag: str) -> tuple[str, str]:
    """``KEY:VALUE`` (a header, a setting), both stripped."""
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise click.BadParameter(f"'{text}': write KEY:VALUE.", param_hint=flag)
    return key.strip(), value.strip()
