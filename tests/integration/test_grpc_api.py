"""Every queue and task RPC through the official Python client over gRPC, against the real server."""

import datetime as dt

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/it-project/locations/us-central1"


def error_of(call) -> exceptions.GoogleAPICallError:  # type: ignore[no-untyped-def]
    with pytest.raises(exceptions.GoogleAPICallError) as caught:
        call()
    return caught.value


def test_queue_life_cycle(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    created = client.create_queue(parent=PARENT, queue={"name": queue_path})
    assert created.rate_limits.max_dispatches_per_second == 500
    assert created.rate_limits.max_burst_size == 100
    assert created.rate_limits.max_concurrent_dispatches == 1000
    assert created.retry_config.max_attempts == 100
    assert created.retry_config.min_backoff == dt.timedelta(milliseconds=100)
    assert created.retry_config.max_backoff == dt.timedelta(seconds=3600)
    assert created.retry_config.max_doublings == 16
    assert created.state == tasks_v2.Queue.State.RUNNING
    assert client.get_queue(name=queue_path) == created

    assert client.pause_queue(name=queue_path).state == tasks_v2.Queue.State.PAUSED
    assert client.get_queue(name=queue_path).state == tasks_v2.Queue.State.PAUSED
    assert client.resume_queue(name=queue_path).state == tasks_v2.Queue.State.RUNNING

    client.delete_queue(name=queue_path)
    assert error_of(lambda: client.get_queue(name=queue_path)).code == 404
    recreate = error_of(lambda: client.create_queue(parent=PARENT, queue={"name": queue_path}))
    assert recreate.grpc_status_code == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        recreate.message == "The queue cannot be created because a queue with this name existed too recently."
    )


