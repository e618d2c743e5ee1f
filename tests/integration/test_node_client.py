"""The official Node client (@google-cloud/tasks) over gRPC and over its REST fallback."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration
NODE_PROJECT = Path(__file__).resolve().parents[1] / "node"
PARENT = "projects/node-project/locations/us-central1"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The Node test project, its packages installed from its lock file."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "Node.js and npm are needed for the Node client tests"
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_PROJECT, check=True, timeout=300
    )
    return NODE_PROJECT / "client.mjs"


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_node_client(node_client: Path, server: ServerProcess, transport: str) -> None:
    port = server.port if transport == "grpc" else server.http_port
    run = subprocess.run(
        ["node", str(node_client), transport, str(port), PARENT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=NODE_PROJECT,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    queue = f"{PARENT}/queues/node-{transport}"
    assert seen["queue"] == {"name": queue, "burst": 10, "rate": 5}
    assert seen["task"]["name"].startswith(f"{queue}/tasks/")
    assert seen["task"]["body"] == '{"hello":"node"}'
    assert seen["task"]["method"] == "POST"
    assert seen["listed"] == [seen["task"]["name"]]
    assert seen["afterDelete"] == 0
    assert seen["missing"]["code"] == (5 if transport == "grpc" else 404)
    assert "Queue does not exist." in seen["missing"]["message"]
