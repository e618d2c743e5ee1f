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

``queue.yaml`` (a top-level ``queue:`` list) is converted as Cloud Tasks documents its
migration: ``rate`` -> maxDispatchesPerSecond, ``max_concurrent_requests`` ->
maxConcurrentDispatches, ``retry_parameters`` -> retryConfig (``task_retry_limit`` ->
maxAttempts, ``task_age_limit`` -> maxRetryDuration, ``min/max_backoff_seconds``,
``max_doublings``), ``target`` -> appEngineRoutingOverride. ``bucket_size`` (default 5) stays
the queue's burst, and finished task names stay reserved ~9 days, as for queue.yaml queues on
Cloud Tasks. Fields without an equivalent are reported in :attr:`ConfigFile.notes`, never
silently dropped.

Every error names the file, the line and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from opentasks.config import ConfigError, file_keys, parse_duration
from opentasks.domain.queue import DEFAULT_BUCKET_SIZE, MAX_BUCKET_SIZE

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
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smhd])\s*")
_PER_SECOND = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigFileError(ConfigError):
    """The file is invalid; the message is ``FILE:LINE: FIELD: what is wrong``."""


@dataclass(frozen=True)
class DeclaredQueue:
    """One queue as a file declares it: only the fields it names are managed."""

    name: str
    line: int
    settings: dict[str, Any] = field(default_factory=dict)  # Queue field path -> value
    state: str | None = None  # "RUNNING" | "PAUSED" | None (leave as is)


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
    """Read and check a configuration file."""
    path = Path(path)
    try:
        root = yaml.compose(path.read_text())
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot read it: {error.strerror}.") from None
    except yaml.YAMLError as error:
        line = error.problem_mark.line + 1 if getattr(error, "problem_mark", None) else 1  # type: ignore[attr-defined]
        raise ConfigFileError(f"{path}:{line}: not valid YAML: {getattr(error, 'problem', error)}.") from None
    reader = _Reader(path)
    if root is None:
        return ConfigFile(path, "opentasks", [], {})
    top = reader.mapping(root, "the file")
    if "queue" in top and "queues" not in top:
        return reader.queue_yaml(top)
    return reader.opentasks(top)


