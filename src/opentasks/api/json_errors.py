"""Proto3 JSON parsing held to Google's syntax, with Google's error messages.

Every value is checked against its field before ``json_format`` reads it, because
``json_format`` is more lenient than ``cloudtasks.googleapis.com`` (it takes ``"1_0s"``,
``"2030-1-2T3:4:5Z"``, an offset of ``+25:00``, ``true`` for an enum, ``"!!"`` as base64) and
its refusals are Python's words (``invalid literal for int() with base 10: ''``). Each refusal
names the field path and the offending value, as Google does::

    Invalid value at 'task.schedule_time' (type.googleapis.com/google.protobuf.Timestamp), "+PT1H": ...
"""

from __future__ import annotations

import calendar
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import descriptor, json_format
from google.protobuf.message_factory import GetMessageClass

from opentasks.api.messages import PB
from opentasks.errors import InvalidArgument

_FD = descriptor.FieldDescriptor
_SCALAR_TYPES = {
    value: name for name, value in vars(_FD).items() if name.startswith("TYPE_") and isinstance(value, int)
}
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_FIELD_MASK = "google.protobuf.FieldMask"
_REASONS = {
    _TIMESTAMP: (
        "Illegal timestamp format; timestamps are RFC 3339 in years 0001 to 9999 and must end with 'Z' "
        'or have a valid timezone offset, e.g. "2030-01-02T03:04:05Z".'
    ),
    _DURATION: (
        "Illegal duration format; durations are seconds with up to 9 fractional digits followed by "
        '\'s\', at most 315576000000s, e.g. "30s" or "0.5s".'
    ),
    _FIELD_MASK: 'Illegal field mask; field masks are comma-separated field paths, e.g. "rateLimits".',
}
_MAX_VALUE_CHARS = 200
_JSON_ERRORS = (json_format.ParseError, RecursionError, ValueError, TypeError, OverflowError)

