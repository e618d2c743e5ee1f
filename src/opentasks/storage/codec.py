"""Encodes domain records as JSON for SQL backends and decodes them back (msgspec, typed).

Times are RFC 3339 strings (UTC, microseconds), durations ISO 8601 (``PT600S``), bytes
base64, enums their integer value. Decoders are built once per record type.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encoder = msgspec.json.Encoder()


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch for a timezone-aware time (index columns hold these)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def dumps(value: Any) -> str:
    return _encoder.encode(value).decode()


def loads(kind: type[T], text: str | bytes) -> T:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return typing.cast(T, decoder.decode(text))


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
