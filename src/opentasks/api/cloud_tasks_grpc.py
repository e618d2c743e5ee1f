"""``google.cloud.tasks.v2.CloudTasks`` over gRPC (asyncio), on the services."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status as grpc_rpc_status

from opentasks.api import call, convert
from opentasks.api import messages as pb
from opentasks.api.auth import ApiAuth
from opentasks.api.messages import PB
from opentasks.api.operations import OperationRegistry
from opentasks.api.status import rpc_status
from opentasks.clock import Clock
from opentasks.domain.iam import policy_etag
from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.queue import HttpMethod
from opentasks.domain.routing import buffer_url
from opentasks.domain.task import Task, TaskDraft, TaskView
from opentasks.errors import (
    Aborted,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    OpenTasksError,
    Unimplemented,
)
from opentasks.service.locations import LocationService
from opentasks.service.queues import QueueService
from opentasks.service.tasks import BufferedRequest, TaskService
from opentasks.throttled_log import ThrottledLog

SERVICE = "google.cloud.tasks.v2.CloudTasks"
_log = logging.getLogger(__name__)
Handler = Callable[[PB], Awaitable[PB]]
MethodTable = dict[str, tuple[Handler, Any, Any]]
"""RPC name -> (coroutine, request class, response class)."""


class CloudTasksApi:
    """One coroutine per RPC: request message in, response message out, errors raised."""

    def __init__(
        self,
        queues: QueueService,
        tasks: TaskService,
        locations: LocationService,
        clock: Clock,
        operations: OperationRegistry | None = None,
    ) -> None:
        self._queues = queues
        self._tasks = tasks
        self._locations = locations
        self._clock = clock
        self._operations = operations or OperationRegistry()

    @property
    def clock(self) -> Clock:
        return self._clock

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
        queue = await self._queues.create_queue(
            parent, convert.queue_from_pb(request.queue), queue_yaml=call.from_queue_yaml()
        )
        return convert.queue_to_pb(queue)

    async def update_queue(self, request: PB) -> PB:
        queue = convert.queue_from_pb(request.queue)
        paths = list(request.update_mask.paths)
        updated = await self._queues.update_queue(queue, paths, queue_yaml=call.from_queue_yaml())
        return convert.queue_to_pb(updated)

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
        return convert.task_to_pb(*await self.get_task_record(request))

    async def get_task_record(self, request: PB) -> tuple[Task, TaskView]:
        """GetTask's task and view, before conversion (REST builds its JSON from them)."""
        view = convert.task_view(request.response_view)
        return await self._tasks.get_task(TaskName.parse(request.name), view), view

    async def create_task(self, request: PB) -> PB:
        return convert.task_to_pb(*await self.create_task_record(request))

    async def create_task_record(self, request: PB) -> tuple[Task, TaskView]:
        """CreateTask's task and view, before conversion (REST builds its JSON from them)."""
        view = convert.task_view(request.response_view)
        draft = convert.task_draft_from_pb(request.task)
        return await self.create_task_draft(request.parent, draft, view), view

    async def create_task_draft(self, parent: str, draft: TaskDraft, view: TaskView) -> Task:
        """CreateTask of a draft read without protobuf (REST's plain bodies)."""
        return await self._tasks.create_task(QueueName.parse(parent), draft, view)

    async def queue_url(self, parent: str) -> str | None:
        """The URL the queue's URI override sends tasks to (None: it has none with a host)."""
        queue = await self._queues.get_queue(QueueName.parse(parent))
        try:
            return buffer_url(queue.http_target)
        except FailedPrecondition:
            return None

    async def buffer_task(self, queue: str, task_id: str, method: str, body: bytes, content_type: str) -> PB:
        """BufferTask (REST only): the call's method, body and Content-Type make an HTTP task."""
        try:
            http_method = HttpMethod[method.upper()]
        except KeyError:
            raise InvalidArgument(f"BufferTask cannot make a task with HTTP method {method}.") from None
        buffered = BufferedRequest(http_method, body, content_type if body else "")
        task = await self._tasks.buffer_task(QueueName.parse(queue), task_id, buffered)
        return convert.task_to_pb(task, TaskView.BASIC)

    async def delete_task(self, request: PB) -> PB:
        await self._tasks.delete_task(TaskName.parse(request.name))
        return pb.Empty()

    async def run_task(self, request: PB) -> PB:
        view = convert.task_view(request.response_view)
        return convert.task_to_pb(await self._tasks.run_task(TaskName.parse(request.name), view), view)

    async def batch_create_tasks(self, request: PB) -> PB:
        async def run(parent: QueueName) -> tuple[list[OpenTasksError | None], PB]:
            drafts = [(r.parent, convert.task_draft_from_pb(r.task)) for r in request.requests]
            outcomes = await self._tasks.batch_create_tasks(parent, drafts, TaskView.FULL)
            response = pb.BatchCreateTasksResponse()
            for outcome, sub_request in zip(outcomes, request.requests, strict=True):
                if not isinstance(outcome, OpenTasksError):
                    view = convert.task_view(sub_request.response_view)
                    response.tasks.append(convert.task_to_pb(outcome.in_view(view), view))
            errors = [o if isinstance(o, OpenTasksError) else None for o in outcomes]
            return errors, response

        return await self._batch(request, run, pb.BatchCreateTasksMetadata(), states=(2, 5, 3))

    async def batch_delete_tasks(self, request: PB) -> PB:
        async def run(parent: QueueName) -> tuple[list[OpenTasksError | None], PB]:
            return await self._tasks.batch_delete_tasks(parent, list(request.names)), pb.Empty()

        return await self._batch(request, run, pb.BatchDeleteTasksMetadata(), states=(2, 3, 4))

    async def _batch(
        self,
        request: PB,
        run: Callable[[QueueName], Awaitable[tuple[list[OpenTasksError | None], PB]]],
        metadata: PB,
        *,
        states: tuple[int, int, int],
    ) -> PB:
        """A batch RPC as a finished operation: replayed by ``request_id``, failures in the metadata.

        ``states`` are the metadata's SUCCEEDED / PARTIALLY_SUCCEEDED / FAILED values (they differ
        between the two batch messages). If every item fails, the operation's error is ABORTED.
        """
        parent = QueueName.parse(request.parent)
        replayed = self._operations.replay(request.parent, request.request_id)
        if replayed is not None:
            return replayed
        metadata.start_time.FromDatetime(self._clock.now())
        errors, response = await run(parent)
        for index, error in enumerate(errors):
            if error is not None:
                metadata.failed_requests[index].CopyFrom(rpc_status(error))
        failures = len(metadata.failed_requests)
        succeeded, partial, failed = states
        metadata.state = succeeded if not failures else failed if failures == len(errors) else partial
        metadata.end_time.FromDatetime(self._clock.now())
        result: PB = response
        if errors and failures == len(errors):
            result = rpc_status(Aborted("Every item of the batch failed; see the metadata's failedRequests."))
        return self._operations.finish(parent.parent, request.parent, request.request_id, metadata, result)

    async def get_iam_policy(self, request: PB) -> PB:
        return _policy(await self._queues.get_iam_policy(QueueName.parse(request.resource)))

    async def set_iam_policy(self, request: PB) -> PB:
        stored = pb.Policy()
        stored.CopyFrom(request.policy)
        stored.ClearField("etag")
        document = stored.SerializeToString(deterministic=True)
        name = QueueName.parse(request.resource)
        return _policy(await self._queues.set_iam_policy(name, document, request.policy.etag))

    async def test_iam_permissions(self, request: PB) -> PB:
        # No IAM is enforced, so a caller holds every permission on a queue that exists.
        exists = await self._queues.queue_exists(QueueName.parse(request.resource))
        return pb.TestIamPermissionsResponse(permissions=list(request.permissions) if exists else [])

    async def get_cmek_config(self, request: PB) -> PB:
        return pb.CmekConfig(name=str(_cmek_location(request.name)) + "/cmekConfig")

    async def update_cmek_config(self, request: PB) -> PB:
        name = str(_cmek_location(request.cmek_config.name)) + "/cmekConfig"
        if request.cmek_config.kms_key:
            raise Unimplemented(
                "opentasks cannot encrypt with Cloud KMS keys: a self-hosted server has no access to "
                "Cloud KMS. Protect the store itself (disk or database encryption) and send an empty kmsKey."
            )
        return pb.CmekConfig(name=name)

    async def list_locations(self, request: PB) -> PB:
        match = re.fullmatch(r"projects/([^/]+)", request.name)
        if not match:
            raise InvalidArgument(f"ListLocations needs name='projects/<PROJECT_ID>', not '{request.name}'.")
        found = await self._locations.list_locations(match[1])
        return pb.ListLocationsResponse(locations=[_location(name) for name in found])

    async def get_location(self, request: PB) -> PB:
        return _location(await self._locations.get_location(LocationName.parse(request.name)))

    async def get_operation(self, request: PB) -> PB:
        return self._operations.get(request.name)