class _Reader:
    """Walks YAML nodes, keeping line numbers for every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notes: list[str] = []

    def fail(self, node: yaml.Node, field_name: str, message: str) -> ConfigFileError:
        return ConfigFileError(f"{self.path}:{node.start_mark.line + 1}: {field_name}: {message}")

    def note(self, node: yaml.Node, field_name: str, message: str) -> None:
        self.notes.append(f"{self.path}:{node.start_mark.line + 1}: {field_name}: {message}")

    def mapping(self, node: yaml.Node, field_name: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, field_name, "expected a mapping of keys to values.")
        return {str(key.value): (key, value) for key, value in node.value}

    def scalar(self, node: yaml.Node, field_name: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, field_name, "expected a single value.")
        return yaml.safe_load(yaml.serialize(node))

    def sequence(self, node: yaml.Node, field_name: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, field_name, "expected a list.")
        return list(node.value)

    # -- opentasks YAML ----------------------------------------------------------------------

    def opentasks(self, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> ConfigFile:
        for key, (key_node, _) in top.items():
            if key not in ("server", "project", "location", "queues"):
                raise self.fail(key_node, key, "unknown; expected server, project, location or queues.")
        server = self._server(top["server"][1]) if "server" in top else {}
        queues = (
            [self._queue(node) for node in self.sequence(top["queues"][1], "queues")]
            if "queues" in top
            else []
        )
        return ConfigFile(
            self.path,
            "opentasks",
            queues,
            server,
            project=self._optional_str(top, "project"),
            location=self._optional_str(top, "location"),
        )

    def _optional_str(self, top: dict[str, tuple[yaml.Node, yaml.Node]], key: str) -> str | None:
        return str(self.scalar(top[key][1], key)) if key in top else None

    def _server(self, node: yaml.Node) -> dict[str, Any]:
        settings = {}
        for key, (key_node, value_node) in self.mapping(node, "server").items():
            keys = file_keys()
            name = keys.get(_snake(key))
            if name is None:
                raise self.fail(
                    key_node, f"server.{key}", f"unknown setting; expected one of {', '.join(sorted(keys))}."
                )
            if isinstance(value_node, yaml.SequenceNode):  # e.g. locations: [a, b]
                settings[name] = [self.scalar(item, f"server.{key}[]") for item in value_node.value]
            else:
                settings[name] = self.scalar(value_node, f"server.{key}")
        return settings

    def _queue(self, node: yaml.Node) -> DeclaredQueue:
        fields_ = self.mapping(node, "queues[]")
        if "name" not in fields_:
            raise self.fail(node, "queues[].name", "every queue needs a name.")
        name = str(self.scalar(fields_["name"][1], "name"))
        settings: dict[str, Any] = {}
        state = None
        for key, (key_node, value_node) in fields_.items():
            section = _snake(key)
            if section == "name":
                continue
            if section == "state":
                state = self._state(value_node, f"{name}.state")
            elif section in _QUEUE_FIELDS:
                settings.update(self._section(section, value_node, name))
            else:
                raise self.fail(
                    key_node,
                    f"{name}.{key}",
                    "unknown; expected state, rate_limits, retry_config or app_engine_routing_override.",
                )
        return DeclaredQueue(name, node.start_mark.line + 1, settings, state)

    def _state(self, node: yaml.Node, field_name: str) -> str:
        state = str(self.scalar(node, field_name)).upper()
        if state not in ("RUNNING", "PAUSED"):
            raise self.fail(node, field_name, "expected RUNNING or PAUSED.")
        return state

    def _section(self, section: str, node: yaml.Node, queue: str) -> dict[str, Any]:
        known = _QUEUE_FIELDS[section]
        values: dict[str, Any] = {}
        for key, (key_node, value_node) in self.mapping(node, f"{queue}.{section}").items():
            field_name = f"{queue}.{section}.{key}"
            kind = known.get(_snake(key))
            if kind is None:
                raise self.fail(key_node, field_name, f"unknown; expected one of {', '.join(known)}.")
            path = section if section == "app_engine_routing_override" else f"{section}.{_snake(key)}"
            value = self._value(kind, value_node, field_name)
            if section == "app_engine_routing_override":
                values.setdefault(path, {})[_snake(key)] = value
            else:
                values[path] = value
        return values

    def _value(self, kind: str, node: yaml.Node, field_name: str) -> Any:
        raw = self.scalar(node, field_name)
        try:
            if kind == "duration":
                return parse_duration(str(raw), setting=field_name)
            if kind == "attempts":
                return -1 if str(raw).lower() == "unlimited" else int(raw)
            return {"int": int, "float": float, "str": str}[kind](raw)
        except (ValueError, TypeError, ConfigError) as error:
            raise self.fail(node, field_name, f"'{raw}' is not a valid {kind}: {error}") from None

    # -- queue.yaml --------------------------------------------------------------------------

    def queue_yaml(self, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> ConfigFile:
        for key, (key_node, _) in top.items():
            if key != "queue":
                self.note(key_node, key, "has no Cloud Tasks equivalent; not applied.")
        queues = [self._app_engine_queue(node) for node in self.sequence(top["queue"][1], "queue")]
        return ConfigFile(self.path, "queue.yaml", queues, {}, notes=self.notes)

    def _app_engine_queue(self, node: yaml.Node) -> DeclaredQueue:
        fields_ = self.mapping(node, "queue[]")
        if "name" not in fields_:
            raise self.fail(node, "queue[].name", "every queue needs a name.")
        name = str(self.scalar(fields_["name"][1], "name"))
        # App Engine's default bucket; the queue keeps it (v2 would derive the burst from the rate).
        settings: dict[str, Any] = {"rate_limits.max_burst_size": DEFAULT_BUCKET_SIZE}
        for key, (key_node, value_node) in fields_.items():
            if key != "name":
                settings.update(self._app_engine_setting(name, key, key_node, value_node))
        return DeclaredQueue(name, node.start_mark.line + 1, settings)

    def _app_engine_setting(
        self, queue: str, key: str, key_node: yaml.Node, value_node: yaml.Node
    ) -> dict[str, Any]:
        """The Cloud Tasks settings of one queue.yaml field (none, with a note, if it has no equivalent)."""
        field_name = f"{queue}.{key}"
        if key == "rate":
            return {"rate_limits.max_dispatches_per_second": self._rate(value_node, field_name)}
        if key == "bucket_size":
            size = self._value("int", value_node, field_name)
            if not 1 <= size <= MAX_BUCKET_SIZE:
                raise self.fail(value_node, field_name, f"must be between 1 and {MAX_BUCKET_SIZE}.")
            return {"rate_limits.max_burst_size": size}
        if key == "max_concurrent_requests":
            return {"rate_limits.max_concurrent_dispatches": self._value("int", value_node, field_name)}
        if key == "retry_parameters":
            return self._retry_parameters(value_node, queue)
        if key == "target":
            return {"app_engine_routing_override": _target(str(self.scalar(value_node, field_name)))}
        if key != "mode" or str(self.scalar(value_node, field_name)) != "push":
            self.note(key_node, field_name, "has no Cloud Tasks equivalent; not applied.")
        return {}

    def _rate(self, node: yaml.Node, field_name: str) -> float:
        raw = str(self.scalar(node, field_name))
        match = _RATE.fullmatch(raw)
        if not match:
            raise self.fail(node, field_name, f"'{raw}' is not a rate; write e.g. 5/s, 10/m or 1/h.")
        return float(match[1]) / _PER_SECOND[match[2]]

    def _retry_parameters(self, node: yaml.Node, queue: str) -> dict[str, Any]:
        names = {
            "task_retry_limit": ("retry_config.max_attempts", "int"),
            "task_age_limit": ("retry_config.max_retry_duration", "duration"),
            "min_backoff_seconds": ("retry_config.min_backoff", "seconds"),
            "max_backoff_seconds": ("retry_config.max_backoff", "seconds"),
            "max_doublings": ("retry_config.max_doublings", "int"),
        }
        settings = {}
        for key, (key_node, value_node) in self.mapping(node, f"{queue}.retry_parameters").items():
            field_name = f"{queue}.retry_parameters.{key}"
            if key not in names:
                self.note(key_node, field_name, "has no Cloud Tasks equivalent; not applied.")
                continue
            path, kind = names[key]
            if kind == "seconds":
                settings[path] = timedelta(seconds=self._value("float", value_node, field_name))
            else:
                settings[path] = self._value(kind, value_node, field_name)
        return settings


def _target(target: str) -> dict[str, str]:
    """queue.yaml ``target``: ``service``, or ``version.service``."""
    version, _, service = target.rpartition(".")
    return {"service": service, "version": version} if version else {"service": service}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
