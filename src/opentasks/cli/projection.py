"""gcloud's ``--format`` values: ``NAME[ATTRIBUTES](KEY.TRANSFORM():label=TITLE, ...)``.

The names are ``yaml``, ``json``, ``none``, ``table``, ``csv`` and ``value``; the attribute
``no-heading``; the transforms ``basename()``, ``yesno(yes=, no=)``, ``format("{0}")``,
``sub(OLD, NEW)``, ``len()``, ``upper()``, ``lower()``, ``date()`` and, on a whole task,
``tasktype()``. A key is a dotted path
of camelCase fields, as in the REST API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("yaml", "json", "none", "table", "csv", "value")
_FORMAT = re.compile(
    r"^\s*(?P<kind>[a-z]+)\s*(?:\[(?P<attributes>[^\]]*)\])?\s*(?:\((?P<keys>.*)\))?\s*$", re.S
)
_CALL = re.compile(r"^(?P<name>[A-Za-z_]\w*)\((?P<args>.*)\)$", re.S)


@dataclass(frozen=True)
class Transform:
    """One ``.name(args)`` of a key."""

    name: str
    args: tuple[str, ...] = ()
    kwargs: tuple[tuple[str, str], ...] = ()

    def apply(self, value: Any) -> Any:
        options = dict(self.kwargs)
        if self.name == "yesno":
            yes = options.get("yes", self.args[0] if self.args else None)
            no = options.get("no", self.args[1] if len(self.args) > 1 else "")
            return (value if yes is None else yes) if value not in (None, "", 0, False, [], {}) else no
        if self.name == "sub":
            if len(self.args) < 2:
                return value
            return stringify(value).replace(self.args[0], self.args[1])
        return _SIMPLE[self.name](value, self.args)


_SIMPLE: dict[str, Callable[[Any, tuple[str, ...]], Any]] = {
    "basename": lambda value, _: stringify(value).rsplit("/", 1)[-1],
    "format": lambda value, args: (args[0] if args else "{0}").format(stringify(value)),
    "len": lambda value, _: len(value) if isinstance(value, list | dict | str) else 0,
    "upper": lambda value, _: stringify(value).upper(),
    "lower": lambda value, _: stringify(value).lower(),
    "date": lambda value, _: value,
    "tasktype": lambda task, _: _task_type(task),
}


def _task_type(task: Any) -> str:
    """gcloud's TYPE word for a task."""
    if not isinstance(task, dict):
        return ""
    if "appEngineHttpRequest" in task:
        return "app-engine"
    return "http" if "httpRequest" in task else ("pull" if "pullMessage" in task else "")


@dataclass(frozen=True)
class Column:
    """One key of a projection: where the value is, how it is shown, its title."""

    path: tuple[str, ...]
    transforms: tuple[Transform, ...] = ()
    label: str | None = None

    @classmethod
    def of(cls, text: str) -> Column:
        """``rateLimits.maxAttempts.yesno(no="unlimited"):label=MAX`` -> a Column."""
        expression, *attributes = _split(text.strip(), ":")
        path: list[str] = []
        transforms: list[Transform] = []
        for segment in _split(expression, "."):
            call = _CALL.match(segment.strip())
            if call:
                transforms.append(_transform(call["name"], call["args"]))
            elif transforms or not re.fullmatch(r"[A-Za-z_][\w-]*", segment.strip()):
                raise ValueError(f"'{text}' is not a key: write FIELD.FIELD.transform():label=TITLE")
            else:
                path.append(segment.strip())
        label = None
        for attribute in attributes:
            name, _, value = attribute.partition("=")
            if name.strip() == "label":
                label = _unquote(value.strip())
        return cls(tuple(path), tuple(transforms), label)

    def value(self, resource: dict[str, Any]) -> Any:
        value: Any = resource
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        for transform in self.transforms:
            value = transform.apply(value)
        return value

    @property
    def title(self) -> str:
        """The label, else the last field in gcloud's heading style (``scheduleTime`` -> SCHEDULE_TIME)."""
        if self.label is not None:
            return self.label
        last = self.path[-1] if self.path else ""
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", last).upper()


@dataclass(frozen=True)
class Projection:
    """A parsed ``--format``: its kind, whether tables and CSV have a heading, and the columns."""

    kind: str
    columns: tuple[Column, ...] = ()
    heading: bool = True

    def cells(self, resource: dict[str, Any]) -> list[str]:
        return [stringify(column.value(resource), self.kind) for column in self.columns]

    def titles(self) -> list[str]:
        return [column.title for column in self.columns]

    def with_defaults(self, default: Projection) -> Projection:
        """The command's default columns when none are named; else columns without a label take
        the label of the same key in the default (as gcloud does)."""
        if not self.columns:
            return Projection(self.kind, default.columns, self.heading)
        known = {(c.path, c.transforms): c.label for c in default.columns if c.label}
        columns = tuple(
            c if c.label else Column(c.path, c.transforms, known.get((c.path, c.transforms)))
            for c in self.columns
        )
        return Projection(self.kind, columns, self.heading)


def parse_format(text: str) -> Projection:
    """A ``--format`` value; ValueError says what is wrong."""
    found = _FORMAT.match(text)
    if not found or found["kind"] not in KINDS:
        raise ValueError(f"'{text}' is not a format: use one of {', '.join(KINDS)}, e.g. 'value(name)'.")
    kind, keys = found["kind"], found["keys"]
    attributes = {a.strip() for a in (found["attributes"] or "").split(",") if a.strip()}
    columns = tuple(Column.of(key) for key in _split(keys, ",") if key.strip()) if keys else ()
    if kind in ("csv", "value") and not columns:
        raise ValueError(f"'{text}' names no keys: write {kind}(KEY,...), e.g. {kind}(name).")
    if kind == "table" and not columns and keys is not None:
        raise ValueError(f"'{text}' names no keys: write table(KEY,...).")
    return Projection(kind, columns, heading="no-heading" not in attributes)


def stringify(value: Any, kind: str = "table") -> str:
    """A value as gcloud's printers write it in a cell: nothing for None, floats to 6 significant
    digits; in csv and value, maps as ``k=v;k=v`` and lists as ``a;b``."""
    if value is None:
        return ""
    if isinstance(value, float):
        return _float(value)
    if kind in ("csv", "value") and isinstance(value, dict):
        return ";".join(f"{key}={inner}" for key, inner in sorted(value.items()))
    if kind in ("csv", "value") and isinstance(value, list):
        return ";".join(str(inner) if inner else "" for inner in value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _float(number: float) -> str:
    """gcloud's TransformFloat: 6 significant digits, and no exponent below 1e9."""
    text = f"{number:.6}"
    exponent = text.find("e+")
    if exponent >= 0 and int(text[exponent + 2 :]) < 9:
        return f"{number:.1f}"
    return text


def _transform(name: str, text: str) -> Transform:
    known = {"yesno", "sub", *_SIMPLE}
    if name not in known:
        raise ValueError(f"unknown transform {name}(): use one of {', '.join(sorted(known))}")
    args: list[str] = []
    kwargs: list[tuple[str, str]] = []
    for part in _split(text, ","):
        key, sep, value = part.partition("=")
        if sep and re.fullmatch(r"\s*[a-z_]+\s*", key):
            kwargs.append((key.strip(), _unquote(value.strip())))
        elif part.strip():
            args.append(_unquote(part.strip()))
    return Transform(name, tuple(args), tuple(kwargs))


def _split(text: str, separator: str) -> Sequence[str]:
    """``text`` split at ``separator`` outside quotes, parentheses and brackets."""
    parts, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text
