"""`opentasks` prints what `gcloud tasks` prints, side by side against the same server (the real
gcloud, pointed at the REST port; skipped where gcloud is not installed)."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from opentasks.testing import OPENTASKS, ServerProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed"),
]
PROJECT = "beside"
LOCATION = ["--location", "us-central1"]
TASK = f"projects/{PROJECT}/locations/us-central1/queues/first/tasks/h1"
# gcloud applies --limit to what it fetched (one page of that size) before sorting: ask for all.
LISTING = ["--format=csv(name.basename(),state)", "--sort-by=~name", "--limit=2"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("memory://") as running:
        opentasks(
            running, "queues", "create", "first", "--max-attempts", "unlimited", "--log-sampling-ratio", "0.5"
        )
        opentasks(running, "queues", "create", "second", "--max-dispatches-per-second", "0.333333333333")
        opentasks(running, "queues", "pause", "first")
        opentasks(running, "tasks", "create-http-task", "h1", "--queue", "first", "--url", "https://example.com/a",
                  "--header", "Z: 1", "--header", "A: 2", "--body-content", "??>~")  # fmt: skip
        opentasks(
            running, "tasks", "create-app-engine-task", "ae", "--queue", "first", "--relative-uri", "/ae"
        )
        opentasks(running, "queues", "add-iam-policy-binding", "first", "--member", "user:ada@example.com",
                  "--role", "roles/cloudtasks.viewer")  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def gcloud_env(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """gcloud pointed at the server's REST port, with a configuration of its own."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")},
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS": f"{server.rest_url}/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_PROJECT": PROJECT,
        "CLOUDSDK_CONFIG": str(tmp_path_factory.mktemp("gcloud")),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
    }


def opentasks(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENTASKS_", "CLOUDSDK_"))}
    env["OPENTASKS_REST_URL"] = server.rest_url  # what --uri prints (else guessed from the gRPC port)
    return subprocess.run(
        [OPENTASKS, *args, "--endpoint", server.address, "--project", PROJECT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def gcloud(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gcloud", "tasks", *args], capture_output=True, text=True, timeout=120, check=True, env=env
    )


# (gcloud's arguments, opentasks' arguments) for the same command.
SAME_OUTPUT = [
    (["queues", "list", *LOCATION], ["queues", "list", "--no-stats"]),
    (["queues", "describe", "first", *LOCATION], ["queues", "describe", "first", "--no-stats"]),
    (["list", "--queue", "first", *LOCATION], ["tasks", "list", "--queue", "first"]),
    (["describe", "h1", "--queue", "first", *LOCATION], ["tasks", "describe", "h1", "--queue", "first"]),
    (["describe", TASK, "--response-view=full"], ["tasks", "describe", TASK, "--response-view=full"]),
    (["queues", "get-iam-policy", "first", *LOCATION], ["queues", "get-iam-policy", "first"]),
    (["locations", "list"], ["locations", "list"]),
    (["queues", "list", *LOCATION, *LISTING], ["queues", "list", *LISTING]),
    (
        ["list", "--queue", "first", *LOCATION, "--uri"],
        ["tasks", "list", "--queue", "first", "--uri"],
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def both_outputs(
    server: ServerProcess, gcloud_env: dict[str, str]
) -> list[tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]]:
    """(gcloud's run, opentasks' run) of every SAME_OUTPUT case, all at once (gcloud takes about a
    second to start; none of these commands changes anything)."""
    with ThreadPoolExecutor(max_workers=2 * len(SAME_OUTPUT)) as pool:
        runs = [
            (pool.submit(gcloud, gcloud_env, *theirs), pool.submit(opentasks, server, *ours))
            for theirs, ours in SAME_OUTPUT
        ]
        return [(theirs.result(), ours.result()) for theirs, ours in runs]


@pytest.mark.parametrize("case", range(len(SAME_OUTPUT)), ids=[" ".join(g[:2]) for g, _ in SAME_OUTPUT])
def test_same_output(
    both_outputs: list[tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]], case: int
) -> None:
    theirs, ours = both_outputs[case]
    assert (ours.stdout, ours.stderr) == (theirs.stdout, theirs.stderr)


def test_same_messages_for_changes(server: ServerProcess, gcloud_env: dict[str, str]) -> None:
    theirs = gcloud(gcloud_env, "queues", "create", "by-gcloud", *LOCATION)
    ours = opentasks(server, "queues", "create", "by-opentasks")
    assert (ours.stdout, ours.stderr.replace("by-opentasks", "by-gcloud")) == (theirs.stdout, theirs.stderr)
    for verb in ("pause", "delete"):
        theirs = gcloud(gcloud_env, "queues", verb, "by-gcloud", *LOCATION, "--quiet")
        ours = opentasks(server, "queues", verb, "by-opentasks", "--quiet")
        assert (ours.stdout, ours.stderr.replace("by-opentasks", "by-gcloud")) == (
            theirs.stdout,
            theirs.stderr,
        )


def test_same_question_before_a_purge(server: ServerProcess, gcloud_env: dict[str, str]) -> None:
    asking = {k: v for k, v in gcloud_env.items() if k != "CLOUDSDK_CORE_DISABLE_PROMPTS"}
    gcloud_says = on_terminal(["gcloud", "tasks", "queues", "purge", "first", *LOCATION], asking)
    ours = on_terminal(
        [OPENTASKS, "queues", "purge", "first", "--endpoint", server.address, "--project", PROJECT], asking
    )
    assert (ours.returncode, gcloud_says.returncode) == (1, 1)
    assert ours.stderr.splitlines()[0] == gcloud_says.stderr.splitlines()[0]


def on_terminal(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run with standard input on a terminal, answering no."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"n\n")
        return subprocess.run(
            command, stdin=terminal, capture_output=True, text=True, timeout=120, env=env, check=False
        )
    finally:
        os.close(terminal)
        os.close(controller)
