"""Encodes domain records as JSON for SQL backends; decodes them back, driven by type hints.

Times are stored as integer microseconds since the epoch (UTC), durations as integer
microseconds, bytes as base64, enums as their integer value.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch for a timezone-aware time."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def encode(value: Any) -> Any:
    """A JSON-safe form of a domain value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return to_micros(value)
    if isinstance(value, timedelta):
        return value // timedelta(microseconds=1)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(kind: type[T], data: Any) -> T:
    """Rebuild a value of ``kind`` from :func:`encode`'s output."""
    return typing.cast(T, _decode(kind, data))


def dumps(value: Any) -> str:
    return json.dumps(encode(value), separators=(",", ":"))


def loads(kind: type[T], text: str | bytes) -> T:
    return decode(kind, json.loads(text))


@cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _decode(kind: Any, data: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        present = next(a for a in typing.get_args(kind) if a is not type(None))
        return None if data is None else _decode(present, data)
    if dataclasses.is_dataclass(kind):
        hints = _hints(kind)  # type: ignore[arg-type]
        build = typing.cast(Callable[..., Any], kind)
        return build(**{k: _decode(hints[k], v) for k, v in data.items() if k in hints})
    if origin is tuple:
        return _decode_tuple(typing.get_args(kind), data)
    if origin is dict:
        value_kind = typing.get_args(kind)[1]
        return {k: _decode(value_kind, v) for k, v in data.items()}
    if kind in _SCALARS:
        return _SCALARS[kind](data)
    if isinstance(kind, type) and issubclass(kind, IntEnum):
        return kind(data)
    return data


def _decode_tuple(args: tuple[Any, ...], data: list[Any]) -> tuple[Any, ...]:
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_decode(args[0], v) for v in data)
    return tuple(_decode(a, v) for a, v in zip(args, data, strict=True))


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    datetime: from_micros,
    timedelta: lambda micros: timedelta(microseconds=micros),
    bytes: base64.b64decode,
}