def test_create_queue_errors(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    duplicate = error_of(lambda: client.create_queue(parent=PARENT, queue={"name": queue_path}))
    assert (duplicate.code, duplicate.message) == (409, "Queue already exists")

    bad = error_of(lambda: client.create_queue(parent=PARENT, queue={"name": "not-a-valid-queue-name"}))
    assert bad.grpc_status_code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.message.startswith("Queue name must be formatted")
    assert bad.details[0].links[0].description == "Definition of queue name"

    rate = error_of(
        lambda: client.create_queue(
            parent=PARENT,
            queue={"name": queue_path + "-2", "rate_limits": {"max_dispatches_per_second": 501}},
        )
    )
    assert rate.message == "RateLimits.maxDispatchesPerSecond must be less than or equal to 500."

    missing = error_of(lambda: client.pause_queue(name=f"{PARENT}/queues/never-created"))
    assert missing.code == 404
    assert missing.message.startswith("Queue does not exist.")
    delete_missing = error_of(lambda: client.delete_queue(name=f"{PARENT}/queues/never-created"))
    assert delete_missing.message == "Requested entity was not found."


def test_update_queue_mask_and_upsert(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    upserted = client.update_queue(
        queue={"name": queue_path, "rate_limits": {"max_dispatches_per_second": 5}}
    )
    assert upserted.rate_limits.max_burst_size == 10
    updated = client.update_queue(
        queue={
            "name": queue_path,
            "retry_config": {"max_attempts": -1, "min_backoff": duration_pb2.Duration(seconds=2)},
            "state": tasks_v2.Queue.State.PAUSED,
        },
        update_mask=field_mask_pb2.FieldMask(
            paths=["retry_config.max_attempts", "retry_config.min_backoff", "state"]
        ),
    )
    assert updated.retry_config.max_attempts == -1
    assert updated.retry_config.min_backoff == dt.timedelta(seconds=2)
    assert updated.rate_limits.max_dispatches_per_second == 5
    assert updated.state == tasks_v2.Queue.State.RUNNING  # output-only: ignored
    bad = error_of(
        lambda: client.update_queue(
            queue={"name": queue_path}, update_mask=field_mask_pb2.FieldMask(paths=["no_such_field"])
        )
    )
    assert bad.code == 400


def test_list_queues_paging_and_filter(client: tasks_v2.CloudTasksClient) -> None:
    parent = "projects/list-project/locations/europe-west1"
    for i in range(5):
        client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q{i}"})
    client.pause_queue(name=f"{parent}/queues/q3")
    pager = client.list_queues(request={"parent": parent, "page_size": 2})
    assert [q.name.rsplit("/", 1)[1] for q in pager] == ["q0", "q1", "q2", "q3", "q4"]
    paused = client.list_queues(request={"parent": parent, "filter": "state: PAUSED"})
    assert [q.name.rsplit("/", 1)[1] for q in paused] == ["q3"]
    bad = error_of(lambda: list(client.list_queues(request={"parent": parent, "filter": "name: x"})))
    assert bad.code == 400


def test_task_life_cycle(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    schedule = timestamp_pb2.Timestamp()
    schedule.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    created = client.create_task(
        request={
            "parent": queue_path,
            "task": {
                "name": f"{queue_path}/tasks/charge-42",
                "http_request": {
                    "url": "https://example.com/charge",
                    "http_method": tasks_v2.HttpMethod.PUT,
                    "headers": {"Content-Type": "application/json"},
                    "body": b'{"amount": 42}',
                },
                "schedule_time": schedule,
                "dispatch_deadline": duration_pb2.Duration(seconds=30),
            },
            "response_view": tasks_v2.Task.View.FULL,
        }
    )
    assert created.name == f"{queue_path}/tasks/charge-42"
    assert created.http_request.body == b'{"amount": 42}'
    assert created.http_request.headers["User-Agent"] == "Google-Cloud-Tasks"
    assert created.dispatch_deadline == dt.timedelta(seconds=30)
    assert created.view == tasks_v2.Task.View.FULL
    assert created.create_time.microsecond == 0

    basic = client.get_task(name=created.name)
    assert basic.http_request.body == b""
    assert basic.view == tasks_v2.Task.View.BASIC
    assert basic.schedule_time == created.schedule_time
    full = client.get_task(request={"name": created.name, "response_view": tasks_v2.Task.View.FULL})
    assert full.http_request.body == b'{"amount": 42}'

    duplicate = error_of(
        lambda: client.create_task(
            parent=queue_path, task={"name": created.name, "http_request": {"url": "https://example.com/x"}}
        )
    )
    assert (duplicate.code, duplicate.message) == (409, "Requested entity already exists")

    client.delete_task(name=created.name)
    gone = error_of(lambda: client.get_task(name=created.name))
    assert gone.code == 404
    assert gone.message.startswith(
        "The task no longer exists, though a task with this name existed recently."
    )
    again = error_of(
        lambda: client.create_task(
            parent=queue_path, task={"name": created.name, "http_request": {"url": "https://example.com/x"}}
        )
    )
    assert again.code == 409


def test_app_engine_task(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    task = client.create_task(
        parent=queue_path,
        task={
            "app_engine_http_request": {
                "relative_uri": "/work",
                "body": b"abc",
                "app_engine_routing": {"service": "worker"},
            }
        },
    )
    assert task.name.rsplit("/", 1)[1].isdigit()
    request = task.app_engine_http_request
    assert request.app_engine_routing.service == "worker"
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert not task.dispatch_deadline


def test_list_tasks_paging_and_views(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    names = [
        client.create_task(
            parent=queue_path, task={"http_request": {"url": "http://127.0.0.1:9/x", "body": b"b"}}
        ).name
        for _ in range(7)
    ]
    pager = client.list_tasks(request={"parent": queue_path, "page_size": 3, "response_view": 2})
    listed = list(pager)
    assert [t.name for t in listed] == names
    assert all(t.http_request.body == b"b" for t in listed)
    assert all(t.http_request.body == b"" for t in client.list_tasks(parent=queue_path))


def test_task_validation_errors(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    cases = [
        ({"http_request": {"url": ""}}, "HttpRequest.url is required."),
        ({"http_request": {"url": "ftp://x"}}, "HttpTarget.url must start with 'http://' or 'https://'."),
        (
            {"name": f"{queue_path}/tasks/not a valid id", "http_request": {"url": "https://x"}},
            'Task ID "not a valid id" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), '
            "or underscores (_). Task ID must between 1 and 500 characters.",
        ),
        (
            {"http_request": {"url": "https://x"}, "dispatch_deadline": duration_pb2.Duration(seconds=5)},
            "Task.dispatchDeadline must be between [15s, 30m].",
        ),
        ({"http_request": {"url": "https://x", "body": b"x" * 1_048_600}}, "Task size too large"),
        (
            {"http_request": {"url": "https://x", "http_method": tasks_v2.HttpMethod.GET, "body": b"x"}},
            "HttpRequest.body is allowed only with POST, PUT or PATCH; this task's method is GET.",
        ),
    ]
    for task, message in cases:
        error = error_of(lambda task=task: client.create_task(parent=queue_path, task=task))
        assert (error.grpc_status_code, error.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    missing = error_of(
        lambda: client.create_task(
            parent=f"{PARENT}/queues/no-such-queue", task={"http_request": {"url": "https://x"}}
        )
    )
    assert missing.code == 404 and missing.message.startswith("Queue does not exist.")


def test_purge_queue(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    old = client.create_task(
        parent=queue_path, task={"name": f"{queue_path}/tasks/old", "http_request": {"url": "https://x"}}
    )
    purged = client.purge_queue(name=queue_path)
    assert purged.purge_time.timestamp() > 0
    kept = client.create_task(parent=queue_path, task={"http_request": {"url": "https://x"}})
    assert [t.name for t in client.list_tasks(parent=queue_path)] == [kept.name]
    assert error_of(lambda: client.get_task(name=old.name)).code == 404


def test_deleting_a_queue_removes_its_tasks(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    task = client.create_task(parent=queue_path, task={"http_request": {"url": "https://x"}})
    client.delete_queue(name=queue_path)
    assert error_of(lambda: client.get_task(name=task.name)).code == 404


def test_no_dispatch_mode_keeps_tasks_and_refuses_run_task() -> None:
    with ServerProcess("memory://", "--no-dispatch") as server:
        client = server.client()
        queue = client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/inspect"})
        task = client.create_task(parent=queue.name, task={"http_request": {"url": "http://127.0.0.1:9/x"}})
        error = error_of(lambda: client.run_task(name=task.name))
        assert error.grpc_status_code == grpc.StatusCode.FAILED_PRECONDITION
        assert "--no-dispatch" in error.message
        assert client.get_task(name=task.name).dispatch_count == 0


def test_sigterm_stops_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "server.log"
    server = ServerProcess(f"sqlite:///{tmp_path}/x.db", log_path=log).start()
    assert server.stop() == 0
    lines = log.read_text().splitlines()
    expected = f"listening on 127.0.0.1:{server.port} (gRPC) and :{server.http_port} (HTTP and gRPC), storage sqlite:///"
    assert any(expected in line for line in lines)
    assert lines[-1].endswith("opentasks stopped")
