"""Command-line parameter types shared by the commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from opentasks.config import ConfigError, parse_duration


def duration(setting: str) -> click.ParamType[timedelta, Any]:
    """A duration flag: ``10s``, ``5m``, ``1h``, ``7d``, ``250ms`` or plain seconds."""

    class Duration(click.ParamType[timedelta, Any]):
        name = "duration"

        def convert(
            self, value: object, param: click.Parameter | None, ctx: click.Context | None
        ) -> timedelta:
            if isinstance(value, timedelta):
                return value
            try:
                return parse_duration(str(value), setting=setting)
            except ConfigError as error:
                self.fail(str(error), param, ctx)

    return Duration()
