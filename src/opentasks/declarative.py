"""What the declarative files (opentasks YAML, App Engine ``queue.yaml``) have in common.

A :class:`NodeReader` walks PyYAML's composed nodes, which keep their marks, so that every
error and note names ``FILE:LINE: FIELD``. Reading is strict: an unknown key, a value of the
wrong type or a key given twice is an error, never silently dropped. Values out of range are
checked with the API's own validation (:func:`out_of_range`), so the message is the one the
server would give, plus the line.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from opentasks.config import ConfigError, parse_duration
from opentasks.domain.limits import MAX_INT32, Limits
from opentasks.domain.names import QUEUE_NAME_FORMAT, QueueName
from opentasks.domain.queue import Queue, RateLimits, RetryConfig, resolve_queue
from opentasks.errors import InvalidArgument

_QUEUE_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
# The server's own limits (rate, concurrency) are checked by the server; here only what any
# server refuses.
_ANY_SERVER = Limits(max_dispatches_per_second=math.inf, max_concurrent_dispatches=MAX_INT32)
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_API_FIELD = re.compile(r"(RateLimits|RetryConfig)\.(\w+)")

Entry = tuple[yaml.Node, yaml.Node]
"""A key node and its value node."""


class ConfigFileError(ConfigError):
    """The file is invalid; the message is ``FILE:LINE: FIELD: what is wrong``."""


@dataclass(frozen=True)
class Origin:
    """Where a setting was declared: its line and its field as the file spells it."""

    line: int
    field: str


@dataclass(frozen=True)
class DeclaredQueue:
    """One queue as a file declares it: only the fields it names are managed.

    ``origins`` maps a setting's field path to where the file declared it (settings a
    queue.yaml implies by default have none; the queue's own line stands for them).
    """

    name: str
    line: int
    settings: dict[str, Any] = field(default_factory=dict)  # Queue field path -> value
    state: str | None = None  # "RUNNING" | "PAUSED" | None (leave as is)
    origins: dict[str, Origin] = field(default_factory=dict)

    def origin(self, path: str | None) -> Origin:
        """Where the setting ``path`` was declared (the queue itself if unknown)."""
        found = self.origins.get(path) if path else None
        return found or Origin(self.line, self.name)


class NodeReader:
    """Walks YAML nodes of one file, keeping line numbers for every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notes: list[str] = []

    def line(self, node: yaml.Node) -> int:
        return int(node.start_mark.line) + 1

    def fail(self, node: yaml.Node | int, field_name: str, message: str) -> ConfigFileError:
        line = node if isinstance(node, int) else self.line(node)
        return ConfigFileError(f"{self.path}:{line}: {field_name}: {message}")

    def note(self, node: yaml.Node, field_name: str, message: str) -> None:
        self.notes.append(f"{self.path}:{self.line(node)}: {field_name}: {message}")

    def unknown(self, key_node: yaml.Node, field_name: str, known: Iterable[str]) -> ConfigFileError:
        """An unknown key, with the closest known one when it looks like a typo."""
        known = list(known)
        close = difflib.get_close_matches(str(key_node.value), known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(known)}."
        return self.fail(key_node, field_name, f"unknown field; {hint}")

    def mapping(
        self, node: yaml.Node, field_name: str, normalize: Callable[[str], str] = str
    ) -> dict[str, Entry]:
        """The entries of a mapping by (normalized) key; a key given twice is an error."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, field_name, f"expected a mapping of keys to values, not {_shown(node)}.")
        explicit = {id(key_node) for key_node, _ in node.value if key_node.tag != _MERGE}
        if len(explicit) < len(node.value):  # `<<: *defaults` merge keys: YAML's own rules
            node = yaml.MappingNode(node.tag, list(node.value), node.start_mark, node.end_mark)
            try:
                yaml.constructor.SafeConstructor().flatten_mapping(node)
            except yaml.YAMLError as error:
                raise self.fail(
                    node, field_name, f"cannot merge: {getattr(error, 'problem', error)}."
                ) from None
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, field_name, "a key must be a single word.")
            key = normalize(str(key_node.value))
            if key in entries and id(entries[key][0]) in explicit:
                first = self.line(entries[key][0])
                raise self.fail(
                    key_node,
                    _join(field_name, str(key_node.value)),
                    f"given twice, at lines {first} and {self.line(key_node)}.",
                )
            entries[key] = (key_node, value_node)
        return entries

    def sequence(self, node: yaml.Node, field_name: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, field_name, f"expected a list, not {_shown(node)}.")
        return list(node.value)

    def is_null(self, node: yaml.Node) -> bool:
        """Whether ``node`` is an empty value (``key:`` with nothing after it, or ``null``)."""
        return isinstance(node, yaml.ScalarNode) and node.tag == _NULL

    def scalar(self, node: yaml.Node, field_name: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, field_name, f"expected a single value, not {_shown(node)}.")
        try:
            return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
        except yaml.YAMLError as error:  # e.g. an unknown !tag
            raise self.fail(
                node, field_name, f"cannot read the value: {getattr(error, 'problem', error)}."
            ) from None

    def typed(self, kind: str, node: yaml.Node, field_name: str) -> Any:
        """The value of ``node`` as ``kind``: int, float, str, bool, attempts or duration."""
        value = self.scalar(node, field_name) if isinstance(node, yaml.ScalarNode) else node
        try:
            return _CONVERT[kind](value)
        except (TypeError, ValueError, ConfigError):
            raise self.fail(node, field_name, f"expected {_EXPECTED[kind]}, not {_shown(value)}.") from None

    def string(self, node: yaml.Node, field_name: str) -> str:
        return str(self.typed("str", node, field_name))

    def queue_name(self, node: yaml.Node, field_name: str, *, full_names: bool = True) -> str:
        """A queue ID (or, if ``full_names``, a full queue name), checked like the API does."""
        name = self.string(node, field_name)
        if full_names and name.startswith("projects/"):
            try:
                QueueName.parse(name)
            except InvalidArgument:
                raise self.fail(node, field_name, QUEUE_NAME_FORMAT) from None
        elif not _QUEUE_ID.fullmatch(name):
            raise self.fail(
                node, field_name, f"'{name}' is not a queue ID: use 1 to 100 letters, digits and hyphens."
            )
        return name


def check_queues(reader: NodeReader, queues: list[DeclaredQueue], *, queue_yaml: bool) -> None:
    """Refuse a queue declared twice (naming both lines) and values out of range."""
    seen: dict[str, DeclaredQueue] = {}
    for queue in queues:
        if queue.name in seen:
            raise reader.fail(
                queue.line,
                queue.name,
                f"the queue is declared twice, at lines {seen[queue.name].line} and {queue.line}.",
            )
        seen[queue.name] = queue
        problem = out_of_range(queue, queue_yaml=queue_yaml)
        if problem:
            origin, message = problem
            raise reader.fail(origin.line, origin.field, message)


def out_of_range(queue: DeclaredQueue, *, queue_yaml: bool = False) -> tuple[Origin, str] | None:
    """The API's own message for a setting of ``queue`` that any server refuses, and its origin.

    The settings are checked alone: a setting the file does not name is not assumed to have
    its default (the server keeps its current value), so a lone ``min_backoff`` is only
    compared with ``max_backoff`` when both are declared.
    """
    settings = queue.settings
    min_backoff = settings.get("retry_config.min_backoff")
    max_backoff = settings.get("retry_config.max_backoff")
    probe = Queue(
        QueueName("p", "l", "q"),
        rate_limits=RateLimits(
            max_dispatches_per_second=settings.get("rate_limits.max_dispatches_per_second", 0.0),
            max_burst_size=settings.get("rate_limits.max_burst_size", 0),
            max_concurrent_dispatches=settings.get("rate_limits.max_concurrent_dispatches", 0),
        ),
        retry_config=RetryConfig(
            max_attempts=settings.get("retry_config.max_attempts", 0),
            max_retry_duration=settings.get("retry_config.max_retry_duration"),
            min_backoff=min_backoff if min_backoff is not None else max_backoff,
            max_backoff=max_backoff if max_backoff is not None else min_backoff,
            max_doublings=settings.get("retry_config.max_doublings", 0),
        ),
        from_queue_yaml=queue_yaml,
    )
    try:
        resolve_queue(probe, _ANY_SERVER)
    except InvalidArgument as error:
        return queue.origin(api_field_path(error.message)), error.message
    return None


def api_field_path(message: str) -> str | None:
    """The Queue field path an API error message is about (``RetryConfig.minBackoff`` ->
    ``retry_config.min_backoff``), or None."""
    if message.startswith("bucket_size"):
        return "rate_limits.max_burst_size"
    match = _API_FIELD.search(message)
    if not match:
        return None
    section = "rate_limits" if match[1] == "RateLimits" else "retry_config"
    return f"{section}.{snake(match[2])}"


def snake(name: str) -> str:
    """``maxAttempts`` -> ``max_attempts`` (snake_case passes through)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _join(parent: str, key: str) -> str:
    return key if parent in ("the file", "") else f"{parent}.{key}"


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError
    return float(value)


def _str(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError
    return str(value)


def _bool(value: Any) -> bool:
    if isinstance(value, str) and value in ("True", "False"):  # App Engine's spelling
        return value == "True"
    if not isinstance(value, bool):
        raise TypeError
    return value


def _attempts(value: Any) -> int:
    return -1 if value == "unlimited" else _int(value)


def _duration(value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError
    return parse_duration(str(value), setting="")


_CONVERT: dict[str, Any] = {
    "int": _int,
    "float": _float,
    "str": _str,
    "bool": _bool,
    "attempts": _attempts,
    "duration": _duration,
}
_EXPECTED = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "attempts": "a whole number or unlimited",
    "duration": "a duration such as 500ms, 30s, 15m, 1h or 7d",
}


def _shown(value: Any) -> str:
    """A value as a message shows it."""
    if isinstance(value, yaml.MappingNode):
        return "a mapping"
    if isinstance(value, yaml.SequenceNode):
        return "a list"
    if isinstance(value, yaml.ScalarNode):
        return "an empty value" if value.tag == _NULL else repr(value.value)
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)
