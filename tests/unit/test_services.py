"""Queue and task services on the memory store, in virtual time."""

from datetime import timedelta

import pytest

from opentasks.clock import FakeClock
from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.domain.queue import (
    AppEngineRouting,
    HttpMethod,
    HttpTarget,
    Queue,
    QueueState,
    RateLimits,
    RetryConfig,
    UriOverride,
)
from opentasks.domain.routing import AppEngineRoutes
from opentasks.domain.task import AppEngineHttpRequest, HttpRequest, TaskDraft, TaskView
from opentasks.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from opentasks.service.queues import QueueService
from opentasks.service.tasks import BufferedRequest, TaskService
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.memory import MemoryStore

PARENT = LocationName("p", "l")
Q = QueueName("p", "l", "q")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def services(clock: FakeClock) -> tuple[QueueService, TaskService]:
    store = MemoryStore()
    policy = TombstonePolicy(task=timedelta(minutes=5), queue=timedelta(minutes=10))
    return QueueService(store, clock, tombstones=policy), TaskService(store, clock, tombstones=policy)


def draft(name: str = "", body: bytes = b"") -> TaskDraft:
    return TaskDraft(name=name, http_request=HttpRequest(url="https://example.com/x", body=body))


async def test_create_queue_fills_defaults_and_ignores_output_only(
    services: tuple[QueueService, TaskService],
) -> None:
    queues, _ = services
    created = await queues.create_queue(PARENT, Queue(Q, state=QueueState.PAUSED))
    assert created.state == QueueState.RUNNING
    assert created.rate_limits.max_dispatches_per_second == 500


async def test_create_queue_outside_parent(services: tuple[QueueService, TaskService]) -> None:
    queues, _ = services
    with pytest.raises(InvalidArgument, match="must be in the location"):
        await queues.create_queue(LocationName("p", "other"), Queue(Q))


async def test_allowed_locations(clock: FakeClock) -> None:
    queues = QueueService(MemoryStore(), clock, allowed_locations=frozenset({"us-central1"}))
    with pytest.raises(InvalidArgument, match="not served here; use one of: us-central1"):
        await queues.create_queue(PARENT, Queue(Q))


async def test_update_creates_then_patches(services: tuple[QueueService, TaskService]) -> None:
    queues, _ = services
    created = await queues.update_queue(Queue(Q, rate_limits=RateLimits(max_dispatches_per_second=5)), [])
    assert created.rate_limits.max_burst_size == 10
    patched = await queues.update_queue(
        Queue(Q, retry_config=RetryConfig(max_attempts=3)), ["retry_config.max_attempts"]
    )
    assert patched.retry_config.max_attempts == 3
    assert patched.rate_limits.max_dispatches_per_second == 5


async def test_update_rejects_bad_mask_before_writing(services: tuple[QueueService, TaskService]) -> None:
    queues, _ = services
    with pytest.raises(InvalidArgument):
        await queues.update_queue(Queue(Q), ["nonsense"])
    with pytest.raises(NotFound):
        await queues.get_queue(Q)


async def test_update_keeps_state_and_validates_the_merge(services: tuple[QueueService, TaskService]) -> None:
    queues, _ = services
    await queues.create_queue(PARENT, Queue(Q, retry_config=RetryConfig(max_backoff=timedelta(seconds=5))))
    await queues.pause_queue(Q)
    with pytest.raises(InvalidArgument, match="minBackoff must be less than or equal"):
        await queues.update_queue(
            Queue(Q, retry_config=RetryConfig(min_backoff=timedelta(seconds=9))), ["retry_config.min_backoff"]
        )
    updated = await queues.update_queue(
        Queue(Q, rate_limits=RateLimits(max_concurrent_dispatches=2)),
        ["rate_limits.max_concurrent_dispatches"],
    )
    assert updated.state == QueueState.PAUSED


async def test_pause_resume(services: tuple[QueueService, TaskService]) -> None:
    queues, _ = services
    await queues.create_queue(PARENT, Queue(Q))
    assert (await queues.pause_queue(Q)).state == QueueState.PAUSED
    assert (await queues.pause_queue(Q)).state == QueueState.PAUSED
    assert (await queues.resume_queue(Q)).state == QueueState.RUNNING
    with pytest.raises(NotFound, match="Queue does not exist"):
        await queues.pause_queue(QueueName("p", "l", "missing"))


