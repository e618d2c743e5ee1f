"""Cloud Tasks v2beta3 against a real server: the official ``tasks_v2beta3`` client over gRPC and
REST gives the same results as ``tasks_v2`` where the versions overlap, queue stats answer
``read_mask``, and ``gcloud beta tasks`` works.

The parity scenarios are written once for both versions and both transports (``types`` is
``tasks_v2`` or ``tasks_v2beta3``); every run must equal v2 over gRPC. Queues are compared in
v2's shape.
"""

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import yaml
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2, tasks_v2beta3
from google.cloud.location import locations_pb2
from google.protobuf import duration_pb2, field_mask_pb2

from opentasks.testing import ServerProcess
from tests.integration.handlers import HandlerProcess

pytestmark = pytest.mark.integration
Scenario = Callable[[ModuleType, Any, str], list[Any]]
VERSIONS = {"v2": tasks_v2, "v2beta3": tasks_v2beta3}


def client_for(server: ServerProcess, types: ModuleType, transport: str) -> Any:
    if transport == "rest":
        return types.CloudTasksClient(
            transport="rest",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=server.rest_url),
        )
    grpc_transport = types.services.cloud_tasks.transports.CloudTasksGrpcTransport
    return types.CloudTasksClient(transport=grpc_transport(channel=grpc.insecure_channel(server.address)))


def outcome(call: Callable[[], Any]) -> Any:
    """The call's result, or its HTTP status code and message if it failed."""
    try:
        return call()
    except exceptions.GoogleAPICallError as error:
        # The REST transport prefixes messages with "METHOD URL: "; the server's text follows.
        return ("error", error.code, re.sub(r"^(GET|POST|PATCH|DELETE) \S+: ", "", error.message))


def v2_shaped(types: ModuleType, queue: Any) -> dict[str, Any]:
    """A queue as a v2 dict: v2beta3's App Engine wrapper unwrapped, its type dropped."""
    data: dict[str, Any] = types.Queue.to_dict(queue) | {"name": ""}
    if types is tasks_v2beta3:
        assert data.pop("type_") == tasks_v2beta3.Queue.Type.PUSH
        assert not any(data.pop(field, None) for field in ("task_ttl", "tombstone_ttl", "stats"))
        wrapper = data.pop("app_engine_http_queue", None)
        if wrapper is not None:
            data["app_engine_routing_override"] = wrapper["app_engine_routing_override"]
    return data


def queue_life_cycle(types: ModuleType, client: Any, parent: str) -> list[Any]:
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
        v2_shaped(types, created),
        v2_shaped(types, updated),
        int(client.pause_queue(name=name).state),
        [int(q.state) for q in client.list_queues(request={"parent": parent, "filter": "state: PAUSED"})],
        int(client.resume_queue(name=name).state),
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


