"""Proto3 JSON parsing with Google's error messages: each refusal names the field path and the
offending value (``Invalid value at 'task.schedule_time' (type.googleapis.com/...), "+PT1H": ...``),
instead of json_format's internal wording."""

from __future__ import annotations

import json
import re
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


def parse_json(data: dict[str, Any], message: PB, *, prefix: str = "", query: bool = False) -> None:
    """Merge ``data`` (proto3 JSON) into ``message``, or raise InvalidArgument naming the field.

    ``prefix`` is the snake_case path of ``message`` inside the request (``queue`` when the body
    is the request's ``queue`` field); ``query`` says the data came from query parameters.
    """
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, RecursionError, ValueError, TypeError, OverflowError) as error:
        found = explain(data, message.DESCRIPTOR, prefix, query=query)
        raise InvalidArgument(found or f"Invalid JSON payload received. {_clean(str(error))}") from None


def explain(data: dict[str, Any], message_type: Any, prefix: str, *, query: bool = False) -> str | None:
    """The message for the first field of ``data`` that ``message_type`` cannot take, if any."""
    fields = {f.json_name: f for f in message_type.fields} | {f.name: f for f in message_type.fields}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            return _unknown_name(key, prefix, query)
        path = f"{prefix}.{field.name}" if prefix else field.name
        nested = _explain_nested(field, value, path)
        if nested is not None:
            return nested
        try:
            json_format.ParseDict({key: value}, GetMessageClass(message_type)())
        except (json_format.ParseError, RecursionError, ValueError, TypeError, OverflowError) as error:
            return _invalid_value(field, value, path, str(error))
    return None


def _explain_nested(field: Any, value: Any, path: str) -> str | None:
    """Descend into message fields (not well-known types or maps) to find the deepest culprit."""
    message_type = field.message_type
    if message_type is None or message_type.full_name.startswith("google.protobuf."):
        return None
    if message_type.GetOptions().map_entry:
        return None
    if field.is_repeated:
        if not isinstance(value, list):
            return None
        for index, item in enumerate(value):
            if isinstance(item, dict):
                found = explain(item, message_type, f"{path}[{index}]")
                if found is not None:
                    return found
        return None
    return explain(value, message_type, path) if isinstance(value, dict) else None


def _unknown_name(key: str, prefix: str, query: bool) -> str:
    if query:
        return (
            f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter. '
            f"Field '{key}' could not be found in request message."
        )
    where = f" at '{prefix}'" if prefix else ""
    return f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.'


def _invalid_value(field: Any, value: Any, path: str, error: str) -> str:
    if field.message_type is not None:
        type_name = f"type.googleapis.com/{field.message_type.full_name}"
        reason = _REASONS.get(field.message_type.full_name) or _clean(error)
        if field.message_type.full_name not in _REASONS and not isinstance(value, dict | list):
            reason = "Expected a JSON object." if not field.is_repeated else "Expected a JSON array."
    elif field.enum_type is not None:
        type_name = f"type.googleapis.com/{field.enum_type.full_name}"
        names = ", ".join(v.name for v in field.enum_type.values)
        reason = f"not a value of the enum; use one of {names} or its number."
    else:
        type_name = _SCALAR_TYPES.get(field.type, "TYPE_UNKNOWN")
        reason = _clean(error)
    return f"Invalid value at '{path}' ({type_name}), {_render(value)}: {reason}"


def _render(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS] + "..."


def _clean(error: str) -> str:
    """json_format's innermost reason, without its 'Failed to parse X field:' prefixes and its
    trailing 'at Message.field' location (the caller names the field itself)."""
    reason = error.rsplit(" field: ", 1)[-1]
    reason = re.sub(r"\s+at \"?[\w.]+\"?\.*\s*(Available Fields.*)?$", "", reason, flags=re.DOTALL)
    reason = reason.strip().rstrip(".")
    return (reason[0].upper() + reason[1:] + ".") if reason else "Invalid value."
