"""opentasks.client(), the pytest plugin's fixtures and wait_until_drained, as users meet them."""

import pytest
from google.cloud import tasks_v2

import opentasks
from opentasks.clients import rest_url
from opentasks.testing import ServerProcess, wait_until_drained
from tests.integration.handlers import HandlerProcess

pytestmark = pytest.mark.integration


def test_plugin_server_and_emulator_variable(
    opentasks_server: ServerProcess, opentasks_client: tasks_v2.CloudTasksClient
) -> None:
    parent = "projects/plugin/locations/l"
    opentasks_client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"})
    for transport in ("grpc", "rest"):
        found = opentasks.client(transport=transport).get_queue(name=f"{parent}/queues/q")  # via the env var
        assert found.name == f"{parent}/queues/q"


async def test_async_client(opentasks_server: ServerProcess) -> None:
    client = opentasks.async_client()
    parent = "projects/plugin-async/locations/l"
    created = await client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"})
    assert created.state == tasks_v2.Queue.State.RUNNING


def test_wait_until_drained(
    opentasks_server: ServerProcess, opentasks_client: tasks_v2.CloudTasksClient
) -> None:
    parent = "projects/drain/locations/l"
    queue = opentasks_client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q"}).name
    with HandlerProcess() as handler:
        for _ in range(5):
            opentasks_client.create_task(parent=queue, task={"http_request": {"url": handler.url("/ok")}})
        wait_until_drained(opentasks_client, queue, timeout_s=20)
        assert len(handler.take(5)) == 5
    opentasks_client.pause_queue(name=queue)
    opentasks_client.create_task(parent=queue, task={"http_request": {"url": "http://127.0.0.1:9/x"}})
    with pytest.raises(AssertionError, match="still has tasks"):
        wait_until_drained(opentasks_client, queue, timeout_s=0.2)


def test_rest_url_pairs_with_the_grpc_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENTASKS_REST_URL", raising=False)
    assert rest_url("localhost:8123") == "http://localhost:8124"
    monkeypatch.setenv("OPENTASKS_REST_URL", "http://elsewhere:9000")
    assert rest_url("localhost:8123") == "http://elsewhere:9000"
