"""``google.cloud.tasks.v2beta3.CloudTasks``, served by the v2 API.

Every RPC converts its v2beta3 request to the v2 request (:mod:`convert_v2beta3`), calls the
v2 coroutine of :class:`CloudTasksApi`, and converts the answer back, so both versions share every
rule. What only v2beta3 has is handled here: ``read_mask`` on GetQueue and ListQueues (and the
queue ``stats`` it asks for, from :class:`QueueInsights`), and UpdateQueue's v2beta3-only paths.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from opentasks.api import convert_v2beta3 as convert
from opentasks.api import messages as v2
from opentasks.api import messages_v2beta3 as pb
from opentasks.api.auth import ApiAuth
from opentasks.api.cloud_tasks_grpc import CloudTasksApi, cloud_tasks_methods, service_handlers
from opentasks.api.messages import PB
from opentasks.clock import Clock
from opentasks.domain.names import QueueName
from opentasks.domain.stats import QueueStats
from opentasks.errors import InvalidArgument
from opentasks.service.insights import QueueInsights

SERVICE = "google.cloud.tasks.v2beta3.CloudTasks"
_STATS = "stats"
_ALL = "*"
# UpdateQueue paths of v2beta3 that name v2's fields differently.
_ROUTING_PATHS = ("app_engine_http_queue.app_engine_routing_override", "app_engine_http_queue")
# v2beta3-only queue fields an update mask may name: output-only, immutable, or refused when set.
_V2BETA3_ONLY_PATHS = frozenset({"type", "type_", "stats", "task_ttl", "tombstone_ttl"})
# The compiled descriptor names Queue.type "type_" (its JSON name stays "type").
_FIELD_ALIASES = {"type": "type_"}


class CloudTasksV2beta3Api:
    """One coroutine per v2beta3 RPC (the same names as :class:`CloudTasksApi`'s)."""

    def __init__(self, api: CloudTasksApi, insights: QueueInsights) -> None:
        self._api = api
        self._insights = insights

    @property
    def clock(self) -> Clock:
        return self._api.clock

    # -- queues ---------------------------------------------------------------------------

    async def get_queue(self, request: PB) -> PB:
        mask = _read_mask(request.read_mask)
        queue = await self._api.get_queue(v2.GetQueueRequest(name=request.name))
        return await self._queue_out(queue, mask)

    async def list_queues(self, request: PB) -> PB:
        mask = _read_mask(request.read_mask)
        v2_request = v2.ListQueuesRequest(
            parent=request.parent,
            filter=request.filter,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        page = await self._api.list_queues(v2_request)
        stats: dict[QueueName, QueueStats] = {}
        if mask is not None and mask.stats:  # the whole page's numbers in one go
            stats = await self._insights.queues_stats([QueueName.parse(q.name) for q in page.queues])
        queues = [self._shaped(queue, mask, stats.get(QueueName.parse(queue.name))) for queue in page.queues]
        return pb.ListQueuesResponse(queues=queues, next_page_token=page.next_page_token)

    async def create_queue(self, request: PB) -> PB:
        return await self._queue_out(
            await self._api.create_queue(convert.to_v2(request, v2.CreateQueueRequest))
        )

    async def update_queue(self, request: PB) -> PB:
        paths = list(request.update_mask.paths)
        queue = pb.Queue()
        queue.CopyFrom(request.queue)
        for field in ("task_ttl", "tombstone_ttl"):
            if paths and field not in paths:
                queue.ClearField(field)  # not updated, so not refused either
        v2_request = v2.UpdateQueueRequest(queue=convert.to_v2(queue, v2.Queue))
        # A mask of v2beta3-only paths changes nothing; v2 ignores the output-only "name" alike.
        v2_request.update_mask.paths.extend(_v2_update_paths(paths) or (["name"] if paths else []))
        return await self._queue_out(await self._api.update_queue(v2_request))

    async def delete_queue(self, request: PB) -> PB:
        return await self._api.delete_queue(convert.to_v2(request, v2.DeleteQueueRequest))

    async def purge_queue(self, request: PB) -> PB:
        return await self._queue_out(
            await self._api.purge_queue(convert.to_v2(request, v2.PurgeQueueRequest))
        )

    async def pause_queue(self, request: PB) -> PB:
        return await self._queue_out(
            await self._api.pause_queue(convert.to_v2(request, v2.PauseQueueRequest))
        )

    async def resume_queue(self, request: PB) -> PB:
        queue = await self._api.resume_queue(convert.to_v2(request, v2.ResumeQueueRequest))
        return await self._queue_out(queue)

    async def _queue_out(self, queue: PB, mask: _ReadMask | None = None) -> PB:
        """One queue in v2beta3's shape, with its stats if ``mask`` asks for them."""
        stats = None
        if mask is not None and mask.stats:
            stats = await self._insights.queue_stats(QueueName.parse(queue.name))
        return self._shaped(queue, mask, stats)

    @staticmethod
    def _shaped(queue: PB, mask: _ReadMask | None, stats: QueueStats | None) -> PB:
        message = convert.to_v2beta3(queue, pb.Queue)
        if mask is None:
            return message
        if stats is not None:
            convert.stats_to_pb(stats, message.stats)
        if mask.fields is None:
            return message
        trimmed = pb.Queue()
        mask.fields.MergeMessage(message, trimmed)
        return trimmed

    # -- tasks ----------------------------------------------------------------------------

    async def list_tasks(self, request: PB) -> PB:
        response = await self._api.list_tasks(convert.to_v2(request, v2.ListTasksRequest))
        return convert.to_v2beta3(response, pb.ListTasksResponse)

    async def get_task(self, request: PB) -> PB:
        return convert.to_v2beta3(
            await self._api.get_task(convert.to_v2(request, v2.GetTaskRequest)), pb.Task
        )

    async def create_task(self, request: PB) -> PB:
        task = await self._api.create_task(convert.to_v2(request, v2.CreateTaskRequest))
        return convert.to_v2beta3(task, pb.Task)

    async def buffer_task(self, queue: str, task_id: str, method: str, body: bytes, content_type: str) -> PB:
        task = await self._api.buffer_task(queue, task_id, method, body, content_type)
        return convert.to_v2beta3(task, pb.Task)

    async def delete_task(self, request: PB) -> PB:
        return await self._api.delete_task(convert.to_v2(request, v2.DeleteTaskRequest))

    async def run_task(self, request: PB) -> PB:
        return convert.to_v2beta3(
            await self._api.run_task(convert.to_v2(request, v2.RunTaskRequest)), pb.Task
        )

    async def batch_create_tasks(self, request: PB) -> PB:
        operation = await self._api.batch_create_tasks(convert.to_v2(request, v2.BatchCreateTasksRequest))
        return convert.operation_to_v2beta3(operation)

    async def batch_delete_tasks(self, request: PB) -> PB:
        operation = await self._api.batch_delete_tasks(convert.to_v2(request, v2.BatchDeleteTasksRequest))
        return convert.operation_to_v2beta3(operation)

    # -- mixins and the rest: the same messages in both versions ----------------------------

    async def get_iam_policy(self, request: PB) -> PB:
        return await self._api.get_iam_policy(request)

    async def set_iam_policy(self, request: PB) -> PB:
        return await self._api.set_iam_policy(request)

    async def test_iam_permissions(self, request: PB) -> PB:
        return await self._api.test_iam_permissions(request)

    async def get_cmek_config(self, request: PB) -> PB:
        config = await self._api.get_cmek_config(convert.to_v2(request, v2.GetCmekConfigRequest))
        return convert.to_v2beta3(config, pb.CmekConfig)

    async def update_cmek_config(self, request: PB) -> PB:
        config = await self._api.update_cmek_config(convert.to_v2(request, v2.UpdateCmekConfigRequest))
        return convert.to_v2beta3(config, pb.CmekConfig)

    async def list_locations(self, request: PB) -> PB:
        return await self._api.list_locations(request)

    async def get_location(self, request: PB) -> PB:
        return await self._api.get_location(request)

    async def get_operation(self, request: PB) -> PB:
        return convert.operation_to_v2beta3(await self._api.get_operation(request))


class _ReadMask:
    """A validated ``read_mask``: whether it asks for stats, and the fields to keep (None: all)."""

    def __init__(self, stats: bool, fields: Any) -> None:
        self.stats = stats
        self.fields = fields


def _read_mask(mask: PB) -> _ReadMask | None:
    """None without a mask (every field but ``stats``); ``*`` means every field and ``stats``.

    Otherwise only the named fields are returned (and the queue's ``name``); a path that is not a
    field of Queue is INVALID_ARGUMENT.
    """
    paths = list(mask.paths)
    if not paths:
        return None
    if _ALL in paths:
        return _ReadMask(stats=True, fields=None)
    paths = [_FIELD_ALIASES.get(path, path) for path in paths]
    for path in paths:
        if not field_mask_pb2.FieldMask(paths=[path]).IsValidForDescriptor(pb.Queue.DESCRIPTOR):
            raise InvalidArgument(f'Invalid read_mask path "{path}": Queue has no such field.')
    stats = any(path == _STATS or path.startswith(_STATS + ".") for path in paths)
    return _ReadMask(stats=stats, fields=field_mask_pb2.FieldMask(paths=["name", *paths]))


def _v2_update_paths(paths: list[str]) -> list[str]:
    """UpdateQueue's v2beta3 mask as v2 paths: the App Engine override renamed, v2beta3-only
    fields dropped (``type`` is immutable, ``stats`` output-only, the TTLs refused when set)."""
    result = []
    for path in paths:
        if path.split(".", 1)[0] in _V2BETA3_ONLY_PATHS:
            continue
        result.append(_v2_path(path))
    return result


def _v2_path(path: str) -> str:
    for prefix in _ROUTING_PATHS:
        if path == prefix or path.startswith(prefix + "."):
            return "app_engine_routing_override" + path.removeprefix(prefix)
    return path


def handlers(api: CloudTasksV2beta3Api, auth: ApiAuth | None = None) -> tuple[grpc.GenericRpcHandler, ...]:
    """The generic handler serving every v2beta3 CloudTasks RPC (the locations and operations
    mixins are served once, by the v2 handlers)."""
    return service_handlers({SERVICE: cloud_tasks_methods(api, pb)}, api.clock, auth)
