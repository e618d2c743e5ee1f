"""App Engine's ``queue.yaml``, converted as Cloud Tasks converts it.

The conversion follows ``gcloud app deploy queue.yaml`` (which writes the queues through the
Cloud Tasks API): ``rate`` -> maxDispatchesPerSecond (``0`` pauses the queue),
``bucket_size`` -> the queue's burst (kept, as for queue.yaml queues on Cloud Tasks),
``max_concurrent_requests`` -> maxConcurrentDispatches, ``retry_parameters`` -> retryConfig
(``task_retry_limit`` + 1 -> maxAttempts, ``task_age_limit`` -> maxRetryDuration,
``min/max_backoff_seconds``, ``max_doublings``) and ``target`` -> appEngineRoutingOverride. A
field a push queue leaves out gets App Engine's default (e.g. unlimited attempts), so removing
a line from the file resets the setting. ``resume_paused_queues: False`` leaves paused queues
paused.

The keys App Engine knows but Cloud Tasks has no equivalent for (``total_storage_limit``,
``application``, ``mode: pull``, ``acl``) are checked and reported as notes; any other key is
an error, as App Engine itself refuses it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import yaml

from opentasks.declarative import DeclaredQueue, Entry, NodeReader, Origin, check_queues

_TOP_KEYS = ("queue", "total_storage_limit", "resume_paused_queues", "application")
_QUEUE_KEYS = (
    "name",
    "rate",
    "bucket_size",
    "max_concurrent_requests",
    "retry_parameters",
    "target",
    "mode",
    "acl",
)
_RETRY_PARAMETERS = {  # queue.yaml field -> (Queue field path, kind)
    "task_retry_limit": ("retry_config.max_attempts", "int"),
    "task_age_limit": ("retry_config.max_retry_duration", "str"),
    "min_backoff_seconds": ("retry_config.min_backoff", "float"),
    "max_backoff_seconds": ("retry_config.max_backoff", "float"),
    "max_doublings": ("retry_config.max_doublings", "int"),
}
# What `gcloud app deploy` sets for a field a push queue leaves out (App Engine's defaults).
PUSH_QUEUE_DEFAULTS: dict[str, Any] = {
    "rate_limits.max_burst_size": 5,
    "rate_limits.max_concurrent_dispatches": 1000,
    "retry_config.max_attempts": -1,
    "retry_config.max_retry_duration": timedelta(0),
    "retry_config.min_backoff": timedelta(seconds=0.1),
    "retry_config.max_backoff": timedelta(seconds=3600),
    "retry_config.max_doublings": 16,
}
PULL_QUEUE_DEFAULTS: dict[str, Any] = {"retry_config.max_attempts": -1}
# App Engine's own formats (google.appengine.api.queueinfo).
_RATE = re.compile(r"0|(\d+(?:\.\d*)?)/([smhd])")
_AGE = re.compile(r"(\d+(?:\.\d*)?)([smhd])")
_STORAGE_LIMIT = re.compile(r"\d+(?:\.\d*)?[BKMGT]?")
_TARGET = re.compile(r"(?:((?!-)[a-z\d\-]{1,100})\.)?((?!-)[a-z\d\-]{1,63})")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NO_EQUIVALENT = "has no Cloud Tasks equivalent; not applied."


def read_queue_yaml(reader: NodeReader, top: dict[str, Entry]) -> list[DeclaredQueue]:
    """The queues of a queue.yaml whose top-level mapping is ``top``."""
    resume = True
    for key, (key_node, value_node) in top.items():
        if key == "resume_paused_queues":
            resume = reader.typed("bool", value_node, key)
        elif key == "total_storage_limit":
            if not _STORAGE_LIMIT.fullmatch(reader.string(value_node, key)):
                raise reader.fail(value_node, key, "expected a size such as 120M (B, K, M, G or T).")
            reader.note(key_node, key, _NO_EQUIVALENT)
        elif key == "application":
            reader.string(value_node, key)
            reader.note(
                key_node, key, "has no Cloud Tasks equivalent (the project is --project's); not applied."
            )
        elif key != "queue":
            raise reader.unknown(key_node, key, _TOP_KEYS)
    listed = top["queue"][1]
    nodes = [] if reader.is_null(listed) else reader.sequence(listed, "queue")
    queues = [_QueueEntry(reader, node, resume=resume).read() for node in nodes]
    check_queues(reader, queues, queue_yaml=True)
    return queues


class _QueueEntry:
    """One entry of the ``queue:`` list."""

    def __init__(self, reader: NodeReader, node: yaml.Node, *, resume: bool) -> None:
        self.reader = reader
        self.node = node
        self.resume = resume
        self.entries = reader.mapping(node, "queue[]")
        if "name" not in self.entries:
            raise reader.fail(node, "queue[].name", "every queue needs a name.")
        self.name = reader.queue_name(self.entries["name"][1], "queue[].name", full_names=False)
        self.settings: dict[str, Any] = {}
        self.origins: dict[str, Origin] = {}
        self.state: str | None = None

    def read(self) -> DeclaredQueue:
        reader = self.reader
        for key, (key_node, _) in self.entries.items():
            if key not in _QUEUE_KEYS:
                raise reader.unknown(key_node, f"{self.name}.{key}", _QUEUE_KEYS)
        if self._mode() == "pull":
            self._pull_queue()
        else:
            self._push_queue()
        return DeclaredQueue(self.name, reader.line(self.node), self.settings, self.state, self.origins)

    def _mode(self) -> str:
        if "mode" not in self.entries:
            return "push"
        key_node, value_node = self.entries["mode"]
        mode = self.reader.string(value_node, f"{self.name}.mode")
        if mode not in ("push", "pull"):
            raise self.reader.fail(value_node, f"{self.name}.mode", f"expected push or pull, not '{mode}'.")
        if mode == "pull":
            self.reader.note(
                key_node,
                f"{self.name}.mode",
                "pull queues have no Cloud Tasks v2 equivalent; applied as a push queue.",
            )
        return mode

    def _push_queue(self) -> None:
        if "rate" not in self.entries:
            raise self.reader.fail(
                self.node, f"{self.name}.rate", "Refill rate must be specified for push-based queue."
            )
        fields = {
            "rate": self._rate,
            "bucket_size": self._bucket_size,
            "max_concurrent_requests": self._max_concurrent_requests,
            "target": self._target,
            "retry_parameters": self._retry_parameters,
            "acl": self._acl,
        }
        for key, read in fields.items():
            if key in self.entries:
                read(*self.entries[key])
        for path, value in PUSH_QUEUE_DEFAULTS.items():
            self.settings.setdefault(path, value)
        self._fit_backoffs()

    def _pull_queue(self) -> None:
        for key in ("rate", "bucket_size", "max_concurrent_requests", "target"):
            if key in self.entries:
                raise self.reader.fail(
                    self.entries[key][0], f"{self.name}.{key}", "must not be specified for a pull queue."
                )
        if "retry_parameters" in self.entries:
            key_node, value_node = self.entries["retry_parameters"]
            for key, (inner, _) in self.reader.mapping(value_node, f"{self.name}.retry_parameters").items():
                if key != "task_retry_limit":
                    raise self.reader.fail(
                        inner, f"{self.name}.retry_parameters.{key}", "can't be specified for a pull queue."
                    )
            self._retry_parameters(key_node, value_node)
        if "acl" in self.entries:
            self._acl(*self.entries["acl"])
        for path, value in PULL_QUEUE_DEFAULTS.items():
            self.settings.setdefault(path, value)

    def _set(self, path: str, value: Any, key_node: yaml.Node, field_name: str) -> None:
        self.settings[path] = value
        self.origins[path] = Origin(self.reader.line(key_node), field_name)

    def _rate(self, key_node: yaml.Node, value_node: yaml.Node) -> None:
        field_name = f"{self.name}.rate"
        raw = self.reader.string(value_node, field_name)
        match = _RATE.fullmatch(raw)
        if not match:
            raise self.reader.fail(
                value_node, field_name, f"'{raw}' is not a rate; write e.g. 5/s, 10/m, 1/h or 0."
            )
        rate = round(float(match[1]) / _SECONDS[match[2]], 9) if match[1] else 0.0
        if rate == 0:  # as gcloud app deploy: a zero rate pauses the queue
            self.state = "PAUSED"
            return
        self._set("rate_limits.max_dispatches_per_second", rate, key_node, field_name)
        self.state = "RUNNING" if self.resume else None

    def _bucket_size(self, key_node: yaml.Node, value_node: yaml.Node) -> None:
        field_name = f"{self.name}.bucket_size"
        self._set(
            "rate_limits.max_burst_size",
            self.reader.typed("int", value_node, field_name),
            key_node,
            field_name,
        )

    def _max_concurrent_requests(self, key_node: yaml.Node, value_node: yaml.Node) -> None:
        field_name = f"{self.name}.max_concurrent_requests"
        value = self.reader.typed("int", value_node, field_name)
        self._set("rate_limits.max_concurrent_dispatches", value, key_node, field_name)

    def _target(self, key_node: yaml.Node, value_node: yaml.Node) -> None:
        field_name = f"{self.name}.target"
        target = self.reader.string(value_node, field_name)
        match = _TARGET.fullmatch(target)
        if not match:
            raise self.reader.fail(
                value_node, field_name, f"'{target}' is not a target; write SERVICE or VERSION.SERVICE."
            )
        routing = {"service": match[2], "version": match[1]} if match[1] else {"service": match[2]}
        self._set("app_engine_routing_override", routing, key_node, field_name)

    def _retry_parameters(self, key_node: yaml.Node, value_node: yaml.Node) -> None:
        parent = f"{self.name}.retry_parameters"
        for key, (inner_key, inner_value) in self.reader.mapping(value_node, parent).items():
            field_name = f"{parent}.{key}"
            if key not in _RETRY_PARAMETERS:
                raise self.reader.unknown(inner_key, field_name, _RETRY_PARAMETERS)
            path, kind = _RETRY_PARAMETERS[key]
            value = self.reader.typed(kind, inner_value, field_name)
            self._set(path, self._retry_value(key, value, inner_value, field_name), inner_key, field_name)

    def _retry_value(self, key: str, value: Any, node: yaml.Node, field_name: str) -> Any:
        """A retry parameter in Cloud Tasks' terms, refused with App Engine's own messages."""
        if key == "task_age_limit":
            match = _AGE.fullmatch(value)
            if not match:
                raise self.reader.fail(
                    node, field_name, f"'{value}' is not an age; write e.g. 30s, 15m, 2h or 7d."
                )
            seconds = int(float(match[1]) * _SECONDS[match[2]])
            if seconds <= 0:
                raise self.reader.fail(node, field_name, "Task age limit must be greater than zero.")
            return timedelta(seconds=seconds)
        if value < 0:
            label = {
                "task_retry_limit": "Task retry limit",
                "min_backoff_seconds": "Min backoff seconds",
                "max_backoff_seconds": "Max backoff seconds",
                "max_doublings": "Max doublings",
            }[key]
            raise self.reader.fail(node, field_name, f"{label} must not be less than zero.")
        if key == "task_retry_limit":
            return value + 1  # retries after the first attempt -> attempts
        return timedelta(seconds=value) if key.endswith("_seconds") else value

    def _fit_backoffs(self) -> None:
        """As App Engine: a lone min (max) backoff beyond the default max (min) moves it along;
        both given, min must not exceed max."""
        low, high = self.settings["retry_config.min_backoff"], self.settings["retry_config.max_backoff"]
        given = {
            path for path in ("retry_config.min_backoff", "retry_config.max_backoff") if path in self.origins
        }
        if low <= high:
            return
        if len(given) == 2:
            origin = self.origins["retry_config.min_backoff"]
            raise self.reader.fail(
                origin.line, origin.field, "Min backoff sec must not be greater than max backoff sec."
            )
        if "retry_config.min_backoff" in given:
            self.settings["retry_config.max_backoff"] = low
        else:
            self.settings["retry_config.min_backoff"] = high

    def _acl(self, key_node: yaml.Node, value_node: yaml.Node) -> None:
        field_name = f"{self.name}.acl"
        for entry in self.reader.sequence(value_node, field_name):
            for key, (inner_key, inner_value) in self.reader.mapping(entry, f"{field_name}[]").items():
                if key not in ("user_email", "writer_email"):
                    raise self.reader.unknown(
                        inner_key, f"{field_name}[].{key}", ("user_email", "writer_email")
                    )
                self.reader.string(inner_value, f"{field_name}[].{key}")
        self.reader.note(
            key_node, field_name, "has no Cloud Tasks equivalent (access is IAM's); not applied."
        )