def _policy(document: bytes) -> PB:
    policy = pb.Policy.FromString(document)
    policy.etag = policy_etag(document)
    return policy


def _cmek_location(name: str) -> LocationName:
    if not name.endswith("/cmekConfig"):
        raise InvalidArgument(
            f"A CMEK config name looks like 'projects/P/locations/L/cmekConfig', not '{name}'."
        )
    return LocationName.parse(name.removesuffix("/cmekConfig"))


def _location(name: LocationName) -> PB:
    return pb.Location(name=str(name), location_id=name.location, display_name=name.location)


@dataclass(frozen=True)
class MalformedRequest:
    """What the request deserializer returns for bytes that are not the request message: the
    handler answers INVALID_ARGUMENT after the auth check, so nothing is logged for anonymous
    callers and grpc logs no traceback."""

    type_name: str


def request_deserializer(request_class: Any) -> Callable[[bytes], PB]:
    """A deserializer that never raises: undecodable bytes (wrong type, truncated, invalid UTF-8
    in a string field, nesting too deep) give a :class:`MalformedRequest`."""
    type_name = request_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> PB:
        try:
            return request_class.FromString(data)
        except Exception:  # DecodeError, RecursionError, ...: whatever the bytes provoke
            return MalformedRequest(type_name)

    return parse


