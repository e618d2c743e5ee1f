"""Declarative configuration files: opentasks' own YAML, and App Engine's ``queue.yaml``.

opentasks YAML::

    server:                       # read by `opentasks serve --config` (flags and env vars win)
      port: 8123
      storage: sqlite:///tasks.db
    project: my-project           # default for the queues below
    location: us-central1
    queues:
      - name: emails              # a queue ID, or a full queue name
        state: RUNNING            # or PAUSED
        rate_limits: {max_dispatches_per_second: 5, max_concurrent_dispatches: 10}
        retry_config: {max_attempts: 5, min_backoff: 1s, max_backoff: 1h, max_doublings: 4}
        app_engine_routing_override: {service: worker}

A file with a top-level ``queue:`` list is an App Engine ``queue.yaml``
(:mod:`opentasks.queue_yaml`). Both are read strictly: unknown keys, wrong types, invalid
names, values out of range and a queue declared twice are errors naming ``FILE:LINE: FIELD``.
See docs/declarative.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opentasks.config import Option, file_keys, options
from opentasks.declarative import (
    ConfigFileError,
    DeclaredQueue,
    Entry,
    NodeReader,
    Origin,
    check_queues,
    snake,
)
from opentasks.queue_yaml import read_queue_yaml
from opentasks.uri_parts import URI_PARTS, uri_override

__all__ = ["ConfigFile", "ConfigFileError", "DeclaredQueue", "load"]

_TOP_KEYS = ("server", "project", "location", "queues")
_QUEUE_KEYS = ("name", "state", "rate_limits", "retry_config", "app_engine_routing_override", "http_target")
_HTTP_TARGET_KEYS = ("uri_override",)
_QUEUE_FIELDS: dict[str, dict[str, str]] = {
    # section -> field -> kind
    "rate_limits": {"max_dispatches_per_second": "float", "max_concurrent_dispatches": "int"},
    "retry_config": {
        "max_attempts": "attempts",
        "max_retry_duration": "duration",
        "min_backoff": "duration",
        "max_backoff": "duration",
        "max_doublings": "int",
    },
    "app_engine_routing_override": {"service": "str", "version": "str", "instance": "str"},
}
# The kind of value each kind of server option takes (see opentasks.config.Option).
_SERVER_KINDS = {"int": "int", "float": "float", "flag": "bool", "switch": "bool", "duration": "duration"}
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9:.\-]*")
_LOCATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    kind: str  # "opentasks" | "queue.yaml"
    queues: list[DeclaredQueue]
    server: dict[str, Any]
    project: str | None = None
    location: str | None = None
    notes: list[str] = field(default_factory=list)


def load(path: Path | str) -> ConfigFile:
    """Read and check a configuration file; raise :class:`ConfigFileError` if it is invalid."""
    path = Path(path)
    try:
        root = yaml.compose(path.read_text())
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot read it: {error.strerror}.") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not a text file (UTF-8).") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConfigFileError(f"{path}:{line}: not valid YAML: {getattr(error, 'problem', error)}.") from None
    reader = NodeReader(path)
    if root is None:
        return ConfigFile(path, "opentasks", [], {})
    top = reader.mapping(root, "the file")
    if "queue" in top and "queues" not in top:
        queues = read_queue_yaml(reader, top)
        return ConfigFile(path, "queue.yaml", queues, {}, notes=reader.notes)
    return _OpentasksReader(reader).read(top)


class _OpentasksReader:
    """The opentasks YAML format."""

    def __init__(self, reader: NodeReader) -> None:
        self.reader = reader

    def read(self, top: dict[str, Entry]) -> ConfigFile:
        reader = self.reader
        for key, (key_node, _) in top.items():
            if key not in _TOP_KEYS:
                raise reader.unknown(key_node, key, _TOP_KEYS)
        server = self._server(top["server"][1]) if "server" in top else {}
        queues = []
        if "queues" in top and not reader.is_null(top["queues"][1]):
            queues = [self._queue(node) for node in reader.sequence(top["queues"][1], "queues")]
        check_queues(reader, queues, queue_yaml=False)
        return ConfigFile(
            reader.path,
            "opentasks",
            queues,
            server,
            project=self._id(top, "project", _PROJECT),
            location=self._id(top, "location", _LOCATION),
        )

    def _id(self, top: dict[str, Entry], key: str, pattern: re.Pattern[str]) -> str | None:
        if key not in top:
            return None
        node = top[key][1]
        value = self.reader.string(node, key)
        if not pattern.fullmatch(value):
            raise self.reader.fail(node, key, f"'{value}' is not a valid {key} ID.")
        return value

    def _server(self, node: yaml.Node) -> dict[str, Any]:
        """The ``server:`` section: setting name -> value as written (``opentasks serve``'s
        options convert them), each checked against its option's kind."""
        reader = self.reader
        keys = file_keys()
        kinds = {name: option for name, option, _ in options()}
        settings: dict[str, Any] = {}
        for key, (key_node, value_node) in reader.mapping(node, "server", snake).items():
            name = keys.get(key)
            if name is None:
                raise reader.unknown(key_node, f"server.{key_node.value}", sorted(keys))
            settings[name] = self._server_value(kinds[name], value_node, f"server.{key_node.value}")
        return settings

    def _server_value(self, option: Option, node: yaml.Node, field_name: str) -> Any:
        reader = self.reader
        if isinstance(node, yaml.SequenceNode) and option.kind in ("multiple", "str"):  # locations: [a, b]
            return [reader.string(item, f"{field_name}[]") for item in node.value]
        if option.kind == "choice":
            value = reader.string(node, field_name)
            if value.upper() not in (choice.upper() for choice in option.choices):
                raise reader.fail(
                    node, field_name, f"expected one of {', '.join(option.choices)}, not '{value}'."
                )
            return value
        reader.typed(_SERVER_KINDS.get(option.kind, "str"), node, field_name)
        return reader.scalar(node, field_name)

    def _queue(self, node: yaml.Node) -> DeclaredQueue:
        reader = self.reader
        entries = reader.mapping(node, "queues[]", snake)
        if "name" not in entries:
            raise reader.fail(node, "queues[].name", "every queue needs a name.")
        name = reader.queue_name(entries["name"][1], "queues[].name")
        settings: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        state = None
        for key, (key_node, value_node) in entries.items():
            if key == "state":
                state = self._state(value_node, f"{name}.state")
            elif key == "http_target":
                self._http_target((key_node, value_node), name, settings, origins)
            elif key in _QUEUE_FIELDS:
                self._section(key, (key_node, value_node), name, settings, origins)
            elif key != "name":
                raise reader.unknown(key_node, f"{name}.{key_node.value}", _QUEUE_KEYS)
        return DeclaredQueue(name, reader.line(node), settings, state, origins)

    def _http_target(
        self, entry: Entry, queue: str, settings: dict[str, Any], origins: dict[str, Origin]
    ) -> None:
        """``http_target: {uri_override: {scheme, host, port, path, query, mode}}``: the parts of
        gcloud's ``--http-uri-override``, as a mapping."""
        reader = self.reader
        parent = f"{queue}.{entry[0].value}"
        for key, (key_node, value_node) in reader.mapping(entry[1], parent, snake).items():
            field_name = f"{parent}.{key_node.value}"
            if key not in _HTTP_TARGET_KEYS:
                raise reader.unknown(key_node, field_name, _HTTP_TARGET_KEYS)
            parts = {
                part: reader.scalar(part_value, f"{field_name}.{part_key.value}")
                for part, (part_key, part_value) in reader.mapping(value_node, field_name, snake).items()
            }
            unknown = [part for part in parts if part not in URI_PARTS]
            if unknown:
                raise reader.fail(value_node, f"{field_name}.{unknown[0]}", f"use {', '.join(URI_PARTS)}.")
            try:
                settings["http_target.uri_override"] = uri_override(parts)
            except ValueError as error:
                raise reader.fail(value_node, field_name, str(error)) from None
            origins.setdefault("http_target.uri_override", Origin(reader.line(key_node), field_name))

    def _state(self, node: yaml.Node, field_name: str) -> str:
        state = self.reader.string(node, field_name).upper()
        if state not in ("RUNNING", "PAUSED"):
            raise self.reader.fail(node, field_name, f"expected RUNNING or PAUSED, not '{state}'.")
        return state

    def _section(
        self,
        section: str,
        entry: Entry,
        queue: str,
        settings: dict[str, Any],
        origins: dict[str, Origin],
    ) -> None:
        """Read one section (rate_limits, ...) of a queue into ``settings`` and ``origins``."""
        reader = self.reader
        known = _QUEUE_FIELDS[section]
        routing = section == "app_engine_routing_override"
        parent = f"{queue}.{entry[0].value}"
        for key, (key_node, value_node) in reader.mapping(entry[1], parent, snake).items():
            field_name = f"{parent}.{key_node.value}"
            if key not in known:
                raise reader.unknown(key_node, field_name, known)
            value = reader.typed(known[key], value_node, field_name)
            path = section if routing else f"{section}.{key}"
            if routing:
                settings.setdefault(path, {})[key] = value
            else:
                settings[path] = value
            origins.setdefault(path, Origin(reader.line(key_node), field_name))
