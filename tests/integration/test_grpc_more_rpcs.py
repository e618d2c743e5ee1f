"""Batch RPCs (long-running operations), IAM, CMEK and Locations through the official client."""

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.cloud.location import locations_pb2
from google.iam.v1 import policy_pb2
from google.longrunning import operations_pb2

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/it-project/locations/us-central1"


def test_batch_create_tasks_is_partial_and_idempotent(
    client: tasks_v2.CloudTasksClient, server: ServerProcess, queue_path: str
) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    requests = [
        {
            "parent": queue_path,
            "task": {"name": f"{queue_path}/tasks/a", "http_request": {"url": "https://x/a"}},
        },
        {"parent": queue_path, "task": {"http_request": {"url": "ftp://bad"}}},
        {
            "parent": queue_path,
            "task": {"name": f"{queue_path}/tasks/b", "http_request": {"url": "https://x/b"}},
            "response_view": tasks_v2.Task.View.FULL,
        },
    ]
    operation = client.batch_create_tasks(
        request={"parent": queue_path, "requests": requests, "request_id": "r1"}
    )
    response = operation.result(timeout=10)
    assert [t.name.rsplit("/", 1)[1] for t in response.tasks] == ["a", "b"]
    metadata = operation.metadata
    assert metadata.state == tasks_v2.BatchCreateTasksMetadata.State.PARTIALLY_SUCCEEDED
    assert list(metadata.failed_requests) == [1]
    assert metadata.failed_requests[1].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]

    again = client.batch_create_tasks(
        request={"parent": queue_path, "requests": requests, "request_id": "r1"}
    )
    assert again.operation.name == operation.operation.name  # the retry ran nothing twice
    assert len(list(client.list_tasks(parent=queue_path))) == 2

    fetched = client.get_operation(request=operations_pb2.GetOperationRequest(name=operation.operation.name))
    assert fetched.done and fetched.name == operation.operation.name

    with pytest.raises(exceptions.InvalidArgument, match="must equal the batch's parent"):
        client.batch_create_tasks(
            parent=queue_path, requests=[{"parent": f"{PARENT}/queues/other", "task": {}}]
        )


def test_batch_delete_tasks(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    names = [
        client.create_task(parent=queue_path, task={"http_request": {"url": "https://x"}}).name
        for _ in range(3)
    ]
    operation = client.batch_delete_tasks(parent=queue_path, names=[*names, f"{queue_path}/tasks/missing"])
    operation.result(timeout=10)
    assert operation.metadata.state == tasks_v2.BatchDeleteTasksMetadata.State.PARTIALLY_SUCCEEDED
    assert list(operation.metadata.failed_requests) == [3]
    assert list(client.list_tasks(parent=queue_path)) == []

    all_failed = client.batch_delete_tasks(parent=queue_path, names=[f"{queue_path}/tasks/missing"])
    with pytest.raises(exceptions.GoogleAPICallError) as caught:
        all_failed.result(timeout=10)
    assert caught.value.grpc_status_code == grpc.StatusCode.ABORTED


def test_iam_policy_round_trip_with_etag(client: tasks_v2.CloudTasksClient, queue_path: str) -> None:
    client.create_queue(parent=PARENT, queue={"name": queue_path})
    empty = client.get_iam_policy(resource=queue_path)
    assert list(empty.bindings) == []
    policy = policy_pb2.Policy(
        bindings=[policy_pb2.Binding(role="roles/cloudtasks.enqueuer", members=["user:a@example.com"])],
        etag=empty.etag,
    )
    stored = client.set_iam_policy(request={"resource": queue_path, "policy": policy})
    assert stored.bindings[0].members == ["user:a@example.com"]
    assert stored.etag != empty.etag
    assert client.get_iam_policy(resource=queue_path) == stored
    with pytest.raises(exceptions.Aborted):
        client.set_iam_policy(request={"resource": queue_path, "policy": policy})  # stale etag

    asked = ["cloudtasks.tasks.create", "cloudtasks.queues.get"]
    granted = client.test_iam_permissions(resource=queue_path, permissions=asked)
    assert list(granted.permissions) == asked
    missing = client.test_iam_permissions(resource=f"{PARENT}/queues/none", permissions=asked)
    assert list(missing.permissions) == []


def test_cmek_config(client: tasks_v2.CloudTasksClient) -> None:
    config = client.get_cmek_config(name=f"{PARENT}/cmekConfig")
    assert (config.name, config.kms_key) == (f"{PARENT}/cmekConfig", "")
    with pytest.raises(exceptions.GoogleAPICallError) as caught:
        client.update_cmek_config(cmek_config={"name": f"{PARENT}/cmekConfig", "kms_key": "projects/p/k"})
    assert caught.value.grpc_status_code == grpc.StatusCode.UNIMPLEMENTED


def test_locations(client: tasks_v2.CloudTasksClient) -> None:
    parent = "projects/loc-project/locations/asia-east1"
    client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"})
    listed = client.list_locations(request=locations_pb2.ListLocationsRequest(name="projects/loc-project"))
    assert [loc.location_id for loc in listed.locations] == ["asia-east1"]
    location = client.get_location(request=locations_pb2.GetLocationRequest(name=parent))
    assert (location.name, location.location_id) == (parent, "asia-east1")


def test_only_configured_locations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with ServerProcess("memory://", "--locations", "us-central1,europe-west1") as server:
        client = server.client()
        listed = client.list_locations(request=locations_pb2.ListLocationsRequest(name="projects/p"))
        assert [loc.location_id for loc in listed.locations] == ["europe-west1", "us-central1"]
        with pytest.raises(exceptions.NotFound):
            client.get_location(request=locations_pb2.GetLocationRequest(name="projects/p/locations/mars"))
        with pytest.raises(exceptions.InvalidArgument, match="not served here"):
            client.create_queue(
                parent="projects/p/locations/mars", queue={"name": "projects/p/locations/mars/queues/q"}
            )
