"""The real server on PostgreSQL: a task goes from the official client to its handler and is gone;
accepted tasks survive kill -9 of the server and are delivered after the restart."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import tasks_v2

from opentasks.testing import ServerProcess, wait_until_drained
from tests.contract.conftest import fresh_storage
from tests.integration.handlers import HandlerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/pg/locations/us-central1"
DATABASE = "opentasks_it"


@pytest.fixture
def storage() -> str:
    """A storage URL of an empty database of its own (dropped and created again per test)."""
    return fresh_storage(DATABASE)


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


def make_queue(client: tasks_v2.CloudTasksClient, queue_id: str) -> str:
    name = f"{PARENT}/queues/{queue_id}"
    client.create_queue(parent=PARENT, queue={"name": name})
    return name


def test_a_task_reaches_its_handler_and_is_gone(
    storage: str, handler: HandlerProcess, tmp_path: Path
) -> None:
    with ServerProcess(storage, log_path=tmp_path / "server.log") as server:
        client = server.client()
        queue = make_queue(client, "deliver")
        task = client.create_task(
            parent=queue,
            task={"http_request": {"url": handler.url("/pg/deliver"), "body": b"hello postgres"}},
        )
        [received] = handler.take(1)
        assert (received.method, received.path, received.body) == ("POST", "/pg/deliver", b"hello postgres")
        assert received.header("X-CloudTasks-TaskName") == task.name.rsplit("/", 1)[1]
        wait_until_drained(client, queue)


def test_accepted_tasks_survive_kill_9_and_are_delivered_after_restart(
    storage: str, handler: HandlerProcess, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    # The restarted server takes the queues once the killed one's node lease lapses: 2 s, not 6 s.
    lease = ("--node-lease", "2s")
    server = ServerProcess(storage, *lease, log_path=log).start()
    try:
        client = server.client()
        queue = make_queue(client, "durable")
        client.pause_queue(name=queue)  # nothing is sent before the crash
        names = [
            client.create_task(
                parent=queue,
                task={
                    "name": f"{queue}/tasks/kept-{index}",
                    "http_request": {"url": handler.url("/pg/durable"), "body": f"{index}".encode()},
                },
            ).name
            for index in range(20)
        ]
    finally:
        server.kill()  # SIGKILL: no shutdown, no flush

    restarted = ServerProcess(storage, *lease, log_path=log)
    with restarted:
        client = restarted.client()
        assert client.get_queue(name=queue).state == tasks_v2.Queue.State.PAUSED
        assert sorted(t.name for t in client.list_tasks(parent=queue)) == sorted(names)
        client.resume_queue(name=queue)
        received = handler.take(20)
        assert sorted(r.body for r in received) == sorted(f"{index}".encode() for index in range(20))
        wait_until_drained(client, queue)
