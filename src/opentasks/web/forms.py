"""The dashboard's form fields in and out (pure): the queue settings form as the fields of an
UpdateQueue (a queue and an update mask naming what changed), and the values it shows.

Only the spelling is checked here (a number, a duration); whether a value is allowed is decided
by the queue service, so its messages are the API's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from msgspec.structs import replace

from opentasks.domain.queue import Queue
from opentasks.errors import InvalidArgument
from opentasks.web.present import seconds_text

_SECONDS = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*s?\s*")
# What Python's int() and float() also take (other scripts' digits, "1_000", "nan") is not a
# number here: plain ASCII decimals only.
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_FIELD_CHARS = 40


@dataclass(frozen=True)
class Field:
    """One input of the settings form: its name, the update-mask path it sets, its label and
    how it is spelled (``float``, ``int`` or ``seconds``)."""

    name: str
    path: str
    label: str
    kind: str
    hint: str = ""


SETTINGS_FIELDS = (
    Field(
        "max_dispatches_per_second",
        "rate_limits.max_dispatches_per_second",
        "Max rate",
        "float",
        "per second",
    ),
    Field("max_burst_size", "rate_limits.max_burst_size", "Max burst", "int", "derived from the rate"),
    Field("max_concurrent_dispatches", "rate_limits.max_concurrent_dispatches", "Max concurrent", "int"),
    Field("max_attempts", "retry_config.max_attempts", "Max attempts", "int", "-1: unlimited"),
    Field("min_backoff", "retry_config.min_backoff", "Min backoff", "seconds", "e.g. 0.1s"),
    Field("max_backoff", "retry_config.max_backoff", "Max backoff", "seconds", "e.g. 3600s"),
    Field("max_doublings", "retry_config.max_doublings", "Max doublings", "int"),
    Field(
        "max_retry_duration",
        "retry_config.max_retry_duration",
        "Max retry duration",
        "seconds",
        "0s: unlimited",
    ),
)


def settings_values(queue: Queue) -> dict[str, str]:
    """The form's inputs as the queue's current settings fill them."""
    rate, retry = queue.rate_limits, queue.retry_config
    return {
        "max_dispatches_per_second": f"{rate.max_dispatches_per_second:g}",
        "max_burst_size": str(rate.max_burst_size),
        "max_concurrent_dispatches": str(rate.max_concurrent_dispatches),
        "max_attempts": str(retry.max_attempts),
        "min_backoff": seconds_text(retry.min_backoff),
        "max_backoff": seconds_text(retry.max_backoff),
        "max_doublings": str(retry.max_doublings),
        "max_retry_duration": seconds_text(retry.max_retry_duration) or "0s",
    }


@dataclass(frozen=True)
class SettingsChange:
    """What a submitted settings form asks for: the queue's fields and the mask of the changed
    ones (empty: nothing changed). ``burst_changed`` says the burst was edited."""

    queue: Queue
    mask: list[str]
    burst_changed: bool


def settings_change(current: Queue, form: Mapping[str, str]) -> SettingsChange:
    """The UpdateQueue a settings form asks for: every field whose text differs from what the
    form showed, parsed; a field left out of the form is left alone. InvalidArgument names a
    field that is no number or duration."""
    shown = settings_values(current)
    rate, retry = current.rate_limits, current.retry_config
    mask: list[str] = []
    for field in SETTINGS_FIELDS:
        given = form.get(field.name)
        if given is None or given.strip() == shown[field.name]:
            continue
        value = parse_field(field, given)
        if field.path.startswith("rate_limits."):
            rate = replace(rate, **{field.name: value})
        else:
            retry = replace(retry, **{field.name: value})
        mask.append(field.path)
    updated = replace(current, rate_limits=rate, retry_config=retry)
    return SettingsChange(updated, mask, "rate_limits.max_burst_size" in mask)


def parse_field(field: Field, text: str) -> float | int | timedelta:
    """The value of ``text`` typed into ``field``."""
    text = text.strip()
    if len(text) > MAX_FIELD_CHARS:
        raise InvalidArgument(f"{field.name}: '{text[:MAX_FIELD_CHARS]}…' is too long.")
    if field.kind == "seconds":
        return parse_seconds(field.name, text)
    if field.kind == "float" and text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise InvalidArgument(f"{field.name}: '{text}' is not a finite number.")
    pattern = _FLOAT if field.kind == "float" else _INT
    if not pattern.fullmatch(text):
        kind = "a number" if field.kind == "float" else "a whole number"
        raise InvalidArgument(f"{field.name}: '{text}' is not {kind}.")
    number = float(text) if field.kind == "float" else int(text)
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidArgument(f"{field.name}: '{text}' is not a finite number.")
    return number


def parse_seconds(name: str, text: str) -> timedelta:
    """``"0.1s"``, ``"3600"`` or ``"3600s"`` as a duration."""
    match = _SECONDS.fullmatch(text)
    if not match:
        raise InvalidArgument(f"{name}: '{text}' is not a duration in seconds; write e.g. 0.5s or 3600s.")
    seconds = float(match[1])
    if seconds > timedelta.max.total_seconds() / 2:
        raise InvalidArgument(f"{name}: {text} is too long a duration.")
    return timedelta(seconds=seconds)


def burst_refusal(current: Queue) -> str | None:
    """Why the burst cannot be set on ``current`` (None: it can)."""
    if current.from_queue_yaml:
        return None
    return (
        "max_burst_size is derived from max_dispatches_per_second on Cloud Tasks (output only); "
        "only queues applied from a queue.yaml set it (bucket_size)."
    )


def page_params(query: Mapping[str, str]) -> tuple[str, str, str]:
    """(tab, search text, cursor) of a queue page's query string, as given."""
    return query.get("tab", "due"), query.get("q", ""), query.get("cursor", "")
