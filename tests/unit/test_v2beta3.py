"""v2beta3 served by the v2 API, in-process: message conversion, read_mask and stats (from a fake
QueueInsights), the v2beta3-only fields, and the REST helpers of the second version."""

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import any_pb2
from multidict import MultiDict, MultiDictProxy

from opentasks.api import convert_v2beta3 as convert
from opentasks.api import messages as v2
from opentasks.api import messages_v2beta3 as pb
from opentasks.api.cloud_tasks_grpc import CloudTasksApi
from opentasks.api.rest import V2BETA3_ROUTES, find_route, query_parameters
from opentasks.api.v2beta3 import CloudTasksV2beta3Api
from opentasks.clock import FakeClock
from opentasks.domain.names import QueueName
from opentasks.domain.stats import QueueStats
from opentasks.errors import InvalidArgument, NotFound
from opentasks.service.locations import LocationService
from opentasks.service.queues import QueueService
from opentasks.service.tasks import TaskService
from opentasks.storage.memory import MemoryStore

PARENT = "projects/p/locations/l"
OLDEST = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeInsights:
    """Answers every existing queue with fixed numbers, and NotFound for the others."""

    def __init__(self, queues: QueueService) -> None:
        self._queues = queues
        self.asked: list[str] = []

    async def queue_stats(self, name: QueueName) -> QueueStats:
        self.asked.append(str(name))
        if not await self._queues.queue_exists(name):
            raise NotFound("Queue does not exist.")
        return QueueStats(
            tasks_count=3,
            due_tasks_count=1,
            oldest_estimated_arrival_time=OLDEST,
            executed_last_minute_count=7,
            concurrent_dispatches_count=2,
            effective_execution_rate=4.5,
        )

    async def queues_stats(self, names: Collection[QueueName]) -> dict[QueueName, QueueStats]:
        return {name: await self.queue_stats(name) for name in names if await self._queues.queue_exists(name)}


@pytest.fixture
def apis() -> tuple[CloudTasksV2beta3Api, FakeInsights]:
    clock = FakeClock()
    store = MemoryStore()
    queues = QueueService(store, clock)
    api = CloudTasksApi(queues, TaskService(store, clock), LocationService(store), clock)
    insights = FakeInsights(queues)
    return CloudTasksV2beta3Api(api, insights), insights


async def make_queue(api: CloudTasksV2beta3Api, queue_id: str = "q", **fields: Any) -> Any:
    queue = pb.Queue(name=f"{PARENT}/queues/{queue_id}", **fields)
    return await api.create_queue(pb.CreateQueueRequest(parent=PARENT, queue=queue))


async def test_queue_fields_round_trip_with_v2beta3_shapes(apis: tuple[CloudTasksV2beta3Api, Any]) -> None:
    api, _ = apis
    created = await make_queue(
        api,
        type_=pb.Queue.Type.PUSH,
        app_engine_http_queue={"app_engine_routing_override": {"service": "worker"}},
        rate_limits={"max_dispatches_per_second": 5},
        retry_config={"max_attempts": 4},
    )
    assert created.type_ == pb.Queue.Type.PUSH
    assert created.app_engine_http_queue.app_engine_routing_override.service == "worker"
    assert created.rate_limits.max_burst_size == 10 and created.retry_config.max_attempts == 4
    assert not created.HasField("stats") and not created.HasField("task_ttl")
    with_target = await make_queue(api, "h", http_target={"uri_override": {"host": "example.com"}})
    assert with_target.http_target.uri_override.host == "example.com"
    assert not with_target.HasField("app_engine_http_queue")
    got = await api.get_queue(pb.GetQueueRequest(name=created.name))
    assert got == created


