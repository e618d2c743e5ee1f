"""The official Node client (@google-cloud/tasks) over gRPC (on either port) and over its REST fallback."""

import json
import subprocess
from pathlib import Path

import pytest

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/node-project/locations/us-central1"


@pytest.mark.parametrize(("transport", "on"), [("grpc", "grpc"), ("grpc", "http"), ("rest", "http")])
def test_node_client(node_project: Path, server: ServerProcess, transport: str, on: str) -> None:
    """Over gRPC on the gRPC port and on the HTTP port (which relays it), and over REST."""
    port = server.port if on == "grpc" else server.http_port
    run = subprocess.run(
        ["node", "client.mjs", transport, str(port), PARENT, f"{transport}-{on}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=node_project,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    queue = f"{PARENT}/queues/node-{transport}-{on}"
    assert seen["queue"] == {"name": queue, "burst": 10, "rate": 5}
    assert seen["task"]["name"].startswith(f"{queue}/tasks/")
    assert seen["task"]["body"] == '{"hello":"node"}'
    assert seen["task"]["method"] == "POST"
    assert seen["listed"] == [seen["task"]["name"]]
    assert seen["afterDelete"] == 0
    assert seen["missing"]["code"] == (5 if transport == "grpc" else 404)
    assert "Queue does not exist." in seen["missing"]["message"]