def task_life_cycle(types: ModuleType, client: Any, parent: str) -> list[Any]:
    queue = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"}).name
    client.pause_queue(name=queue)  # nothing is dispatched while we look
    task = client.create_task(
        request={
            "parent": queue,
            "response_view": types.Task.View.FULL,
            "task": {
                "name": f"{queue}/tasks/t1",
                "http_request": {
                    "url": "https://example.com/x?y=1",
                    "http_method": types.HttpMethod.PATCH,
                    "headers": {"Content-Type": "application/json"},
                    "body": b"\x00\xffbinary",
                },
                "dispatch_deadline": duration_pb2.Duration(seconds=30),
                "retry_config": {"max_attempts": 2},
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
            int(task.http_request.http_method),
            dict(task.http_request.headers),
            task.dispatch_deadline,
            int(task.view),
            task.retry_config.max_attempts,
        ),
        [t.name for t in listed] == [task.name, *(o.name for o in others)],
        [o.app_engine_http_request.relative_uri for o in others],
        (basic.http_request.body, int(basic.view)),
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


def batches_iam_and_locations(types: ModuleType, client: Any, parent: str) -> list[Any]:
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
        int(created.metadata.state),
        [t.name.removeprefix(parent) for t in created.result().tasks],
        int(deleted.metadata.state),
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


def queue_targets(types: ModuleType, client: Any, parent: str) -> list[Any]:
    """The queue-level targets: v2beta3 wraps the App Engine override, both have http_target."""
    routed = {"app_engine_routing_override": {"service": "worker"}}
    app_engine = routed if types is tasks_v2 else {"app_engine_http_queue": routed}
    first = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/a", **app_engine})
    target = {"uri_override": {"host": "example.com", "path_override": {"path": "/p"}}, "http_method": 4}
    second = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/h", "http_target": target})
    mask = "app_engine_routing_override" if types is tasks_v2 else "app_engine_http_queue"
    cleared = client.update_queue(
        queue={"name": first.name}, update_mask=field_mask_pb2.FieldMask(paths=[mask])
    )
    return [v2_shaped(types, first), v2_shaped(types, second), v2_shaped(types, cleared)]


SCENARIOS = [queue_life_cycle, task_life_cycle, batches_iam_and_locations, queue_targets]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_v2beta3_agrees_with_v2_on_both_transports(server: ServerProcess, scenario: Scenario) -> None:
    results = {}
    for version, types in VERSIONS.items():
        for transport in ("grpc", "rest"):
            label = f"{scenario.__name__.replace('_', '-')}-{version}-{transport}"
            parent = f"projects/v2beta3/locations/{label}"
            results[version, transport] = scenario(types, client_for(server, types, transport), parent)
    reference = results["v2", "grpc"]
    assert reference
    for key, result in results.items():
        assert result == reference, key


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_v2beta3_only_fields_are_refused_clearly(server: ServerProcess, transport: str) -> None:
    client = client_for(server, tasks_v2beta3, transport)
    parent = f"projects/v2beta3/locations/refusals-{transport}"
    queue = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"}).name
    pull = outcome(
        lambda: client.create_queue(parent=parent, queue={"name": f"{parent}/queues/p", "type_": 1})
    )
    ttl = outcome(
        lambda: client.create_queue(
            parent=parent,
            queue={"name": f"{parent}/queues/t", "task_ttl": duration_pb2.Duration(seconds=10**6)},
        )
    )
    pull_task = outcome(lambda: client.create_task(parent=queue, task={"pull_message": {"payload": b"x"}}))
    mask = outcome(lambda: client.get_queue(request={"name": queue, "read_mask": {"paths": ["nope"]}}))
    assert pull[:2] == ("error", 400) and "Queue.type PULL is not supported" in pull[2]
    assert ttl[:2] == ("error", 400) and "Queue.taskTtl is not supported" in ttl[2]
    assert pull_task[:2] == ("error", 400) and "Task.pullMessage is not supported" in pull_task[2]
    assert mask[:2] == ("error", 400) and 'read_mask path "nope"' in mask[2]


def stats_of(client: Any, queue: str, paths: tuple[str, ...] = ("stats",)) -> Any:
    return client.get_queue(request={"name": queue, "read_mask": {"paths": list(paths)}}).stats


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_stats_count_tasks(server: ServerProcess, handler: HandlerProcess, transport: str) -> None:
    client = client_for(server, tasks_v2beta3, transport)
    parent = f"projects/v2beta3/locations/stats-{transport}"
    queue = client.create_queue(
        parent=parent, queue={"name": f"{parent}/queues/q", "rate_limits": {"max_dispatches_per_second": 20}}
    ).name
    client.pause_queue(name=queue)
    assert not client.get_queue(name=queue).stats.tasks_count  # no read_mask: no stats
    for i in range(5):
        client.create_task(
            parent=queue, task={"name": f"{queue}/tasks/t{i}", "http_request": {"url": handler.url(f"/{i}")}}
        )
    stats = stats_of(client, queue)
    assert stats.tasks_count == 5 and stats.concurrent_dispatches_count == 0
    assert stats.oldest_estimated_arrival_time is not None and stats.effective_execution_rate == 0
    listed = client.list_queues(request={"parent": parent, "read_mask": {"paths": ["*"]}})
    assert [q.stats.tasks_count for q in listed] == [5]
    for i in range(2):
        client.run_task(name=f"{queue}/tasks/t{i}")
    handler.take(2)
    client.delete_task(name=f"{queue}/tasks/t2")
    for _ in range(100):
        stats = stats_of(client, queue, ("*",))
        if stats.tasks_count == 2 and stats.executed_last_minute_count == 2:
            break
    assert (stats.tasks_count, stats.executed_last_minute_count) == (2, 2)
    client.resume_queue(name=queue)
    assert stats_of(client, queue).effective_execution_rate == 20


GCLOUD = shutil.which("gcloud")


@pytest.mark.skipif(GCLOUD is None, reason="the gcloud CLI is not installed")
def test_gcloud_beta_tasks(server: ServerProcess, tmp_path: Path) -> None:
    assert GCLOUD is not None
    env = {
        **os.environ,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS": server.rest_url + "/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_PROJECT": "gcloud-project",
        "CLOUDSDK_CONFIG": str(tmp_path),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }

    def gcloud(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            [GCLOUD, "beta", "tasks", *args, "--location", "us-east1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (run.returncode == 0) == ok, run.stderr
        return run

    gcloud("queues", "create", "beta-q", "--max-attempts", "3", "--routing-override", "service:worker")
    described = yaml.safe_load(gcloud("queues", "describe", "beta-q").stdout)
    assert described["type"] == "PUSH" and described["retryConfig"]["maxAttempts"] == 3
    assert described["appEngineHttpQueue"]["appEngineRoutingOverride"]["service"] == "worker"
    listed = gcloud("queues", "list").stdout.splitlines()
    assert listed[0].split()[:3] == ["QUEUE_NAME", "TYPE", "STATE"]
    assert listed[1].split()[:3] == ["beta-q", "push", "RUNNING"]
    gcloud("queues", "update", "beta-q", "--max-dispatches-per-second", "7")
    assert (
        yaml.safe_load(gcloud("queues", "describe", "beta-q").stdout)["rateLimits"]["maxDispatchesPerSecond"]
        == 7
    )
    refused = gcloud("queues", "create-pull-queue", "pull-q", ok=False)
    assert "Queue.type PULL is not supported" in refused.stderr
