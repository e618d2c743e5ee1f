"""Kept history from outside: a real server, a real handler, and the CLI as a user runs it to
find dead letters, read a task's attempts and send dead letters again."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from google.api_core import exceptions

from opentasks.testing import OPENTASKS, ServerProcess
from tests.integration.handlers import HandlerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/hist/locations/us-central1"
QUEUE = f"{PARENT}/queues/q"


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(f"sqlite:///{tmp_path_factory.mktemp('history')}/h.db") as running:
        yield running


def cli(server: ServerProcess, *args: str, status: int = 0) -> Any:
    """The CLI run as a user runs it; it must exit with ``status``, and never with a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENTASKS_", "CLOUDSDK_"))}
    env.update({"CLOUD_TASKS_EMULATOR_HOST": server.address, "OPENTASKS_REST_URL": server.rest_url})
    run = subprocess.run(
        [OPENTASKS, *args, "--project", "hist", "--location", "us-central1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert run.returncode == status, run.stderr
    assert "Traceback" not in run.stderr
    return run


def failed(server: ServerProcess, *extra: str, queue: str = "q") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        cli(server, "tasks", "failed", "--queue", queue, "--format", "json", *extra).stdout
    )
    return found


def wait_for(condition: Any, timeout_s: float = 20) -> Any:
    """The condition's first true answer (results are stored just after the handler answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = condition()
        if answer:
            return answer
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_dead_letters_are_listed_explained_and_sent_again(
    server: ServerProcess, handler: HandlerProcess
) -> None:
    client = server.client()
    retry = {
        "max_attempts": 2,
        "min_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(milliseconds=100),
    }
    client.create_queue(parent=PARENT, queue={"name": QUEUE, "retry_config": retry})
    request = {"url": handler.url("/plan/500"), "body": b'{"x": 1}', "headers": {"X-Custom": "kept"}}
    client.create_task(parent=QUEUE, task={"name": f"{QUEUE}/tasks/doomed", "http_request": request})
    client.create_task(
        parent=QUEUE, task={"name": f"{QUEUE}/tasks/fine", "http_request": {"url": handler.url("/ok")}}
    )
    handler.take(3)

    [letter] = wait_for(lambda: failed(server))
    with pytest.raises(exceptions.NotFound):  # the Cloud Tasks API forgets it, as Cloud Tasks does
        client.get_task(name=f"{QUEUE}/tasks/doomed")
    assert f"{QUEUE}/tasks/doomed" not in [task.name for task in client.list_tasks(parent=QUEUE)]
    assert (letter["task"]["name"], letter["reason"]) == (f"{QUEUE}/tasks/doomed", "max_attempts")
    assert letter["task"]["httpRequest"]["headers"]["X-Custom"] == "kept"
    everything = wait_for(lambda: (found := failed(server, "--all")) and len(found) == 2 and found)
    assert {(f["task"]["name"].rsplit("/", 1)[1], f["reason"]) for f in everything} == {
        ("doomed", "max_attempts"),
        ("fine", "succeeded"),
    }
    table = cli(server, "tasks", "failed", "--queue", "q").stdout
    assert "doomed" in table and "max_attempts" in table and "fine" not in table
    assert "Unknown" not in table  # the last attempt is kept as it ended

    kept = json.loads(cli(server, "tasks", "history", "doomed", "--queue", "q", "--format", "json").stdout)
    assert [(a["attempt"], a["responseStatus"], a["failure"]) for a in kept["attempts"]] == [
        (1, 500, "none"),
        (2, 500, "none"),
    ]
    assert ["Content-Length", "0"] in kept["attempts"][0]["responseHeaders"]  # the answer's own headers
    assert [end["reason"] for end in kept["ends"]] == ["max_attempts"]

    run = cli(server, "tasks", "redrive", "--queue", "q", "doomed")
    [created] = run.stdout.split()
    assert created.startswith(f"{QUEUE}/tasks/") and created != f"{QUEUE}/tasks/doomed"
    [again] = handler.take(1)
    assert again.header("X-CloudTasks-TaskName") == created.rsplit("/", 1)[1]
    assert (again.body, again.header("X-Custom")) == (b'{"x": 1}', "kept")

    kept = json.loads(cli(server, "tasks", "history", "doomed", "--queue", "q", "--format", "json").stdout)
    assert kept["ends"][0]["redrivenAs"] == created and kept["ends"][0]["redriveTime"].endswith("Z")
    assert "doomed" not in [f["task"]["name"].rsplit("/", 1)[1] for f in failed(server)]
    refused = cli_refused(server, "tasks", "redrive", "--queue", "q", "doomed")
    assert f"was already redriven as task {created.rsplit('/', 1)[1]}" in refused
    table = cli(server, "tasks", "failed", "--queue", "q", "--all").stdout
    assert "REDRIVEN_AS" in table and created.rsplit("/", 1)[1] in table


def cli_refused(server: ServerProcess, *args: str) -> str:
    """What the CLI printed on stderr when it refused ``args`` (exit status 1)."""
    return str(cli(server, *args, status=1).stderr)


def test_dead_letters_matching_a_filter_are_sent_again_once(server: ServerProcess) -> None:
    with HandlerProcess() as handler:  # its own: the other tests' redriven tasks still retry
        redrive_by_filter(server, handler)


def redrive_by_filter(server: ServerProcess, handler: HandlerProcess) -> None:
    client = server.client()
    queue = f"{PARENT}/queues/filtered"
    client.create_queue(parent=PARENT, queue={"name": queue, "retry_config": {"max_attempts": 1}})
    for task_id, path in (
        ("charge-1", "/plan/500/charge"),
        ("charge-2", "/plan/500/charge"),
        ("mail", "/plan/500/mail"),
    ):
        request = {"url": handler.url(path)}
        client.create_task(parent=queue, task={"name": f"{queue}/tasks/{task_id}", "http_request": request})
    handler.take(3)
    wait_for(lambda: len(failed(server, queue="filtered")) == 3)
    expression = "task.httpRequest.url~/charge"
    run = cli(server, "tasks", "redrive", "--queue", "filtered", "--filter", expression)
    assert len(run.stdout.split()) == 2 and "Sent 2 task(s) again" in run.stderr
    assert {r.path for r in handler.take(2)} == {"/plan/500/charge"}
    left = wait_for(lambda: (found := failed(server, queue="filtered")) and found)
    assert "mail" in [f["task"]["name"].rsplit("/", 1)[1] for f in left]
    run = cli(server, "tasks", "redrive", "--queue", "filtered", "--filter", "task.name~charge-")
    assert run.stdout == "" and "No dead letter of queue [us-central1/filtered] matches." in run.stderr

    refused = cli_refused(server, "tasks", "redrive", "--queue", "filtered", "charge-1", "mail")
    assert "ERROR: task charge-1: Dead letter charge-1" in refused and "already redriven" in refused
    assert "Sent 1 task(s) again" in refused  # mail went, charge-1 did not
    assert {r.path for r in handler.take(1)} == {"/plan/500/mail"}


def test_a_task_without_history_is_refused_clearly(server: ServerProcess) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENTASKS_", "CLOUDSDK_"))}
    env.update({"CLOUD_TASKS_EMULATOR_HOST": server.address, "OPENTASKS_REST_URL": server.rest_url})
    run = subprocess.run(
        [
            OPENTASKS,
            "tasks",
            "history",
            "nothing",
            "--queue",
            "q",
            "--project",
            "hist",
            "--location",
            "us-central1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert run.returncode == 1
    assert "No history is kept of task" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/finishedTasks?pageSize=%C2%B2", None),
        ("GET", "/finishedTasks?pageToken=" + "9" * 5000, None),
        ("GET", "/finishedTasks?pageToken=99999999999999999999999", None),
        ("GET", "/finishedTasks?failed=maybe", None),
        ("GET", "/finishedTasks?pageSize=100000", None),
        ("POST", "/finishedTasks:redrive", b"[" * 5000 + b"]" * 5000),
        ("POST", "/finishedTasks:redrive", b'{"taskIds": NaN}'),
        ("POST", "/finishedTasks:redrive", b'{"taskIds": "a"}'),
        ("POST", "/finishedTasks:redrive", b"not json"),
    ],
)
def test_bad_history_calls_are_refused_with_400(
    server: ServerProcess, method: str, path: str, body: bytes | None
) -> None:
    request = urllib.request.Request(
        f"{server.rest_url}/opentasks/v1/{QUEUE}{path}", data=body, method=method
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400
    assert json.load(refused.value)["error"]["status"] == "INVALID_ARGUMENT"
