import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from google.cloud import tasks_v2

from opentasks.testing import ServerProcess


@contextmanager
def sqlite_server(folder: Path, *extra: str) -> Iterator[ServerProcess]:
    """A server on an SQLite file in ``folder`` (its log beside it), started with ``extra`` options."""
    with ServerProcess(f"sqlite:///{folder}/opentasks.db", *extra, log_path=folder / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on an SQLite file, shared by the tests of one module (each uses its own queues)."""
    with sqlite_server(tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> tasks_v2.CloudTasksClient:
    return server.client()


@pytest.fixture
def queue_path(request: pytest.FixtureRequest) -> str:
    """A queue name of its own for each test."""
    queue_id = request.node.name.replace("_", "-").replace("[", "-").replace("]", "")[:90]
    return f"projects/it-project/locations/us-central1/queues/{queue_id}"


NODE_PROJECT = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="session")
def node_project() -> Path:
    """The Node test project (tests/node), its packages installed from its lock file."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "Node.js and npm are needed for the Node client tests"
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_PROJECT, check=True, timeout=300
    )
    return NODE_PROJECT