async def test_queue_tombstone_window(services: tuple[QueueService, TaskService], clock: FakeClock) -> None:
    queues, _ = services
    await queues.create_queue(PARENT, Queue(Q))
    await queues.delete_queue(Q)
    clock.advance(599)
    with pytest.raises(FailedPrecondition):
        await queues.create_queue(PARENT, Queue(Q))
    clock.advance(2)
    await queues.create_queue(PARENT, Queue(Q))


async def test_task_tombstone_window(services: tuple[QueueService, TaskService], clock: FakeClock) -> None:
    queues, tasks = services
    await queues.create_queue(PARENT, Queue(Q))
    created = await tasks.create_task(Q, draft(f"{Q}/tasks/once"), TaskView.BASIC)
    await tasks.delete_task(created.name)
    clock.advance(299)
    with pytest.raises(AlreadyExists):
        await tasks.create_task(Q, draft(f"{Q}/tasks/once"), TaskView.BASIC)
    clock.advance(2)
    await tasks.create_task(Q, draft(f"{Q}/tasks/once"), TaskView.BASIC)


async def test_purge_spares_tasks_created_after(
    services: tuple[QueueService, TaskService], clock: FakeClock
) -> None:
    queues, tasks = services
    await queues.create_queue(PARENT, Queue(Q))
    await tasks.create_task(Q, draft(), TaskView.BASIC)
    clock.advance(0.001)
    purged = await queues.purge_queue(Q)
    assert purged.purge_time == clock.now()
    assert purged.state == QueueState.RUNNING
    kept = await tasks.create_task(Q, draft(), TaskView.BASIC)
    page = await tasks.list_tasks(Q, view=TaskView.BASIC, page_size=0, page_token="")
    assert [t.name for t in page.tasks] == [kept.name]


async def test_generated_ids_and_views(services: tuple[QueueService, TaskService]) -> None:
    queues, tasks = services
    await queues.create_queue(PARENT, Queue(Q))
    created = await tasks.create_task(Q, draft(body=b"secret"), TaskView.BASIC)
    assert created.name.task_id.isdigit() and 19 <= len(created.name.task_id) <= 20
    assert created.http_request is not None and created.http_request.body == b""
    full = await tasks.get_task(created.name, TaskView.FULL)
    assert full.http_request is not None and full.http_request.body == b"secret"


async def test_list_paging_with_tokens(services: tuple[QueueService, TaskService]) -> None:
    queues, _ = services
    for i in range(5):
        await queues.create_queue(PARENT, Queue(QueueName("p", "l", f"q{i}")))
    seen: list[str] = []
    token = ""
    while True:
        page = await queues.list_queues(PARENT, filter="", page_size=2, page_token=token)
        seen += [q.name.queue_id for q in page.queues]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["q0", "q1", "q2", "q3", "q4"]
    first = await queues.list_queues(PARENT, filter="", page_size=2, page_token="")
    with pytest.raises(InvalidArgument, match="changed"):
        await queues.list_queues(
            PARENT, filter="state: PAUSED", page_size=2, page_token=first.next_page_token
        )


async def test_get_missing_task(services: tuple[QueueService, TaskService]) -> None:
    queues, tasks = services
    await queues.create_queue(PARENT, Queue(Q))
    with pytest.raises(NotFound, match="Requested entity was not found"):
        await tasks.get_task(TaskName(Q, "nope"), TaskView.BASIC)
    with pytest.raises(NotFound, match="Queue does not exist"):
        await tasks.list_tasks(QueueName("p", "l", "nope"), view=TaskView.BASIC, page_size=0, page_token="")


