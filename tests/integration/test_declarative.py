"""`opentasks apply -f` and `opentasks serve --config`, run as a user runs them."""

import subprocess
import time
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


def apply(server: ServerProcess, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENTASKS, "apply", "-f", str(path), "--endpoint", server.address, *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_apply_is_idempotent_and_plans(tmp_path: Path) -> None:
    config = tmp_path / "queues.yaml"
    config.write_text(CONFIG)
    with ServerProcess("memory://", "--no-dispatch") as server:
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
            q.name.rsplit("/", 1)[1]
            for q in client.list_queues(parent="projects/decl/locations/europe-west1")
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


def test_apply_rejects_an_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n  - name: q\n    retry_config: {max_attempts: many}\n")
    with ServerProcess("memory://", "--no-dispatch") as server:
        run = apply(server, bad)
    assert run.returncode == 1
    assert f"{bad}:3: q.retry_config.max_attempts: 'many' is not a valid attempts" in run.stderr
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
