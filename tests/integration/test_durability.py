"""An accepted task survives kill -9 of the server."""

import threading
from pathlib import Path

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
QUEUE = "projects/p/locations/us-central1/queues/durable"


def test_every_acknowledged_create_survives_kill_9(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/opentasks.db"
    server = ServerProcess(storage, log_path=tmp_path / "server.log").start()
    client = server.client()
    client.create_queue(parent=QUEUE.rsplit("/queues/", 1)[0], queue={"name": QUEUE})

    acknowledged: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def producer(worker: int) -> None:
        own = server.client()
        for i in range(10_000):
            try:
                task = own.create_task(
                    parent=QUEUE,
                    task={
                        "name": f"{QUEUE}/tasks/w{worker}-{i}",
                        # A closed local port: attempts fail at once, none is left in flight to
                        # hold up the restarted server's stop (and none leaves the machine).
                        "http_request": {"url": "http://127.0.0.1:9/x", "body": b"payload"},
                    },
                )
            except exceptions.GoogleAPICallError:
                return  # the server died under us: this create was never acknowledged
            with lock:
                acknowledged.append(task.name)
                if len(acknowledged) >= 400:
                    enough.set()

    threads = [threading.Thread(target=producer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    assert enough.wait(60), "the server never acknowledged 400 creates"
    server.kill()  # while creates are still in flight
    for thread in threads:
        thread.join(30)

    restarted = ServerProcess(storage, log_path=tmp_path / "server.log")
    restarted.port = server.port
    with restarted:
        after = restarted.client()
        assert after.get_queue(name=QUEUE).name == QUEUE
        listed = {t.name for t in after.list_tasks(parent=QUEUE)}
        missing = [name for name in acknowledged if name not in listed]
        assert not missing, f"{len(missing)} acknowledged tasks were lost, e.g. {missing[:3]}"
        body = after.get_task(request={"name": acknowledged[0], "response_view": tasks_v2.Task.View.FULL})
        assert body.http_request.body == b"payload"