@dataclass(frozen=True)
class _Logs:
    """The rate-limited logs of the gRPC handlers, shared by every RPC."""

    internal: ThrottledLog
    malformed: ThrottledLog


def _rpc(
    handler: Handler, request_class: Any, response_class: Any, auth: ApiAuth | None, logs: _Logs
) -> grpc.RpcMethodHandler:
    name = getattr(handler, "__name__", "")

    async def serve(request: PB, context: grpc.aio.ServicerContext[PB, PB]) -> PB:
        call.bind(context.invocation_metadata() or ())
        try:
            if auth is not None:
                auth.check(call.headers(), name)
            if isinstance(request, MalformedRequest):
                logs.malformed.warning("refused %s: the request is not a valid %s", name, request.type_name)
                raise InvalidArgument(f"The request is not a valid {request.type_name} message.")
            return await handler(request)
        except OpenTasksError as error:
            await context.abort_with_status(grpc_rpc_status.to_status(rpc_status(error)))
        except Exception:
            logs.internal.exception("unexpected error in %s", name)
            failure = Internal("Internal error in opentasks; the server log has the details.")
            await context.abort_with_status(grpc_rpc_status.to_status(rpc_status(failure)))
        raise AssertionError("unreachable")  # abort_with_status always raises

    return grpc.unary_unary_rpc_method_handler(
        serve,
        request_deserializer=request_deserializer(request_class),
        response_serializer=response_class.SerializeToString,
    )


