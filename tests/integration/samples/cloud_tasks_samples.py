"""Cloud Tasks code written the way Google's documented Python samples write it: a client made
with no arguments (Google's default credentials and endpoint), queues and tasks built from the
library's types. Nothing here knows about opentasks; the tests run it unchanged."""

from __future__ import annotations

import datetime
import json

from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2


def create_queue(project: str, location: str, queue_id: str) -> tasks_v2.Queue:
    client = tasks_v2.CloudTasksClient()
    return client.create_queue(
        tasks_v2.CreateQueueRequest(
            parent=client.common_location_path(project, location),
            queue=tasks_v2.Queue(name=client.queue_path(project, location, queue_id)),
        )
    )


def create_http_task(  # noqa: PLR0917 - shaped as the sample is
    project: str,
    location: str,
    queue: str,
    url: str,
    json_payload: dict[str, object],
    scheduled_seconds_from_now: int | None = None,
    task_id: str | None = None,
    deadline_in_seconds: int | None = None,
) -> tasks_v2.Task:
    client = tasks_v2.CloudTasksClient()
    task = tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=url,
            headers={"Content-type": "application/json"},
            body=json.dumps(json_payload).encode(),
        ),
        name=client.task_path(project, location, queue, task_id) if task_id is not None else None,
    )
    if scheduled_seconds_from_now is not None:
        timestamp = timestamp_pb2.Timestamp()
        timestamp.FromDatetime(
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=scheduled_seconds_from_now)
        )
        task.schedule_time = timestamp
    if deadline_in_seconds is not None:
        task.dispatch_deadline = duration_pb2.Duration(seconds=deadline_in_seconds)
    return client.create_task(
        tasks_v2.CreateTaskRequest(parent=client.queue_path(project, location, queue), task=task)
    )


def create_http_task_with_token(  # noqa: PLR0917 - shaped as the sample is
    project: str,
    location: str,
    queue: str,
    url: str,
    payload: bytes,
    service_account_email: str,
    audience: str,
) -> tasks_v2.Task:
    client = tasks_v2.CloudTasksClient()
    task = tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=url,
            oidc_token=tasks_v2.OidcToken(service_account_email=service_account_email, audience=audience),
            body=payload,
        )
    )
    return client.create_task(
        tasks_v2.CreateTaskRequest(parent=client.queue_path(project, location, queue), task=task)
    )


def pause_queue(project: str, location: str, queue: str) -> tasks_v2.Queue:
    client = tasks_v2.CloudTasksClient()
    return client.pause_queue(tasks_v2.PauseQueueRequest(name=client.queue_path(project, location, queue)))


def resume_queue(project: str, location: str, queue: str) -> tasks_v2.Queue:
    client = tasks_v2.CloudTasksClient()
    return client.resume_queue(tasks_v2.ResumeQueueRequest(name=client.queue_path(project, location, queue)))


def purge_queue(project: str, location: str, queue: str) -> tasks_v2.Queue:
    client = tasks_v2.CloudTasksClient()
    return client.purge_queue(tasks_v2.PurgeQueueRequest(name=client.queue_path(project, location, queue)))


def list_queues(project: str, location: str) -> list[str]:
    client = tasks_v2.CloudTasksClient()
    return [queue.name for queue in client.list_queues(parent=client.common_location_path(project, location))]


def delete_queue(project: str, location: str, queue: str) -> None:
    client = tasks_v2.CloudTasksClient()
    client.delete_queue(name=client.queue_path(project, location, queue))


async def create_http_task_async(project: str, location: str, queue: str, url: str) -> tasks_v2.Task:
    client = tasks_v2.CloudTasksAsyncClient()
    return await client.create_task(
        parent=client.queue_path(project, location, queue),
        task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=url, http_method=tasks_v2.HttpMethod.GET)),
    )
