"""Every README example tagged ``<!-- example: KIND -->`` runs, as printed, against a real server."""

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from opentasks.testing import OPENTASKS, ServerProcess, free_port

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"
_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```\w*\n(.*?)```", re.DOTALL)
EXAMPLES = [(kind, code) for kind, code in _EXAMPLE.findall(README.read_text())]


def test_the_readme_has_examples_of_every_kind() -> None:
    assert {kind for kind, _ in EXAMPLES} == {"python", "node", "sh", "cli"}


@pytest.fixture(scope="module")
def fresh_server() -> Iterator[Callable[[], AbstractContextManager[ServerProcess]]]:
    """A new server for each example (they may create the same queues), each one started while
    the example before it runs."""
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        server = ServerProcess("memory://")
        started.append(server)
        return server.start()

    with ThreadPoolExecutor(max_workers=1) as starter:
        upcoming: Future[ServerProcess] = starter.submit(start)

        @contextmanager
        def take() -> Iterator[ServerProcess]:
            nonlocal upcoming
            server = upcoming.result()
            upcoming = starter.submit(start)
            try:
                yield server
            finally:
                _stop(server)

        try:
            yield take
        finally:
            upcoming.exception()  # started (or failed) before it is stopped
            for server in started:
                _stop(server)


def _stop(server: ServerProcess) -> None:
    if server.process is not None and server.process.poll() is None:
        server.stop()


def _for(server: ServerProcess, code: str) -> str:
    """The example aimed at this server's ports instead of the defaults 8123 and 8124 (and at a
    free port instead of 8080 for the stand-in handler)."""
    return (
        code.replace("127.0.0.1:8123", server.address)
        .replace("127.0.0.1:8124", f"127.0.0.1:{server.http_port}")
        .replace("port: 8123", f"port: {server.port}")
        .replace("port: 8124", f"port: {server.http_port}")
        .replace("8080", str(free_port()))
    )


@pytest.mark.parametrize(("kind", "code"), EXAMPLES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(EXAMPLES)])
def test_readme_example_runs(
    kind: str,
    code: str,
    node_project: Path,
    tmp_path: Path,
    fresh_server: Callable[[], AbstractContextManager[ServerProcess]],
) -> None:
    with fresh_server() as server:
        example = _for(server, code)
        if kind == "python":
            command = [sys.executable, "-c", example]
            cwd = tmp_path
        elif kind == "node":
            script = node_project / f".readme-example-{server.port}.mjs"  # beside its node_modules
            script.write_text(example)
            command, cwd = ["node", script.name], node_project
        else:
            command, cwd = ["bash", "-euo", "pipefail", "-c", example], tmp_path
        env = {
            **os.environ,
            "PATH": f"{Path(OPENTASKS).parent}{os.pathsep}{os.environ['PATH']}",  # as after `activate`
            "CLOUD_TASKS_EMULATOR_HOST": server.address,
        }
        try:
            run = subprocess.run(
                command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False, env=env
            )
        finally:
            if kind == "node":
                script.unlink()
    assert run.returncode == 0, f"{kind} example failed:\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip(), "every example prints what it did"
    if kind == "cli":  # the handler saw the task, and the task is done
        assert '"GET / HTTP/1.1" 200' in run.stderr
        assert "Listed 0 items." in run.stderr
