"""`opentasks apply -f` and `opentasks serve --config`, run as a user runs them."""

import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from opentasks.testing import OPENTASKS, ServerProcess

pytestmark = pytest.mark.integration
CONFIG = """
project: decl
location: europe-west1
queues:
  - name: emails
    rate_limits: {max_dispatches_per_second: 5, max_concurrent_dispatches: 3}
    retry_config: {max_attempts: 4, min_backoff: 2s}
  - name: reports
    state: PAUSED
"""


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ServerProcess]:
    """One server for the tests that need none of their own (each keeps to a project of its own)."""
    with ServerProcess("memory://", "--no-dispatch") as server:
        yield server


def apply(server: ServerProcess, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run ``opentasks apply`` without a terminal (stdin is empty)."""
    return subprocess.run(
        [OPENTASKS, "apply", "-f", str(path), "--endpoint", server.address, *flags],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
        check=False,
    )


def apply_on_terminal(server: ServerProcess, path: Path, answer: bytes, *flags: str) -> tuple[int, str]:
    """Run ``opentasks apply`` on a pseudo-terminal; answer ``answer`` once it asks."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [OPENTASKS, "apply", "-f", str(path), "--endpoint", server.address, *flags],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], deadline - time.monotonic())
        try:
            chunk = os.read(controller, 4096) if ready else b""
        except OSError:  # the command exited and closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"(Y/n)?" in output:
            os.write(controller, answer)
            answered = True
    os.close(controller)
    return process.wait(timeout=60), output.decode().replace("\r\n", "\n")


def test_apply_is_idempotent_and_plans(tmp_path: Path, shared_server: ServerProcess) -> None:
    server = shared_server  # its own project (decl): the other tests of this server leave it alone
    config = tmp_path / "queues.yaml"
    config.write_text(CONFIG)
    client = server.client()
    dry = apply(server, config, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+ create projects/decl/locations/europe-west1/queues/emails" in dry.stdout
    assert "Dry run: 3 change(s) planned, none made." in dry.stdout
    assert list(client.list_queues(parent="projects/decl/locations/europe-west1")) == []

    first = apply(server, config)
    assert first.returncode == 0 and "Applied 3 change(s)." in first.stdout
    emails = client.get_queue(name="projects/decl/locations/europe-west1/queues/emails")
    assert (
        emails.rate_limits.max_dispatches_per_second,
        emails.rate_limits.max_concurrent_dispatches,
    ) == (5, 3)
    assert emails.retry_config.max_attempts == 4
    reports = client.get_queue(name="projects/decl/locations/europe-west1/queues/reports")
    assert reports.state == tasks_v2.Queue.State.PAUSED

    again = apply(server, config)
    assert again.stdout.strip().endswith("Nothing to change: the queues match " + str(config) + ".")

    config.write_text(
        CONFIG.replace("max_dispatches_per_second: 5", "max_dispatches_per_second: 8").replace(
            "state: PAUSED", "state: RUNNING"
        )
    )
    client.create_queue(
        parent="projects/decl/locations/europe-west1",
        queue={"name": "projects/decl/locations/europe-west1/queues/stray"},
    )
    changed = apply(server, config)
    assert (
        "~ update projects/decl/locations/europe-west1/queues/emails: "
        "rate_limits.max_dispatches_per_second: 5.0 -> 8.0" in changed.stdout
    )
    assert "~ resume projects/decl/locations/europe-west1/queues/reports" in changed.stdout
    assert "stray" not in changed.stdout  # never deletes unless asked
    pruned = apply(server, config, "--prune")
    assert "- delete projects/decl/locations/europe-west1/queues/stray" in pruned.stdout
    names = [
        q.name.rsplit("/", 1)[1] for q in client.list_queues(parent="projects/decl/locations/europe-west1")
    ]
    assert names == ["emails", "reports"]


def test_apply_queue_yaml_keeps_bucket_size_and_reserves_task_names_longer(tmp_path: Path) -> None:
    queue_yaml = tmp_path / "queue.yaml"
    queue_yaml.write_text("queue:\n- name: legacy\n  rate: 2/s\n  bucket_size: 40\n  target: worker\n")
    with ServerProcess("memory://", "--no-dispatch", "--task-tombstone", "0s") as server:
        run = apply(server, queue_yaml, "--project", "gae")
        assert run.returncode == 0, run.stderr
        assert "NOTE" not in run.stderr
        client = server.client()
        name = "projects/gae/locations/us-central1/queues/legacy"
        legacy = client.get_queue(name=name)
        assert legacy.rate_limits.max_dispatches_per_second == 2
        assert legacy.rate_limits.max_burst_size == 40
        assert legacy.app_engine_routing_override.service == "worker"
        assert apply(server, queue_yaml, "--project", "gae").stdout.startswith("Nothing to change")
        # Task names stay reserved (~9 days), although API queues here release them at once.
        task = tasks_v2.Task(name=f"{name}/tasks/nightly", http_request={"url": "http://127.0.0.1:9/"})
        client.create_task(parent=name, task=task)
        client.delete_task(name=task.name)
        with pytest.raises(exceptions.AlreadyExists):
            client.create_task(parent=name, task=task)
        # A plain UpdateQueue turns it into an API queue: the burst follows the rate again.
        updated = client.update_queue(
            queue=tasks_v2.Queue(name=name, rate_limits={"max_dispatches_per_second": 2}),
            update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
        )
        assert updated.rate_limits.max_burst_size == 10


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.yaml",
            "queues:\n  - name: q\n    retry_config: {max_attempts: many}\n",
            ":3: q.retry_config.max_attempts: expected a whole number or unlimited, not 'many'.",
        ),
        (  # a typo in a queue.yaml: an error, not a note
            "queue.yaml",
            "queue:\n- name: mail\n  rate: 5/s\n  max_concurent_requests: 7\n",
            ":4: mail.max_concurent_requests: unknown field; did you mean max_concurrent_requests?",
        ),
        (  # refused by the server (its --max-rate-per-queue), reported with the line
            "queues.yaml",
            "queues:\n  - name: fast\n    rate_limits:\n      max_dispatches_per_second: 900\n",
            ":4: fast.rate_limits.max_dispatches_per_second: "
            "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
        ),
    ],
)
def test_apply_rejects_an_invalid_file_and_changes_nothing(
    tmp_path: Path, shared_server: ServerProcess, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    run = apply(shared_server, path)
    assert run.returncode == 1
    assert f"{path}{message}" in run.stderr
    assert "Traceback" not in run.stderr
    assert list(shared_server.client().list_queues(parent="projects/my-project/locations/us-central1")) == []


def test_prune_refuses_a_wipe_out_and_asks_on_a_terminal(
    tmp_path: Path, shared_server: ServerProcess
) -> None:
    server, project = shared_server, ("--project", "prune")  # a project of its own on the shared server
    parent = "projects/prune/locations/us-central1"
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    keep = tmp_path / "keep.yaml"
    keep.write_text("queues:\n  - name: keep\n")
    client = server.client()
    for queue_id in ("keep", "stray", "other"):
        client.create_queue(parent=parent, queue={"name": f"{parent}/queues/{queue_id}"})

    def names() -> list[str]:
        return sorted(q.name.rsplit("/", 1)[1] for q in client.list_queues(parent=parent))

    refused = apply(server, empty, "--prune", "-q", *project)  # e.g. an empty or mistyped file
    assert refused.returncode == 1
    assert f"--prune would delete every queue of {parent} (3)" in refused.stderr
    assert names() == ["keep", "other", "stray"]

    code, output = apply_on_terminal(server, keep, b"n\n", "--prune", *project)
    assert code == 1, output
    assert "Are you sure you want to delete: [us-central1/other], [us-central1/stray]" in output
    assert "--queue-tombstone" in output
    assert "ERROR: Aborted by user." in output
    assert names() == ["keep", "other", "stray"]

    code, output = apply_on_terminal(server, keep, b"y\n", "--prune", *project)
    assert code == 0, output
    assert "Applied 2 change(s)." in output
    assert names() == ["keep"]

    client.create_queue(parent=parent, queue={"name": f"{parent}/queues/late"})
    code, output = apply_on_terminal(server, keep, b"n\n", "--prune", "-q", *project)
    assert code == 0, output
    assert "(Y/n)" not in output
    assert names() == ["keep"]

    client.create_queue(parent=parent, queue={"name": f"{parent}/queues/later"})
    unattended = apply(server, keep, "--prune", *project)  # no terminal: no question, as gcloud
    assert unattended.returncode == 0, unattended.stderr
    assert "continue" not in unattended.stderr
    assert names() == ["keep"]

    wiped = apply(server, empty, "--prune", "--yes", *project)
    assert wiped.returncode == 0, wiped.stderr
    assert names() == []


def test_serve_refuses_an_invalid_config_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "opentasks.yaml"
    config.write_text("queues:\n  - name: a\n  - name: a\n")
    run = subprocess.run(
        [OPENTASKS, "serve", "--storage", "memory://", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    assert f"{config}:3: a: the queue is declared twice, at lines 2 and 3." in run.stderr
    assert "Traceback" not in run.stderr


def test_serve_with_config_applies_queues_at_start(tmp_path: Path) -> None:
    config = tmp_path / "opentasks.yaml"
    config.write_text("server:\n  no_dispatch: true\n  queue_tombstone: 1m\n" + CONFIG)
    log = tmp_path / "server.log"
    with ServerProcess("memory://", "--config", str(config), log_path=log) as server:
        client = server.client()
        for _ in range(100):  # the queues are applied just after the server starts listening
            found = list(client.list_queues(parent="projects/decl/locations/europe-west1"))
            if len(found) == 2:
                break
            time.sleep(0.05)
        assert [q.name.rsplit("/", 1)[1] for q in found] == ["emails", "reports"]
    assert "not dispatching (--no-dispatch)" in log.read_text()  # a server setting from the file