async def test_stats_only_when_the_read_mask_asks(apis: tuple[CloudTasksV2beta3Api, FakeInsights]) -> None:
    api, insights = apis
    name = (await make_queue(api)).name
    assert not (await api.get_queue(pb.GetQueueRequest(name=name))).HasField("stats")
    assert insights.asked == []
    everything = await api.get_queue(pb.GetQueueRequest(name=name, read_mask={"paths": ["*"]}))
    stats = everything.stats
    assert (stats.tasks_count, stats.executed_last_minute_count, stats.concurrent_dispatches_count) == (
        3,
        7,
        2,
    )
    assert stats.effective_execution_rate == 4.5
    assert stats.oldest_estimated_arrival_time.ToDatetime(tzinfo=UTC) == OLDEST
    assert everything.rate_limits.max_dispatches_per_second == 500
    only_stats = await api.get_queue(pb.GetQueueRequest(name=name, read_mask={"paths": ["stats"]}))
    assert only_stats.name == name and only_stats.stats == stats
    assert not only_stats.HasField("rate_limits") and only_stats.type_ == 0
    limits = await api.get_queue(pb.GetQueueRequest(name=name, read_mask={"paths": ["rate_limits"]}))
    assert limits.rate_limits.max_dispatches_per_second == 500 and not limits.HasField("stats")
    with pytest.raises(InvalidArgument, match='read_mask path "nope"'):
        await api.get_queue(pb.GetQueueRequest(name=name, read_mask={"paths": ["nope"]}))


async def test_list_queues_with_stats(apis: tuple[CloudTasksV2beta3Api, FakeInsights]) -> None:
    api, insights = apis
    for queue_id in ("a", "b"):
        await make_queue(api, queue_id)
    listed = await api.list_queues(pb.ListQueuesRequest(parent=PARENT, read_mask={"paths": ["stats"]}))
    assert [q.stats.tasks_count for q in listed.queues] == [3, 3]
    plain = await api.list_queues(pb.ListQueuesRequest(parent=PARENT, page_size=1))
    assert len(plain.queues) == 1 and plain.next_page_token and not plain.queues[0].HasField("stats")
    assert len(insights.asked) == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type_": pb.Queue.Type.PULL}, "Queue.type PULL is not supported"),
        ({"task_ttl": {"seconds": 864000}}, "Queue.taskTtl is not supported"),
        ({"tombstone_ttl": {"seconds": 3600}}, "Queue.tombstoneTtl is not supported"),
    ],
)
async def test_v2beta3_only_queue_fields_are_refused(
    apis: tuple[CloudTasksV2beta3Api, Any], fields: dict[str, Any], message: str
) -> None:
    api, _ = apis
    with pytest.raises(InvalidArgument, match=message):
        await make_queue(api, **fields)


async def test_pull_tasks_are_refused(apis: tuple[CloudTasksV2beta3Api, Any]) -> None:
    api, _ = apis
    name = (await make_queue(api)).name
    task = pb.Task(pull_message={"payload": b"x"})
    with pytest.raises(InvalidArgument, match=r"Task\.pullMessage is not supported"):
        await api.create_task(pb.CreateTaskRequest(parent=name, task=task))


async def test_update_queue_paths(apis: tuple[CloudTasksV2beta3Api, Any]) -> None:
    api, _ = apis
    name = (await make_queue(api)).name

    async def update(paths: list[str], **fields: Any) -> Any:
        queue = pb.Queue(name=name, **fields)
        return await api.update_queue(pb.UpdateQueueRequest(queue=queue, update_mask={"paths": paths}))

    routed = await update(
        ["app_engine_http_queue.app_engine_routing_override"],
        app_engine_http_queue={"app_engine_routing_override": {"service": "s"}},
    )
    assert routed.app_engine_http_queue.app_engine_routing_override.service == "s"
    # TTLs set but not named by the mask are not updated, so not refused; type and stats change nothing.
    same = await update(["type", "stats"], task_ttl={"seconds": 10}, type_=pb.Queue.Type.PUSH)
    assert same == routed
    with pytest.raises(InvalidArgument, match="taskTtl"):
        await update(["task_ttl"], task_ttl={"seconds": 10})
    cleared = await update(["app_engine_http_queue"])
    assert not cleared.HasField("app_engine_http_queue")
    upserted = await api.update_queue(pb.UpdateQueueRequest(queue=pb.Queue(name=f"{PARENT}/queues/new")))
    assert upserted.type_ == pb.Queue.Type.PUSH