async def test_queue_yaml_queues_keep_their_bucket_until_a_plain_update(
    services: tuple[QueueService, TaskService],
) -> None:
    queues, _ = services
    legacy = Queue(Q, rate_limits=RateLimits(max_dispatches_per_second=2, max_burst_size=40))
    created = await queues.update_queue(legacy, [], queue_yaml=True)
    assert created.rate_limits.max_burst_size == 40
    assert created.from_queue_yaml
    rate_only = await queues.update_queue(
        Queue(Q, rate_limits=RateLimits(max_dispatches_per_second=3)),
        ["rate_limits.max_dispatches_per_second"],
        queue_yaml=True,
    )
    assert rate_only.rate_limits.max_burst_size == 40  # kept: the file did not change it
    # A plain UpdateQueue makes it an API queue: the burst is derived from the rate again.
    plain = await queues.update_queue(Queue(Q), ["retry_config.max_attempts"])
    assert (plain.rate_limits.max_burst_size, plain.from_queue_yaml) == (10, False)
    with pytest.raises(InvalidArgument, match=r"bucket_size of a queue\.yaml queue must be"):
        await queues.update_queue(Queue(Q, rate_limits=RateLimits(max_burst_size=501)), [], queue_yaml=True)


async def test_queue_yaml_queues_reserve_task_names_longer(clock: FakeClock) -> None:
    store = MemoryStore()
    policy = TombstonePolicy(task=timedelta(minutes=5), queue_yaml_task=timedelta(minutes=30))
    queues = QueueService(store, clock, tombstones=policy)
    tasks = TaskService(store, clock, tombstones=policy)
    await queues.update_queue(Queue(Q), [], queue_yaml=True)
    for ending in (tasks.delete_task, lambda name: tasks.batch_delete_tasks(Q, [str(name)])):
        created = await tasks.create_task(Q, draft(f"{Q}/tasks/once"), TaskView.BASIC)
        await ending(created.name)
        clock.advance(29 * 60)
        with pytest.raises(AlreadyExists):
            await tasks.create_task(Q, draft(f"{Q}/tasks/once"), TaskView.BASIC)
        clock.advance(61)
    await tasks.create_task(Q, draft(f"{Q}/tasks/once"), TaskView.BASIC)
    await queues.purge_queue(Q)
    clock.advance(29 * 60)
    with pytest.raises(AlreadyExists):
        await tasks.create_task(Q, draft(f"{Q}/tasks/once"), TaskView.BASIC)


async def test_app_engine_host_is_filled_from_the_routes(clock: FakeClock) -> None:
    store = MemoryStore()
    routes = AppEngineRoutes("http://127.0.0.1:8080", {"worker": "http://127.0.0.1:8081"})
    queues = QueueService(store, clock, app_engine=routes)
    tasks = TaskService(store, clock, app_engine=routes)
    queue = await queues.create_queue(
        PARENT, Queue(Q, app_engine_routing_override=AppEngineRouting("worker"))
    )
    assert queue.app_engine_routing_override == AppEngineRouting("worker", host="127.0.0.1:8081")
    request = AppEngineHttpRequest(relative_uri="/x")
    task = await tasks.create_task(Q, TaskDraft(app_engine_http_request=request), TaskView.FULL)
    assert task.app_engine_http_request is not None
    assert task.app_engine_http_request.app_engine_routing == AppEngineRouting(host="127.0.0.1:8080")


async def test_buffer_task_uses_the_queue_override(services: tuple[QueueService, TaskService]) -> None:
    queues, tasks = services
    await queues.create_queue(PARENT, Queue(Q))
    call = BufferedRequest(HttpMethod.POST, b'{"a": 1}', "application/json")
    with pytest.raises(FailedPrecondition, match="BufferTask needs queue-level routing"):
        await tasks.buffer_task(Q, "", call)
    target = HttpTarget(uri_override=UriOverride(host="h.example", path="/in"))
    await queues.update_queue(Queue(Q, http_target=target), ["http_target"])
    task = await tasks.buffer_task(Q, "b1", call)
    assert task.name == TaskName(Q, "b1")
    assert task.http_request is not None
    assert task.http_request.url == "https://h.example/in"
    assert task.http_request.headers["Content-Type"] == "application/json"
    full = await tasks.get_task(task.name, TaskView.FULL)
    assert full.http_request is not None and full.http_request.body == b'{"a": 1}'


async def test_tasks_aimed_at_metadata_servers_are_refused(
    services: tuple[QueueService, TaskService],
) -> None:
    queues, tasks = services
    await queues.create_queue(PARENT, Queue(Q))
    aimed = TaskDraft(http_request=HttpRequest(url="http://169.254.169.254/computeMetadata/v1/token"))
    with pytest.raises(InvalidArgument, match=r"dispatch target 169\.254\.169\.254 is not allowed"):
        await tasks.create_task(Q, aimed, TaskView.BASIC)
