"""Cloud Tasks v2beta3 protobufs <-> v2 protobufs, and QueueStats -> v2beta3 ``QueueStats``.

v2beta3's messages carry v2's fields under the same names and enum numbers (only the field
numbers differ), so v2beta3 is served by the v2 API: a request is copied field by field, by
name, into its v2 twin, and the v2 response back. What differs is converted explicitly here:

* ``Queue.app_engine_http_queue.app_engine_routing_override`` is v2's
  ``Queue.app_engine_routing_override``;
* ``Queue.type`` (``type_`` in the compiled descriptor, JSON ``type``) is PUSH on output; PULL is
  refused (opentasks serves no pull queues);
* ``Queue.task_ttl`` / ``tombstone_ttl`` are refused when set (retention and name reservation are
  server settings here), and never returned;
* ``Queue.stats`` is output-only (filled by the API when ``read_mask`` asks for it);
* ``Task.pull_message`` is refused.

A v2beta3 field without a v2 twin that is not listed above is refused by name rather than dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor

from opentasks.api import messages as v2
from opentasks.api import messages_v2beta3 as v2beta3
from opentasks.api.messages import PB
from opentasks.domain.stats import QueueStats
from opentasks.errors import InvalidArgument

QUEUE_TYPE_PULL = 1
QUEUE_TYPE_PUSH = 2
# Fields of a v2beta3 Queue that have no v2 twin, with their JSON names.
_QUEUE_TTLS = (
    ("task_ttl", "Queue.taskTtl", "tasks are kept until they finish or are deleted"),
    ("tombstone_ttl", "Queue.tombstoneTtl", "task names stay reserved for the server's --task-tombstone"),
)
_QUEUE_ONLY_V2BETA3 = frozenset({"type_", "stats", "task_ttl", "tombstone_ttl", "app_engine_http_queue"})
_ROUTING_OVERRIDE = "app_engine_routing_override"


def to_v2(message: PB, v2_class: Any) -> PB:
    """The v2 message (of ``v2_class``) holding what the v2beta3 ``message`` says."""
    target = v2_class()
    _copy(message, target)
    return target


def to_v2beta3(message: PB, v2beta3_class: Any) -> PB:
    """The v2beta3 message (of ``v2beta3_class``) holding what the v2 ``message`` says."""
    target = v2beta3_class()
    _copy(message, target)
    return target


def _copy(source: PB, target: PB) -> None:
    special = _SPECIAL.get(source.DESCRIPTOR.full_name)
    if special is not None:
        special(source, target)
    else:
        _copy_fields(source, target)


def _copy_fields(source: PB, target: PB, skip: frozenset[str] = frozenset()) -> None:
    fields = target.DESCRIPTOR.fields_by_name
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        twin = fields.get(field.name)
        if twin is None:
            raise InvalidArgument(
                f"{source.DESCRIPTOR.name}.{field.json_name} is not supported by opentasks; leave it unset."
            )
        _copy_value(field, value, target, twin.name)


def _copy_value(field: descriptor.FieldDescriptor, value: Any, target: PB, name: str) -> None:
    destination = getattr(target, name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        if value_field.message_type is None:
            destination.update(value)
        else:
            for key, item in value.items():
                _copy_message(item, destination[key])
    elif field.is_repeated:
        if field.message_type is None:
            destination.extend(value)
        else:
            for item in value:
                _copy_message(item, destination.add())
    elif field.message_type is not None:
        _copy_message(value, destination)
    else:
        setattr(target, name, value)


def _copy_message(source: PB, target: PB) -> None:
    target.SetInParent()  # an empty message that is set stays set
    if source.DESCRIPTOR.full_name == target.DESCRIPTOR.full_name:  # well-known and shared types
        target.CopyFrom(source)
    else:
        _copy(source, target)


def _queue_to_v2(source: PB, target: PB) -> None:
    if source.type_ == QUEUE_TYPE_PULL:
        raise InvalidArgument(
            "Queue.type PULL is not supported: opentasks serves push queues only (pull queues need "
            "v2beta2's lease RPCs). Leave type unset or set it to PUSH."
        )
    for field, label, instead in _QUEUE_TTLS:
        if source.HasField(field):
            raise InvalidArgument(f"{label} is not supported by opentasks ({instead}); leave it unset.")
    _copy_fields(source, target, skip=_QUEUE_ONLY_V2BETA3)
    app_engine = source.app_engine_http_queue
    if source.HasField("app_engine_http_queue") and app_engine.HasField(_ROUTING_OVERRIDE):
        _copy_message(app_engine.app_engine_routing_override, target.app_engine_routing_override)


def _queue_to_v2beta3(source: PB, target: PB) -> None:
    _copy_fields(source, target, skip=frozenset({_ROUTING_OVERRIDE}))
    if source.HasField(_ROUTING_OVERRIDE):
        _copy_message(
            source.app_engine_routing_override, target.app_engine_http_queue.app_engine_routing_override
        )
    target.type_ = QUEUE_TYPE_PUSH


def _task_to_v2(source: PB, target: PB) -> None:
    if source.HasField("pull_message"):
        raise InvalidArgument(
            "Task.pullMessage is not supported: opentasks serves push queues only. "
            "Give the task an httpRequest or appEngineHttpRequest."
        )
    _copy_fields(source, target)


_SPECIAL: dict[str, Callable[[PB, PB], None]] = {
    v2beta3.Queue.DESCRIPTOR.full_name: _queue_to_v2,
    v2.Queue.DESCRIPTOR.full_name: _queue_to_v2beta3,
    v2beta3.Task.DESCRIPTOR.full_name: _task_to_v2,
}

# The messages an Operation of the batch RPCs may hold, v2 -> v2beta3.
_OPERATION_TYPES = {
    v2.BatchCreateTasksMetadata.DESCRIPTOR.full_name: (
        v2.BatchCreateTasksMetadata,
        v2beta3.BatchCreateTasksMetadata,
    ),
    v2.BatchDeleteTasksMetadata.DESCRIPTOR.full_name: (
        v2.BatchDeleteTasksMetadata,
        v2beta3.BatchDeleteTasksMetadata,
    ),
    v2.BatchCreateTasksResponse.DESCRIPTOR.full_name: (
        v2.BatchCreateTasksResponse,
        v2beta3.BatchCreateTasksResponse,
    ),
}


def operation_to_v2beta3(operation: PB) -> PB:
    """The operation with its v2 metadata and response repacked as their v2beta3 twins."""
    result = v2.Operation()
    result.CopyFrom(operation)
    for field in ("metadata", "response"):
        if not operation.HasField(field):
            continue
        packed = getattr(operation, field)
        classes = _OPERATION_TYPES.get(packed.TypeName())
        if classes is None:
            continue
        v2_class, v2beta3_class = classes
        message = v2_class()
        packed.Unpack(message)
        getattr(result, field).Pack(to_v2beta3(message, v2beta3_class))
    return result


def stats_to_pb(stats: QueueStats, message: PB) -> None:
    """Fill a v2beta3 ``QueueStats`` from the domain's numbers."""
    message.SetInParent()
    message.tasks_count = stats.tasks_count
    message.executed_last_minute_count = stats.executed_last_minute_count
    message.concurrent_dispatches_count = stats.concurrent_dispatches_count
    message.effective_execution_rate = stats.effective_execution_rate
    if stats.oldest_estimated_arrival_time is not None:
        message.oldest_estimated_arrival_time.FromDatetime(stats.oldest_estimated_arrival_time)
