"""The same scenarios through gRPC and REST must give the same results.

The Python client raises different exception classes per transport (gRPC's specific subclasses,
REST's HTTP-family ones), so outcomes are compared by HTTP status code.
"""

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.cloud.location import locations_pb2
from google.protobuf import duration_pb2, field_mask_pb2

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
Scenario = Callable[[tasks_v2.CloudTasksClient, str], list[Any]]


def outcome(call: Callable[[], Any]) -> Any:
    """The call's result, or its HTTP status code if it failed."""
    try:
        return call()
    except exceptions.GoogleAPICallError as error:
        # The REST transport prefixes messages with "METHOD URL: "; the server's text follows.
        return ("error", error.code, re.sub(r"^(GET|POST|PATCH|DELETE) \S+: ", "", error.message))


def same_on_both(server: ServerProcess, scenario: Scenario, label: str) -> list[Any]:
    results = []
    for transport in ("grpc", "rest"):
        parent = f"projects/transports/locations/{label}-{transport}"
        results.append(scenario(server.client(transport), parent))
    grpc_result, rest_result = results
    assert grpc_result == rest_result
    return grpc_result


def names_relative(values: list[str], parent: str) -> list[str]:
    return [v.removeprefix(parent) for v in values]


def queue_life_cycle(client: tasks_v2.CloudTasksClient, parent: str) -> list[Any]:
    name = f"{parent}/queues/q"
    created = client.create_queue(
        parent=parent,
        queue={
            "name": name,
            "rate_limits": {"max_dispatches_per_second": 5, "max_concurrent_dispatches": 3},
            "retry_config": {
                "max_attempts": 4,
                "min_backoff": duration_pb2.Duration(seconds=1, nanos=500_000_000),
            },
        },
    )
    updated = client.update_queue(
        queue={"name": name, "rate_limits": {"max_dispatches_per_second": 7}},
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )
    return [
        tasks_v2.Queue.to_dict(created) | {"name": ""},
        tasks_v2.Queue.to_dict(updated) | {"name": ""},
        client.pause_queue(name=name).state,
        [q.state for q in client.list_queues(request={"parent": parent, "filter": "state: PAUSED"})],
        client.resume_queue(name=name).state,
        client.purge_queue(name=name).purge_time is not None,
        outcome(lambda: client.create_queue(parent=parent, queue={"name": name})),
        outcome(lambda: client.create_queue(parent=parent, queue={"name": "bad"})),
        outcome(lambda: client.get_queue(name=f"{parent}/queues/missing")),
        outcome(
            lambda: client.update_queue(
                queue={"name": name}, update_mask=field_mask_pb2.FieldMask(paths=["x"])
            )
        ),
        outcome(lambda: client.delete_queue(name=name)),
        outcome(lambda: client.create_queue(parent=parent, queue={"name": name})),  # name reserved: 400
    ]


def task_life_cycle(client: tasks_v2.CloudTasksClient, parent: str) -> list[Any]:
    queue = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"}).name
    client.pause_queue(name=queue)  # nothing is dispatched while we look
    task = client.create_task(
        request={
            "parent": queue,
            "response_view": tasks_v2.Task.View.FULL,
            "task": {
                "name": f"{queue}/tasks/t1",
                "http_request": {
                    "url": "https://example.com/x?y=1",
                    "http_method": tasks_v2.HttpMethod.PATCH,
                    "headers": {"Content-Type": "application/json"},
                    "body": b"\x00\xffbinary",
                },
                "dispatch_deadline": duration_pb2.Duration(seconds=30),
            },
        }
    )
    others = [
        client.create_task(parent=queue, task={"app_engine_http_request": {"relative_uri": f"/{i}"}})
        for i in range(3)
    ]
    listed = list(client.list_tasks(request={"parent": queue, "page_size": 2}))
    basic = client.get_task(name=task.name)
    return [
        (
            task.name.removeprefix(parent),
            task.http_request.body,
            task.http_request.http_method,
            dict(task.http_request.headers),
            task.dispatch_deadline,
            task.view,
        ),
        [t.name for t in listed] == [task.name, *(o.name for o in others)],
        (basic.http_request.body, basic.view),
        outcome(
            lambda: client.create_task(
                parent=queue, task={"name": task.name, "http_request": {"url": "https://x"}}
            )
        ),
        outcome(lambda: client.create_task(parent=queue, task={"http_request": {"url": "ftp://x"}})),
        outcome(
            lambda: client.create_task(
                parent=f"{parent}/queues/none", task={"http_request": {"url": "https://x"}}
            )
        ),
        outcome(lambda: client.delete_task(name=task.name)),
        outcome(lambda: client.get_task(name=task.name)),
        outcome(lambda: client.delete_task(name=task.name)),
    ]