def cloud_tasks_methods(api: Any, m: Any) -> MethodTable:
    """The CloudTasks service's RPCs: name -> (coroutine of ``api``, request class, response class),
    with the message classes of module ``m`` (:mod:`messages` for v2, ``messages_v2beta3``)."""
    return {
        "ListQueues": (api.list_queues, m.ListQueuesRequest, m.ListQueuesResponse),
        "GetQueue": (api.get_queue, m.GetQueueRequest, m.Queue),
        "CreateQueue": (api.create_queue, m.CreateQueueRequest, m.Queue),
        "UpdateQueue": (api.update_queue, m.UpdateQueueRequest, m.Queue),
        "DeleteQueue": (api.delete_queue, m.DeleteQueueRequest, m.Empty),
        "PurgeQueue": (api.purge_queue, m.PurgeQueueRequest, m.Queue),
        "PauseQueue": (api.pause_queue, m.PauseQueueRequest, m.Queue),
        "ResumeQueue": (api.resume_queue, m.ResumeQueueRequest, m.Queue),
        "ListTasks": (api.list_tasks, m.ListTasksRequest, m.ListTasksResponse),
        "GetTask": (api.get_task, m.GetTaskRequest, m.Task),
        "CreateTask": (api.create_task, m.CreateTaskRequest, m.Task),
        "DeleteTask": (api.delete_task, m.DeleteTaskRequest, m.Empty),
        "RunTask": (api.run_task, m.RunTaskRequest, m.Task),
        "BatchCreateTasks": (api.batch_create_tasks, m.BatchCreateTasksRequest, m.Operation),
        "BatchDeleteTasks": (api.batch_delete_tasks, m.BatchDeleteTasksRequest, m.Operation),
        "GetIamPolicy": (api.get_iam_policy, m.GetIamPolicyRequest, m.Policy),
        "SetIamPolicy": (api.set_iam_policy, m.SetIamPolicyRequest, m.Policy),
        "TestIamPermissions": (
            api.test_iam_permissions,
            m.TestIamPermissionsRequest,
            m.TestIamPermissionsResponse,
        ),
        "GetCmekConfig": (api.get_cmek_config, m.GetCmekConfigRequest, m.CmekConfig),
        "UpdateCmekConfig": (api.update_cmek_config, m.UpdateCmekConfigRequest, m.CmekConfig),
    }


def service_handlers(
    services: dict[str, MethodTable], clock: Clock, auth: ApiAuth | None = None
) -> tuple[grpc.GenericRpcHandler, ...]:
    """Generic handlers for ``services`` (full service name -> RPC table), each call checked by
    ``auth`` when given; their logs are rate-limited together."""
    logs = _Logs(ThrottledLog(_log, clock.monotonic), ThrottledLog(_log, clock.monotonic))
    return tuple(
        grpc.method_handlers_generic_handler(
            service, {name: _rpc(*entry, auth, logs) for name, entry in methods.items()}
        )
        for service, methods in services.items()
    )


def handlers(api: CloudTasksApi, auth: ApiAuth | None = None) -> tuple[grpc.GenericRpcHandler, ...]:
    """The generic handlers serving every v2 RPC and its mixins under their full method names
    (each call checked by ``auth`` when given)."""
    location_methods: MethodTable = {
        "ListLocations": (api.list_locations, pb.ListLocationsRequest, pb.ListLocationsResponse),
        "GetLocation": (api.get_location, pb.GetLocationRequest, pb.Location),
    }
    operation_methods: MethodTable = {
        "GetOperation": (api.get_operation, pb.GetOperationRequest, pb.Operation),
    }
    services: dict[str, MethodTable] = {
        SERVICE: cloud_tasks_methods(api, pb),
        "google.cloud.location.Locations": location_methods,
        "google.longrunning.Operations": operation_methods,
    }
    return service_handlers(services, api.clock, auth)