async def test_tasks_and_batches(apis: tuple[CloudTasksV2beta3Api, Any]) -> None:
    api, _ = apis
    queue = (await make_queue(api)).name
    await api.pause_queue(pb.PauseQueueRequest(name=queue))
    task = pb.Task(
        name=f"{queue}/tasks/t",
        http_request={"url": "https://example.com/", "http_method": 6, "headers": {"A": "b"}, "body": b"x"},
        dispatch_deadline={"seconds": 30},
        retry_config={"max_attempts": 2},
    )
    created = await api.create_task(pb.CreateTaskRequest(parent=queue, task=task, response_view=2))
    assert created.http_request.body == b"x" and dict(created.http_request.headers)["A"] == "b"
    assert created.retry_config.max_attempts == 2 and created.view == 2
    listed = await api.list_tasks(pb.ListTasksRequest(parent=queue))
    assert [t.name for t in listed.tasks] == [task.name]
    batch = pb.BatchCreateTasksRequest(
        parent=queue,
        requests=[{"parent": queue, "task": {"app_engine_http_request": {"relative_uri": "/x"}}}],
    )
    operation = await api.batch_create_tasks(batch)
    metadata = pb.BatchCreateTasksMetadata()
    assert operation.metadata.Unpack(metadata) and metadata.state == 2
    response = pb.BatchCreateTasksResponse()
    assert (
        operation.response.Unpack(response) and response.tasks[0].app_engine_http_request.relative_uri == "/x"
    )
    again = await api.get_operation(v2.GetOperationRequest(name=operation.name))
    assert again == operation


def test_messages_convert_both_ways_without_loss() -> None:
    task = v2.Task(
        name="projects/p/locations/l/queues/q/tasks/t",
        app_engine_http_request={
            "app_engine_routing": {"service": "s"},
            "headers": {"a": "b"},
            "body": b"\0",
        },
        dispatch_count=3,
        last_attempt={"response_status": {"code": 5, "message": "m"}},
        retry_config={"min_backoff": {"nanos": 100_000_000}},
    )
    task.schedule_time.FromDatetime(OLDEST)
    beta = convert.to_v2beta3(task, pb.Task)
    assert beta.app_engine_http_request.app_engine_routing.service == "s" and beta.dispatch_count == 3
    assert convert.to_v2(beta, v2.Task) == task
    queue = v2.Queue(name="n", state=2, app_engine_routing_override={}, stackdriver_logging_config={})
    assert convert.to_v2(convert.to_v2beta3(queue, pb.Queue), v2.Queue) == queue
    other = any_pb2.Any()
    other.Pack(v2.Empty())
    operation = v2.Operation(name="o", done=True, response=other)
    assert convert.operation_to_v2beta3(operation) == operation


def test_rest_routes_and_read_mask_parameter() -> None:
    route, resource = find_route("GET", "projects/p/locations/l/queues/q", V2BETA3_ROUTES, "v2beta3")
    assert route.request is pb.GetQueueRequest and resource == "projects/p/locations/l/queues/q"
    with pytest.raises(NotFound, match="/v2beta3/projects/p"):
        find_route("GET", "projects/p/nothing", V2BETA3_ROUTES, "v2beta3")
    query: MultiDictProxy[str] = MultiDictProxy(MultiDict([("readMask", "stats,rate_limits")]))
    assert query_parameters("get_queue", query, {}) == {"readMask": "stats,rateLimits"}
    assert query_parameters("get_queue", query) == {}  # v2 has no read_mask