def batches_iam_and_locations(client: tasks_v2.CloudTasksClient, parent: str) -> list[Any]:
    queue = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"}).name
    client.pause_queue(name=queue)
    created = client.batch_create_tasks(
        parent=queue,
        requests=[
            {"parent": queue, "task": {"name": f"{queue}/tasks/b{i}", "http_request": {"url": "https://x"}}}
            for i in range(3)
        ],
    )
    created.result()
    deleted = client.batch_delete_tasks(parent=queue, names=[f"{queue}/tasks/b0", f"{queue}/tasks/nope"])
    deleted.result()
    policy = client.get_iam_policy(resource=queue)
    project = parent.rsplit("/locations/", 1)[0]
    return [
        created.metadata.state,
        [t.name.removeprefix(parent) for t in created.result().tasks],
        deleted.metadata.state,
        sorted(deleted.metadata.failed_requests),
        list(policy.bindings),
        list(client.test_iam_permissions(resource=queue, permissions=["a.b"]).permissions),
        parent.rsplit("/", 1)[1]
        in [
            loc.location_id
            for loc in client.list_locations(
                request=locations_pb2.ListLocationsRequest(name=project)
            ).locations
        ],
        client.get_cmek_config(name=f"{parent}/cmekConfig").kms_key,
    ]


@pytest.mark.parametrize(
    "scenario", [queue_life_cycle, task_life_cycle, batches_iam_and_locations], ids=lambda s: s.__name__
)
def test_grpc_and_rest_agree(server: ServerProcess, scenario: Scenario) -> None:
    result = same_on_both(server, scenario, scenario.__name__.replace("_", "-"))
    assert result  # and the scenario itself ran to the end on both transports


def test_rest_errors_use_googles_envelope(server: ServerProcess) -> None:
    def call(method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            server.rest_url + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    code, body = call("POST", "/v2/projects/p/locations/l/queues", b'{"name": "bad"}')
    assert code == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.Help"
    assert call("POST", "/v2/projects/p/locations/l/queues", b"{not json")[0] == 400
    assert call("POST", "/v2/projects/p/locations/l/queues", b'{"rateLimits": "fast"}')[0] == 400
    assert call("GET", "/v2/projects/p/locations/l/queues/q/nonsense")[1]["error"]["status"] == "NOT_FOUND"
    assert call("PUT", "/v2/projects/p/locations/l/queues")[0] == 404
    code, body = call("GET", "/v2/projects/p/locations/l/queues?key=abc&prettyPrint=false&%24alt=json")
    assert code == 200 and body == {}
    assert (
        call("POST", "/v2/projects/p/locations/l/queues", b'{"name": "projects/p/locations/l/queues/r"}')[0]
        == 200
    )
    code, body = call("GET", "/v2/projects/p/locations/l/queues/r")
    assert body["state"] == "RUNNING" and body["rateLimits"]["maxBurstSize"] == 100
    code, body = call("GET", "/v2/projects/p/locations/l/queues/r?%24alt=json%3Benum-encoding%3Dint")
    assert body["state"] == 1
    code, body = call("POST", "/v2/projects/example.com:proj/locations/l/queues/r:pause", b"{}")
    assert code == 404 and "Queue does not exist" in body["error"]["message"]  # colon in the project ID
