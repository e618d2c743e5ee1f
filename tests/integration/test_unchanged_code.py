"""Application code that makes Google's clients with no arguments, run unchanged against
opentasks: under the pytest fixture, and as a process under `opentasks run`. And never routed
unless asked for."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import tasks_v2

from opentasks.testing import OPENTASKS, ServerProcess
from tests.integration.handlers import HandlerProcess
from tests.integration.samples import cloud_tasks_samples as samples

pytestmark = pytest.mark.integration
PROJECT, LOCATION = "samples", "us-central1"


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


def claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def test_googles_samples_run_unchanged_under_the_fixture(
    opentasks_route_clients: ServerProcess, handler: HandlerProcess
) -> None:
    samples.create_queue(PROJECT, LOCATION, "emails")
    assert f"projects/{PROJECT}/locations/{LOCATION}/queues/emails" in samples.list_queues(PROJECT, LOCATION)
    created = samples.create_http_task(
        PROJECT, LOCATION, "emails", handler.url("/ok"), {"to": "ada"}, task_id="t1"
    )
    [delivered] = handler.take(1)
    assert created.name.endswith("/tasks/t1") and json.loads(delivered.body) == {"to": "ada"}
    assert delivered.header("X-CloudTasks-TaskName") == "t1"

    audience = "https://worker.example.com"
    signed = samples.create_http_task_with_token(
        PROJECT,
        LOCATION,
        "emails",
        handler.url("/ok"),
        b"x",
        "tasks@samples.iam.gserviceaccount.com",
        audience,
    )
    [delivered] = handler.take(1)
    assert delivered.header("X-CloudTasks-TaskName") == signed.name.rsplit("/", 1)[1]
    token = (delivered.header("Authorization") or "").removeprefix("Bearer ")
    assert (
        claims(token)["aud"] == audience and claims(token)["email"] == "tasks@samples.iam.gserviceaccount.com"
    )

    assert samples.pause_queue(PROJECT, LOCATION, "emails").state == tasks_v2.Queue.State.PAUSED
    samples.create_http_task(
        PROJECT, LOCATION, "emails", handler.url("/ok"), {"n": 2}, deadline_in_seconds=30
    )
    assert samples.purge_queue(PROJECT, LOCATION, "emails").purge_time
    assert samples.resume_queue(PROJECT, LOCATION, "emails").state == tasks_v2.Queue.State.RUNNING
    samples.create_http_task(
        PROJECT, LOCATION, "emails", handler.url("/ok"), {"n": 3}, scheduled_seconds_from_now=1
    )
    [delivered] = handler.take(1)
    assert json.loads(delivered.body) == {"n": 3}  # the purged one never went
    samples.delete_queue(PROJECT, LOCATION, "emails")


async def test_the_async_client_is_routed_too(opentasks_route_clients: ServerProcess) -> None:
    samples.create_queue(PROJECT, LOCATION, "async")
    samples.pause_queue(PROJECT, LOCATION, "async")
    task = await samples.create_http_task_async(PROJECT, LOCATION, "async", "http://127.0.0.1:9/x")
    assert task.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/queues/async/tasks/")


APP = """
from google.cloud import tasks_v2

client = tasks_v2.CloudTasksClient()
parent = client.common_location_path("run-project", "us-central1")
queue = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/from-run"})
print(queue.name)
"""


def run_app(
    tmp_path: Path, *prefix: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("CLOUD_TASKS", "OPENTASKS_", "GOOGLE_"))
    }
    clean["HOME"] = str(tmp_path)  # no application default credentials of the machine's user
    return subprocess.run(
        [*prefix, sys.executable, str(app)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


def test_a_program_runs_unchanged_under_opentasks_run(tmp_path: Path) -> None:
    with ServerProcess("memory://") as server:
        endpoint = f"127.0.0.1:{server.http_port}"
        run = run_app(tmp_path, OPENTASKS, "run", "--endpoint", endpoint, "--")
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "projects/run-project/locations/us-central1/queues/from-run"
        assert server.client().get_queue(name=run.stdout.strip()).name == run.stdout.strip()
        alone = run_app(tmp_path, env={"CLOUD_TASKS_EMULATOR_HOST": endpoint})  # not asked for: Google's
        assert alone.returncode != 0 and "DefaultCredentialsError" in alone.stderr
