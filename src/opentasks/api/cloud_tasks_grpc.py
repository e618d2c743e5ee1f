"""``google.cloud.tasks.v2.CloudTasks`` over gRPC (asyncio), on the services."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status as grpc_rpc_status

from opentasks.api import convert
from opentasks.api import messages as pb
from opentasks.api.messages import PB
from opentasks.api.status import rpc_status
from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.errors import Internal, OpenTasksError, Unimplemented
from opentasks.service.queues import QueueService
from opentasks.service.tasks import TaskService

SERVICE = "google.cloud.tasks.v2.CloudTasks"
_log = logging.getLogger(__name__)
Handler = Callable[[PB], Awaitable[PB]]


class CloudTasksApi:
    """One coroutine per RPC: request message in, response message out, errors raised."""

    def __init__(self, queues: QueueService, tasks: TaskService) -> None:
        self._queues = queues
        self._tasks = tasks

    async def list_queues(self, request: PB) -> PB:
        page = await self._queues.list_queues(
            LocationName.parse(request.parent),
            filter=request.filter,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListQueuesResponse(
            queues=[convert.queue_to_pb(q) for q in page.queues], next_page_token=page.next_page_token
        )

    async def get_queue(self, request: PB) -> PB:
        return convert.queue_to_pb(await self._queues.get_queue(QueueName.parse(request.name)))

    async def create_queue(self, request: PB) -> PB:
        parent = LocationName.parse(request.parent)
        queue = await self._queues.create_queue(parent, convert.queue_from_pb(request.queue))
        return convert.queue_to_pb(queue)

    async def update_queue(self, request: PB) -> PB:
        queue = convert.queue_from_pb(request.queue)
        return convert.queue_to_pb(await self._queues.update_queue(queue, list(request.update_mask.paths)))

    async def delete_queue(self, request: PB) -> PB:
        await self._queues.delete_queue(QueueName.parse(request.name))
        return pb.Empty()

    async def purge_queue(self, request: PB) -> PB:
        return convert.queue_to_pb(await self._queues.purge_queue(QueueName.parse(request.name)))

    async def pause_queue(self, request: PB) -> PB:
        return convert.queue_to_pb(await self._queues.pause_queue(QueueName.parse(request.name)))

    async def resume_queue(self, request: PB) -> PB:
        return convert.queue_to_pb(await self._queues.resume_queue(QueueName.parse(request.name)))

    async def list_tasks(self, request: PB) -> PB:
        view = convert.task_view(request.response_view)
        page = await self._tasks.list_tasks(
            QueueName.parse(request.parent),
            view=view,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListTasksResponse(
            tasks=[convert.task_to_pb(t, view) for t in page.tasks], next_page_token=page.next_page_token
        )

    async def get_task(self, request: PB) -> PB:
        view = convert.task_view(request.response_view)
        return convert.task_to_pb(await self._tasks.get_task(TaskName.parse(request.name), view), view)

    async def create_task(self, request: PB) -> PB:
        view = convert.task_view(request.response_view)
        draft = convert.task_draft_from_pb(request.task)
        task = await self._tasks.create_task(QueueName.parse(request.parent), draft, view)
        return convert.task_to_pb(task, view)

    async def delete_task(self, request: PB) -> PB:
        await self._tasks.delete_task(TaskName.parse(request.name))
        return pb.Empty()

    async def run_task(self, request: PB) -> PB:
        raise Unimplemented("RunTask needs the dispatcher, which this server version does not include yet.")


def _rpc(handler: Handler, request_class: Any, response_class: Any) -> grpc.RpcMethodHandler:
    async def call(request: PB, context: grpc.aio.ServicerContext[PB, PB]) -> PB:
        try:
            return await handler(request)
        except OpenTasksError as error:
            await context.abort_with_status(grpc_rpc_status.to_status(rpc_status(error)))
        except Exception:
            _log.exception("unexpected error in %s", getattr(handler, "__name__", handler))
            failure = Internal("Internal error in opentasks; the server log has the details.")
            await context.abort_with_status(grpc_rpc_status.to_status(rpc_status(failure)))
        raise AssertionError("unreachable")  # abort_with_status always raises

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )


def cloud_tasks_handler(api: CloudTasksApi) -> grpc.GenericRpcHandler:
    """The generic handler serving every v2 RPC under its full method name."""
    methods = {
        "ListQueues": (api.list_queues, pb.ListQueuesRequest, pb.ListQueuesResponse),
        "GetQueue": (api.get_queue, pb.GetQueueRequest, pb.Queue),
        "CreateQueue": (api.create_queue, pb.CreateQueueRequest, pb.Queue),
        "UpdateQueue": (api.update_queue, pb.UpdateQueueRequest, pb.Queue),
        "DeleteQueue": (api.delete_queue, pb.DeleteQueueRequest, pb.Empty),
        "PurgeQueue": (api.purge_queue, pb.PurgeQueueRequest, pb.Queue),
        "PauseQueue": (api.pause_queue, pb.PauseQueueRequest, pb.Queue),
        "ResumeQueue": (api.resume_queue, pb.ResumeQueueRequest, pb.Queue),
        "ListTasks": (api.list_tasks, pb.ListTasksRequest, pb.ListTasksResponse),
        "GetTask": (api.get_task, pb.GetTaskRequest, pb.Task),
        "CreateTask": (api.create_task, pb.CreateTaskRequest, pb.Task),
        "DeleteTask": (api.delete_task, pb.DeleteTaskRequest, pb.Empty),
        "RunTask": (api.run_task, pb.RunTaskRequest, pb.Task),
    }
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: _rpc(*entry) for name, entry in methods.items()}
    )
