"""Dispatch through a real server process to a real handler process: headers, retries,
deadlines, pause/resume, RunTask, purge, caps, App Engine targets, crash and shutdown."""

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from opentasks.testing import ServerProcess
from tests.integration.handlers import HandlerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/dispatch/locations/us-central1"
FAST_RETRY = {
    "min_backoff": duration_pb2.Duration(nanos=100_000_000),
    "max_backoff": duration_pb2.Duration(seconds=1),
}
T = TypeVar("T")


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


@pytest.fixture(scope="module")
def server(handler: HandlerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("dispatch")
    with ServerProcess(
        f"sqlite:///{folder}/opentasks.db",
        "--app-engine-url",
        handler.url(""),
        log_path=folder / "server.log",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> tasks_v2.CloudTasksClient:
    return server.client()


@pytest.fixture(scope="module", autouse=True)
def timed_out_attempts(client: tasks_v2.CloudTasksClient) -> Iterator[tuple[HandlerProcess, str]]:
    """A task whose handler outlasts its 15 s dispatch deadline (Cloud Tasks' shortest), created
    when the module starts so that the wait runs beside the other tests; its handler of its own
    and the task's name."""
    with HandlerProcess() as slow:
        queue = make_queue(client, f"{PARENT}/queues/deadline", retry_config=FAST_RETRY)
        task = client.create_task(
            parent=queue,
            task={
                "http_request": {"url": slow.url("/sleep/60")},
                "dispatch_deadline": duration_pb2.Duration(seconds=15),
            },
        )
        yield slow, task.name


def eventually(check: Callable[[], T | None], timeout_s: float = 20) -> T:
    """Poll the API until ``check`` returns something (the state is written right after a response)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.02)
    raise AssertionError("the condition did not hold in time")


def make_queue(client: tasks_v2.CloudTasksClient, queue_path: str, **fields: object) -> str:
    client.create_queue(parent=PARENT, queue={"name": queue_path.replace("it-project", "dispatch"), **fields})
    return queue_path.replace("it-project", "dispatch")


def test_http_request_is_sent_byte_for_byte_with_service_headers(
    client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str
) -> None:
    queue = make_queue(client, queue_path)
    body = bytes(range(256))
    task = client.create_task(
        parent=queue,
        task={
            "name": f"{queue}/tasks/exact",
            "http_request": {
                "url": handler.url("/exact?a=1&b=two"),
                "http_method": tasks_v2.HttpMethod.PUT,
                "headers": {
                    "X-Custom": "Value With Spaces",
                    "x-lower": "v",
                    "Host": "evil.example",
                    "X-CloudTasks-TaskName": "forged",
                    "User-Agent": "mine",
                },
                "body": body,
            },
        },
    )
    (received,) = handler.take(1)
    assert (received.method, received.path, received.body) == ("PUT", "/exact?a=1&b=two", body)
    assert received.header("X-Custom") == "Value With Spaces"
    assert ("x-lower", "v") in received.headers  # casing as sent
    assert received.header("User-Agent") == "Google-Cloud-Tasks"
    assert received.header("Host") == f"127.0.0.1:{handler.port}"
    assert received.header("Content-Type") is None  # Cloud Tasks adds no default
    assert received.header("X-CloudTasks-QueueName") == queue.rsplit("/", 1)[1]
    assert received.header("X-CloudTasks-TaskName") == "exact"
    assert received.header("X-CloudTasks-TaskRetryCount") == "0"
    assert received.header("X-CloudTasks-TaskExecutionCount") == "0"
    assert float(received.header("X-CloudTasks-TaskETA") or 0) == pytest.approx(
        task.schedule_time.timestamp()
    )
    assert received.header("X-CloudTasks-TaskPreviousResponse") is None
    eventually(lambda: _gone(client, task.name))


def _gone(client: tasks_v2.CloudTasksClient, name: str) -> bool | None:
    try:
        client.get_task(name=name)
    except exceptions.NotFound as error:
        assert "existed recently" in error.message or "not found" in error.message
        return True
    return None


def test_retries_count_like_cloud_tasks_and_success_finishes(
    client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str
) -> None:
    queue = make_queue(client, queue_path, retry_config=FAST_RETRY)
    task = client.create_task(
        parent=queue, task={"http_request": {"url": handler.url("/plan/503-404-429-500-302-200")}}
    )
    received = handler.take(6)
    rows = [
        (
            r.header("X-CloudTasks-TaskRetryCount"),
            r.header("X-CloudTasks-TaskExecutionCount"),
            r.header("X-CloudTasks-TaskPreviousResponse"),
            r.header("X-CloudTasks-TaskRetryReason"),
        )
        for r in received
    ]
    assert rows == [
        ("0", "0", None, None),
        ("1", "0", "503", ""),
        ("2", "1", "404", ""),
        ("3", "2", "429", ""),
        ("4", "2", "500", ""),
        ("5", "3", "302", ""),
    ]
    gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 0.1 s, then 0.2 s of backoff
    eventually(lambda: _gone(client, task.name))


def test_failed_attempt_is_visible_through_get_task(
    client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str
) -> None:
    queue = make_queue(client, queue_path, retry_config={"min_backoff": duration_pb2.Duration(seconds=600)})
    task = client.create_task(parent=queue, task={"http_request": {"url": handler.url("/plan/503")}})
    handler.take(1)

    def recorded() -> tasks_v2.Task | None:
        got = client.get_task(name=task.name)
        return got if got.last_attempt.response_time else None

    got = eventually(recorded)
    assert (got.dispatch_count, got.response_count) == (1, 1)
    assert got.first_attempt.dispatch_time == got.last_attempt.dispatch_time
    assert got.last_attempt.response_status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert got.last_attempt.response_status.message == "HTTP status code 503"
    wait = got.schedule_time - got.last_attempt.response_time
    assert 599 <= wait.total_seconds() <= 601
    client.delete_task(name=task.name)


def test_max_attempts_ends_retries(
    client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str
) -> None:
    queue = make_queue(client, queue_path, retry_config={**FAST_RETRY, "max_attempts": 2})
    task = client.create_task(parent=queue, task={"http_request": {"url": handler.url("/plan/500")}})
    handler.take(2)
    eventually(lambda: _gone(client, task.name))
    assert handler.nothing_more(0.5)


def test_pause_purge_resume(
    client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str
) -> None:
    queue = make_queue(client, queue_path)
    client.pause_queue(name=queue)
    client.create_task(parent=queue, task={"http_request": {"url": handler.url("/purged")}})
    assert handler.nothing_more(0.5)
    client.purge_queue(name=queue)
    client.create_task(parent=queue, task={"http_request": {"url": handler.url("/after-purge")}})
    assert handler.nothing_more(0.3)
    client.resume_queue(name=queue)
    (received,) = handler.take(1)
    assert received.path == "/after-purge"
    assert handler.nothing_more(0.3)


def test_run_task_dispatches_at_once_even_when_paused(
    client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str
) -> None:
    queue = make_queue(client, queue_path)
    client.pause_queue(name=queue)
    later = timestamp_pb2.Timestamp()
    later.FromSeconds(int(time.time()) + 3600)
    task = client.create_task(
        parent=queue, task={"http_request": {"url": handler.url("/run")}, "schedule_time": later}
    )
    ran = client.run_task(name=task.name)
    assert ran.dispatch_count == 1
    assert ran.last_attempt.dispatch_time.timestamp() > 0
    assert not ran.last_attempt.response_time
    (received,) = handler.take(1)
    assert received.path == "/run"
    eventually(lambda: _gone(client, task.name))
    with pytest.raises(exceptions.NotFound):
        client.run_task(name=task.name)


def test_concurrency_cap(client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str) -> None:
    queue = make_queue(client, queue_path, rate_limits={"max_concurrent_dispatches": 2})
    for _ in range(6):
        client.create_task(parent=queue, task={"http_request": {"url": handler.url("/sleep/1")}})
    arrivals = sorted(r.at for r in handler.take(6, timeout_s=20))
    assert arrivals[2] - arrivals[0] >= 0.9
    assert arrivals[4] - arrivals[2] >= 0.9


def test_rate_limit_burst_then_steady_rate(
    client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str
) -> None:
    queue = make_queue(client, queue_path)
    client.pause_queue(name=queue)
    client.update_queue(queue={"name": queue, "rate_limits": {"max_dispatches_per_second": 10}})  # burst 10
    for _ in range(20):
        client.create_task(parent=queue, task={"http_request": {"url": handler.url("/rate")}})
    client.resume_queue(name=queue)
    arrivals = sorted(r.at for r in handler.take(20, timeout_s=20))
    assert arrivals[9] - arrivals[0] < 0.5  # the burst
    assert 0.9 <= arrivals[19] - arrivals[9] <= 1.5  # ten more at 10/s


def test_app_engine_task_headers(
    client: tasks_v2.CloudTasksClient, handler: HandlerProcess, queue_path: str
) -> None:
    queue = make_queue(client, queue_path, retry_config=FAST_RETRY)
    client.create_task(
        parent=queue,
        task={
            "app_engine_http_request": {
                "relative_uri": "/plan/500-200",
                "body": b"payload",
                "headers": {"User-Agent": "my-app"},
            }
        },
    )
    first, second = handler.take(2)
    assert (first.method, first.path, first.body) == ("POST", "/plan/500-200", b"payload")
    assert first.header("User-Agent") == "my-app AppEngine-Google; (+http://code.google.com/appengine)"
    assert first.header("Content-Type") == "application/octet-stream"
    assert first.header("X-AppEngine-QueueName") == queue.rsplit("/", 1)[1]
    assert first.header("X-AppEngine-TaskRetryCount") == "0"
    assert second.header("X-AppEngine-TaskExecutionCount") == "1"  # the 500 counts for App Engine
    assert second.header("X-AppEngine-TaskPreviousResponse") == "500"
    assert second.header("X-AppEngine-TaskRetryReason") == "App Error"


def test_tasks_in_flight_at_kill_9_are_dispatched_again(tmp_path: Path, handler: HandlerProcess) -> None:
    storage = f"sqlite:///{tmp_path}/crash.db"
    queue = f"{PARENT}/queues/crash"
    server = ServerProcess(storage, log_path=tmp_path / "server.log").start()
    try:
        client = server.client()
        client.create_queue(parent=PARENT, queue={"name": queue})
        names = {
            client.create_task(parent=queue, task={"http_request": {"url": handler.url("/sleep/2")}}).name
            for _ in range(3)
        }
        first = handler.take(3)  # all three are in flight now
    finally:
        server.kill()
    restarted = ServerProcess(storage, log_path=tmp_path / "server.log")
    with restarted:
        again = handler.take(3, timeout_s=20)
        assert {r.header("X-CloudTasks-TaskName") for r in again} == {n.rsplit("/", 1)[1] for n in names}
        assert {r.header("X-CloudTasks-TaskName") for r in first} == {n.rsplit("/", 1)[1] for n in names}
        assert all(r.header("X-CloudTasks-TaskRetryCount") == "1" for r in again)
        eventually(lambda: list(restarted.client().list_tasks(parent=queue)) == [] or None, timeout_s=10)


def test_sigterm_lets_attempts_in_flight_finish(tmp_path: Path, handler: HandlerProcess) -> None:
    storage = f"sqlite:///{tmp_path}/graceful.db"
    queue = f"{PARENT}/queues/graceful"
    server = ServerProcess(storage, log_path=tmp_path / "server.log").start()
    client = server.client()
    client.create_queue(parent=PARENT, queue={"name": queue})
    for _ in range(3):
        client.create_task(parent=queue, task={"http_request": {"url": handler.url("/sleep/1")}})
    handler.take(3)
    assert server.stop() == 0  # waits for the three answers, records them, exits
    with ServerProcess(storage, log_path=tmp_path / "server.log") as restarted:
        assert list(restarted.client().list_tasks(parent=queue)) == []
    assert handler.nothing_more(0.5)


# Last in the module: its 15 s ran beside the tests above.
def test_dispatch_deadline_times_out_and_reads_as_504(
    client: tasks_v2.CloudTasksClient, timed_out_attempts: tuple[HandlerProcess, str]
) -> None:
    slow, name = timed_out_attempts
    first, second = slow.take(2, timeout_s=40)
    assert 14.5 <= second.at - first.at <= 18
    assert second.header("X-CloudTasks-TaskRetryCount") == "1"
    assert second.header("X-CloudTasks-TaskExecutionCount") == "0"
    assert second.header("X-CloudTasks-TaskPreviousResponse") == "504"
    got = client.get_task(name=name)
    assert got.response_count == 0 and got.dispatch_count == 2
    client.delete_task(name=name)
