"""Firebase's task queues (the Admin SDKs for Python and Node, as applications call them) against
opentasks: CLOUD_TASKS_EMULATOR_HOST names the HTTP port, and the function's queue carries the
function's URL."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import firebase_admin
import pytest
from firebase_admin import exceptions, functions

from opentasks.testing import OPENTASKS, ServerProcess
from tests.integration.handlers import HandlerProcess

pytestmark = pytest.mark.integration
PROJECT = "fbproj"
PARENT = f"projects/{PROJECT}/locations/us-central1"


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("memory://") as running:
        yield running


@pytest.fixture
def emulated(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[firebase_admin.App]:
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", f"127.0.0.1:{server.http_port}")
    app = firebase_admin.initialize_app(options={"projectId": PROJECT}, name=f"test-{os.getpid()}")
    yield app
    firebase_admin.delete_app(app)


def function_queue(server: ServerProcess, handler: HandlerProcess, function: str) -> None:
    """The queue of a task queue function, sending to the function's URL (its URI override)."""
    port = int(handler.url("").rsplit(":", 1)[1])
    override = {
        "scheme": "HTTP",
        "host": "127.0.0.1",
        "port": port,
        "path_override": {"path": f"/{function}"},
    }
    server.client().create_queue(
        parent=PARENT,
        queue={"name": f"{PARENT}/queues/{function}", "http_target": {"uri_override": override}},
    )


def declared_function_queue(
    server: ServerProcess, handler: HandlerProcess, function: str, folder: Path
) -> None:
    """The function's queue declared in the queues YAML and applied with the CLI, through the one
    port CLOUD_TASKS_EMULATOR_HOST names, as docs/firebase.md shows."""
    port = int(handler.url("").rsplit(":", 1)[1])
    declared = folder / "queues.yaml"
    declared.write_text(
        f"project: {PROJECT}\nqueues:\n  - name: {function}\n    http_target:\n"
        f"      uri_override: {{scheme: http, host: 127.0.0.1, port: {port}, path: /{function}}}\n"
    )
    env = {**os.environ, "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{server.http_port}"}
    env.pop("OPENTASKS_REST_URL", None)
    for expected in ("Applied 1 change(s).", "Nothing to change"):
        run = subprocess.run(
            [OPENTASKS, "apply", "-f", str(declared)], capture_output=True, text=True, env=env, check=False
        )
        assert run.returncode == 0 and expected in run.stdout, run.stderr


def test_python_sdk_enqueues_deduplicates_and_deletes(
    server: ServerProcess, handler: HandlerProcess, emulated: firebase_admin.App, tmp_path: Path
) -> None:
    declared_function_queue(server, handler, "sendmail", tmp_path)
    queue = functions.task_queue("sendmail", app=emulated)
    task_id = queue.enqueue({"to": "ada@example.com"}, functions.TaskOptions(headers={"X-Trace": "t1"}))
    [delivered] = handler.take(1)
    assert delivered.path == "/sendmail" and json.loads(delivered.body) == {"to": "ada@example.com"}
    assert delivered.header("X-CloudTasks-TaskName") == task_id
    assert delivered.header("X-CloudTasks-QueueName") == "sendmail"
    assert (delivered.header("Content-Type"), delivered.header("X-Trace")) == ("application/json", "t1")
    assert delivered.header("Authorization").startswith("Bearer ey")  # the OIDC token the SDK asked for

    later = functions.TaskOptions(task_id="once", schedule_delay_seconds=600, dispatch_deadline_seconds=60)
    assert queue.enqueue({"n": 1}, later) == "once"
    task = server.client().get_task(name=f"{PARENT}/queues/sendmail/tasks/once")
    assert task.dispatch_deadline.seconds == 60 and task.http_request.url.endswith("/sendmail")
    with pytest.raises(exceptions.AlreadyExistsError):
        queue.enqueue({"n": 2}, functions.TaskOptions(task_id="once"))
    queue.delete("once")
    with pytest.raises(exceptions.NotFoundError):
        queue.delete("once")


def test_a_function_without_a_queue_or_a_url_is_refused_clearly(
    server: ServerProcess, emulated: firebase_admin.App
) -> None:
    with pytest.raises(exceptions.NotFoundError, match="declare it, with the function's URL"):
        functions.task_queue("undeclared", app=emulated).enqueue({})
    server.client().create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/nourl"})
    with pytest.raises(exceptions.FailedPreconditionError, match="has no URI override to send it to"):
        functions.task_queue("nourl", app=emulated).enqueue({})
    given = functions.TaskOptions(uri="http://127.0.0.1:9/fn")  # a URL in the options needs no override
    assert functions.task_queue("nourl", app=emulated).enqueue({}, given)


def test_node_sdk_enqueues_deduplicates_and_deletes(
    node_project: Path, server: ServerProcess, handler: HandlerProcess
) -> None:
    function_queue(server, handler, "nodefn")
    env = {**os.environ, "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{server.http_port}"}
    run = subprocess.run(
        ["node", "firebase.mjs", PROJECT, "nodefn"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=node_project,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"duplicate": "functions/task-already-exists", "done": True}
    [delivered] = handler.take(1)
    assert (delivered.path, json.loads(delivered.body)) == (
        "/nodefn",
        {"data": {"hello": "node"}},
    )  # as Node wraps it
    assert delivered.header("X-From") == "node"


@pytest.mark.parametrize(
    "body",
    [
        b'{"task": ' + b'{"a": ' * 800 + b"1" + b"}" * 800 + b"}",  # deeper than any parser goes
        b'{"task": null}',
        b'{"task": {"httpRequest": {"url": "http://127.0.0.1:9/x", "headers": null, "body": 5}}}',
        b"[]",
    ],
)
def test_hostile_enqueue_bodies_are_400(server: ServerProcess, body: bytes) -> None:
    request = urllib.request.Request(
        f"{server.rest_url}/{PARENT}/queues/anything/tasks",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"]["status"] == "INVALID_ARGUMENT"