_TIMESTAMP_TEXT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:Z|([+-])(\d{2}):(\d{2}))", re.ASCII
)
_DURATION_TEXT = re.compile(r"-?(\d+)(?:\.\d{1,9})?s", re.ASCII)
_MASK_PATH = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*", re.ASCII)
_INTEGER_TEXT = re.compile(r"-?\d+", re.ASCII)
_NUMBER_TEXT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_-]*={0,2}", re.ASCII)
_SPECIAL_NUMBERS = frozenset({"NaN", "Infinity", "-Infinity"})
_MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_MAX_DURATION_SECONDS = 315_576_000_000
_INT32 = (-(2**31), 2**31 - 1)
_UINT32 = (0, 2**32 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
_INTEGER_RANGES = {
    _FD.TYPE_INT32: _INT32,
    _FD.TYPE_SINT32: _INT32,
    _FD.TYPE_SFIXED32: _INT32,
    _FD.TYPE_UINT32: _UINT32,
    _FD.TYPE_FIXED32: _UINT32,
    _FD.TYPE_INT64: _INT64,
    _FD.TYPE_SINT64: _INT64,
    _FD.TYPE_SFIXED64: _INT64,
    _FD.TYPE_UINT64: _UINT64,
    _FD.TYPE_FIXED64: _UINT64,
}


# json's own reasons for a syntax error, in Google's parser's words.
_SYNTAX_REASONS = {
    "Expecting value": "Unexpected token.",
    "Expecting ',' delimiter": "Expected , or a closing bracket after a value.",
    "Expecting ':' delimiter": "Expected : between key:value pair.",
    "Expecting property name enclosed in double quotes": "Expected an object key in double quotes.",
    "Unterminated string starting at": "Closing quote expected in string.",
    "Invalid control character at": "Invalid control character in string.",
    "Invalid \\escape": "Invalid escape sequence in string.",
    "Invalid \\uXXXX escape": "Invalid \\u escape sequence in string.",
    "Extra data": "Unexpected data after the JSON value.",
}


class _BareConstant(ValueError):
    """NaN, Infinity or -Infinity outside a string: Python's json takes them, JSON does not."""


def _refuse_constant(name: str) -> Any:
    raise _BareConstant(name)


def load_json(text: str) -> Any:
    """``text`` as JSON (strictly: no bare NaN or Infinity), or InvalidArgument in Google's words
    with the line and column of the error."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidArgument("Invalid JSON payload received. The JSON is nested too deeply.") from None
    except _BareConstant as error:
        raise InvalidArgument(
            f'Invalid JSON payload received. Unexpected token "{error}": JSON has no such literal; '
            f'a number field takes the string "{error}".'
        ) from None
    except json.JSONDecodeError as error:
        reason = _SYNTAX_REASONS.get(error.msg, "Unexpected token.")
        raise InvalidArgument(
            f"Invalid JSON payload received. {reason} Line {error.lineno}, column {error.colno}."
        ) from None


def parse_json(data: dict[str, Any], message: PB, *, prefix: str = "", query: bool = False) -> None:
    """Merge ``data`` (proto3 JSON) into ``message``, or raise InvalidArgument naming the field.

    ``prefix`` is the snake_case path of ``message`` inside the request (``queue`` when the body
    is the request's ``queue`` field); ``query`` says the data came from query parameters.
    """
    problem = explain(data, message.DESCRIPTOR, prefix, query=query)
    if problem is None:
        try:
            json_format.ParseDict(data, message)
            return
        except _JSON_ERRORS:  # a form the checks above let through: still Google's words
            where = f" at '{prefix}'" if prefix else ""
            problem = f"Invalid JSON payload received{where}: a value does not have its field's type."
    raise InvalidArgument(problem)


def explain(data: dict[str, Any], message_type: Any, prefix: str, *, query: bool = False) -> str | None:
    """The message for the first field of ``data`` that ``message_type`` cannot take, if any."""
    fields = _fields_by_key(message_type)
    oneofs: dict[str, str] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            return _unknown_name(key, prefix, query)
        if value is None:  # null: the field's default, whatever its type
            continue
        path = f"{prefix}.{field.name}" if prefix else field.name
        problem = _oneof_conflict(field, key, oneofs, prefix) or _check_field(field, value, path)
        if problem is not None:
            return problem
    return None


@functools.cache
def _fields_by_key(message_type: Any) -> Mapping[str, Any]:
    """A message's fields by their JSON name and their proto name."""
    return {f.json_name: f for f in message_type.fields} | {f.name: f for f in message_type.fields}


def _oneof_conflict(field: Any, key: str, seen: dict[str, str], prefix: str) -> str | None:
    """Two members of one oneof set in the same object (a proto3 ``optional`` is no real oneof)."""
    oneof = _real_oneof(field)
    if oneof is None:
        return None
    if oneof.name in seen:
        where = f" at '{prefix}'" if prefix else ""
        return (
            f"Invalid JSON payload received. Oneof field '{oneof.name}' is already set by "
            f'"{seen[oneof.name]}"{where}. Cannot set "{key}".'
        )
    seen[oneof.name] = key
    return None


@functools.cache
def _real_oneof(field: Any) -> Any:
    oneof = field.containing_oneof
    return oneof if oneof is not None and len(oneof.fields) >= 2 else None


def _check_field(field: Any, value: Any, path: str) -> str | None:
    if _is_map(field):
        return _check_map(field, value, path)
    if field.is_repeated:
        if not isinstance(value, list):
            return _invalid(field, value, path, "Expected a JSON array.")
        for index, item in enumerate(value):
            problem = _check_value(field, item, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None
    return _check_value(field, value, path)


@functools.cache
def _is_map(field: Any) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


def _check_map(field: Any, value: Any, path: str) -> str | None:
    entry = field.message_type
    key_type, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    if not isinstance(value, dict):
        type_name = f"map<{_type_name(key_type)}, {_type_name(value_field)}>"
        return f"Invalid value at '{path}' ({type_name}), {_render(value)}: Expected a JSON object."
    for key, item in value.items():
        problem = _check_value(value_field, item, f"{path}[{key}]")
        if problem is not None:
            return problem
    return None


def _check_value(field: Any, value: Any, path: str) -> str | None:
    """The problem with one (non-repeated) value of ``field``, if any."""
    if field.message_type is not None:
        return _check_message(field, value, path)
    if field.enum_type is not None:
        names = field.enum_type.values_by_name
        if (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and (value in names or _INTEGER_TEXT.fullmatch(value))
        ):
            return None
        return _invalid(field, value, path, _enum_reason(field))
    check, reason = _SCALAR_CHECKS.get(field.type, (_always, ""))
    return None if check(value, field.type) else _invalid(field, value, path, reason)


def _check_message(field: Any, value: Any, path: str) -> str | None:
    full_name = field.message_type.full_name
    text_check = _WELL_KNOWN_TEXT.get(full_name)
    if text_check is not None:
        ok = isinstance(value, str) and text_check(value)
        return None if ok else _invalid(field, value, path, _REASONS[full_name])
    if full_name.startswith("google.protobuf."):  # Any, Struct, wrappers ...: json_format's forms
        try:
            json_format.ParseDict(value, GetMessageClass(field.message_type)())
        except _JSON_ERRORS:
            return _invalid(field, value, path, f"Expected the JSON form of {full_name}.")
        return None
    if not isinstance(value, dict):
        return _invalid(field, value, path, "Expected a JSON object.")
    return explain(value, field.message_type, path)


def timestamp_text_ok(text: str) -> bool:
    """RFC 3339 as Google reads it: 'T' and 'Z' upper case, 0 to 9 fractional digits, an offset
    of at most 23:59, in years 0001 to 9999 once the offset is applied."""
    match = _TIMESTAMP_TEXT.fullmatch(text)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    sign, offset_hours, offset_minutes = match.group(7, 8, 9)
    if year < 1 or not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return False
    if hour > 23 or minute > 59 or second > 59:
        return False
    offset = 0
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return False
        offset = (int(offset_hours) * 60 + int(offset_minutes)) * 60 * (1 if sign == "+" else -1)
    seconds = calendar.timegm((year, month, day, hour, minute, second)) - offset
    return _MIN_TIMESTAMP_SECONDS <= seconds <= _MAX_TIMESTAMP_SECONDS


def duration_text_ok(text: str) -> bool:
    """Seconds with at most 9 fractional digits and an ``s``, within what a Duration holds."""
    match = _DURATION_TEXT.fullmatch(text)
    return match is not None and int(match[1]) <= _MAX_DURATION_SECONDS


def _field_mask_ok(text: str) -> bool:
    """Comma-separated lowerCamelCase paths; ``*`` is the whole resource (AIP-161)."""
    return text in ("", "*") or all(_MASK_PATH.fullmatch(path) for path in text.split(","))


_WELL_KNOWN_TEXT: dict[str, Callable[[str], bool]] = {
    _TIMESTAMP: timestamp_text_ok,
    _DURATION: duration_text_ok,
    _FIELD_MASK: _field_mask_ok,
}


def _integer_ok(value: Any, field_type: int) -> bool:
    """An integer within the field's range: a JSON number, or a string of ASCII digits (an
    integral number in exponent form is accepted too, as by Google's parser)."""
    number = _integer(value)
    low, high = _INTEGER_RANGES[field_type]
    return number is not None and low <= number <= high


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        value = float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _number_ok(value: Any, field_type: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and (value in _SPECIAL_NUMBERS or bool(_NUMBER_TEXT.fullmatch(value)))


def _base64_ok(value: Any, field_type: int) -> bool:
    """Standard or URL-safe base64, padding optional; nothing else (json_format drops stray
    characters silently)."""
    if not isinstance(value, str) or not _BASE64_TEXT.fullmatch(value):
        return False
    return len(value.rstrip("=")) % 4 != 1 and (len(value) % 4 == 0 or "=" not in value)


def _always(value: Any, field_type: int) -> bool:
    return True


def _integer_reason(field_type: int) -> str:
    low, high = _INTEGER_RANGES[field_type]
    return f"Expected an integer from {low} to {high}."


_SCALAR_CHECKS: dict[int, tuple[Callable[[Any, int], bool], str]] = {
    **{kind: (_integer_ok, _integer_reason(kind)) for kind in _INTEGER_RANGES},
    _FD.TYPE_DOUBLE: (_number_ok, "Expected a number."),
    _FD.TYPE_FLOAT: (_number_ok, "Expected a number."),
    _FD.TYPE_BOOL: (lambda value, _: isinstance(value, bool), "Expected true or false."),
    _FD.TYPE_STRING: (lambda value, _: isinstance(value, str), "Expected a string."),
    _FD.TYPE_BYTES: (_base64_ok, "Base64 decoding failed; bytes are sent base64-encoded."),
}


def _unknown_name(key: str, prefix: str, query: bool) -> str:
    if query:
        return (
            f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter. '
            f"Field '{key}' could not be found in request message."
        )
    where = f" at '{prefix}'" if prefix else ""
    return f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.'


def _enum_reason(field: Any) -> str:
    names = ", ".join(v.name for v in field.enum_type.values)
    return f"not a value of the enum; use one of {names} or its number."


def _type_name(field: Any) -> str:
    if field.message_type is not None:
        return f"type.googleapis.com/{field.message_type.full_name}"
    if field.enum_type is not None:
        return f"type.googleapis.com/{field.enum_type.full_name}"
    return _SCALAR_TYPES.get(field.type, "TYPE_UNKNOWN")


def _invalid(field: Any, value: Any, path: str, reason: str) -> str:
    return f"Invalid value at '{path}' ({_type_name(field)}), {_render(value)}: {reason}"


def _render(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS] + "..."
