"""`opentasks apply` in-process: the plan, the rails around --prune, and refusals with their line.

The server is a small fake holding real ``tasks_v2.Queue`` messages; the integration tests
(tests/integration/test_declarative.py) run the command against a real server.
"""

import importlib
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from google.api_core import exceptions
from google.cloud import tasks_v2

from opentasks.cli.remote import Remote, fail

# The module (``opentasks.cli.apply`` the attribute is the command).
apply_module = importlib.import_module("opentasks.cli.apply")
PARENT = "projects/p/locations/l"


class FakeServer:
    """Just what ``apply`` calls; records the changes it is asked for."""

    def __init__(self, *queue_ids: str) -> None:
        self.queues = {f"{PARENT}/queues/{q}": tasks_v2.Queue(name=f"{PARENT}/queues/{q}") for q in queue_ids}
        self.changes: list[str] = []
        self.refuse: str | None = None

    def get_queue(self, name: str) -> tasks_v2.Queue:
        if name not in self.queues:
            raise exceptions.NotFound("no such queue")
        return self.queues[name]

    def list_queues(self, parent: str) -> list[tasks_v2.Queue]:
        return [q for name, q in self.queues.items() if name.startswith(parent + "/")]

    def update_queue(self, queue: tasks_v2.Queue, update_mask: Any, metadata: Any) -> None:
        if self.refuse:
            raise exceptions.InvalidArgument(self.refuse)
        self.queues[queue.name] = queue
        self.changes.append(f"update {queue.name.rsplit('/', 1)[1]}")

    def delete_queue(self, name: str) -> None:
        del self.queues[name]
        self.changes.append(f"delete {name.rsplit('/', 1)[1]}")

    def pause_queue(self, name: str) -> None:
        self.changes.append(f"pause {name.rsplit('/', 1)[1]}")

    def resume_queue(self, name: str) -> None:
        self.changes.append(f"resume {name.rsplit('/', 1)[1]}")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer("keep", "stray")
    monkeypatch.setattr(Remote, "client", lambda self: fake)
    return fake


def run(tmp_path: Path, text: str, *flags: str, answer: str | None = None) -> Result:
    """Run ``apply`` on ``text``; ``answer`` is what a person on a terminal says, if asked."""
    path = tmp_path / "queues.yaml"
    path.write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(apply_module, "confirm", lambda remote, question: ask(remote, question, answer))
        args = ["-f", str(path), "--project", "p", "--location", "l", *flags]
        return CliRunner().invoke(apply_module.apply, args)


def ask(remote: Remote, question: str, answer: str | None) -> None:
    """Stands for opentasks.cli.prompts.confirm (run on a pseudo-terminal by the integration
    tests): prints the question unless quiet, and a "no" aborts."""
    if remote.quiet or answer is None:
        return
    click.echo(question, err=True)
    if answer == "n":
        fail("Aborted by user.", 1)


KEEP = "queues:\n  - name: keep\n"


def test_prune_asks_and_no_changes_nothing(tmp_path: Path, server: FakeServer) -> None:
    result = run(tmp_path, KEEP + "  - name: new\n", "--prune", answer="n")
    assert result.exit_code == 1
    assert "Are you sure you want to delete: [l/stray]" in result.output
    assert "--queue-tombstone" in result.output
    assert "Aborted by user." in result.output
    assert server.changes == []  # not even the creation: the answer comes before any change


def test_prune_goes_ahead_on_yes(tmp_path: Path, server: FakeServer) -> None:
    result = run(tmp_path, KEEP, "--prune", answer="y")
    assert result.exit_code == 0, result.output
    assert "Are you sure you want to delete: [l/stray]" in result.output
    assert server.changes == ["delete stray"]


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_no_question_when_quiet(tmp_path: Path, server: FakeServer, flag: str) -> None:
    result = run(tmp_path, KEEP, "--prune", flag, answer="n")
    assert result.exit_code == 0, result.output
    assert "Are you sure" not in result.output
    assert server.changes == ["delete stray"]


def test_no_question_without_deletions(tmp_path: Path, server: FakeServer) -> None:
    result = run(tmp_path, KEEP + "  - name: stray\n", "--prune", answer="n")
    assert result.exit_code == 0, result.output
    assert "Nothing to change" in result.output


@pytest.mark.parametrize(
    "text", ["", "queues: []\n", "queues:\n  - name: projects/p/locations/elsewhere/queues/keep\n"]
)
def test_prune_refuses_to_delete_every_queue_of_the_location(
    tmp_path: Path, server: FakeServer, text: str
) -> None:
    result = run(tmp_path, text, "--prune", answer="y")
    assert result.exit_code == 1
    assert "--prune would delete every queue of projects/" in result.output
    assert "add --yes to delete them all" in result.output
    assert server.changes == []


def test_yes_allows_deleting_every_queue(tmp_path: Path, server: FakeServer) -> None:
    result = run(tmp_path, "", "--prune", "--yes", answer="y")
    assert result.exit_code == 0, result.output
    assert sorted(server.changes) == ["delete keep", "delete stray"]


def test_a_dry_run_warns_of_a_wipe_out_and_changes_nothing(tmp_path: Path, server: FakeServer) -> None:
    result = run(tmp_path, "", "--prune", "--dry-run", answer="n")
    assert result.exit_code == 0
    assert "WARNING: --prune would delete every queue" in result.output
    assert "Dry run: 2 change(s) planned, none made." in result.output
    assert server.changes == []


def test_a_refused_setting_is_reported_with_its_line(tmp_path: Path, server: FakeServer) -> None:
    server.refuse = "RateLimits.maxDispatchesPerSecond must be less than or equal to 500."
    text = (
        KEEP + "  - name: fast\n    state: RUNNING\n    rate_limits:\n      max_dispatches_per_second: 900\n"
    )
    result = run(tmp_path, text)
    assert result.exit_code == 1
    assert (
        f"{tmp_path / 'queues.yaml'}:6: fast.rate_limits.max_dispatches_per_second: "
        "RateLimits.maxDispatchesPerSecond must be less than or equal to 500." in result.output
    )
    assert "Traceback" not in result.output


def test_a_queue_named_twice_by_id_and_full_name_is_refused(tmp_path: Path, server: FakeServer) -> None:
    result = run(tmp_path, f"queues:\n  - name: keep\n  - name: {PARENT}/queues/keep\n")
    assert result.exit_code == 1
    assert (
        "queues.yaml:3: projects/p/locations/l/queues/keep: the queue is declared twice, at lines 2 and 3."
        in (result.output)
    )


def test_an_invalid_file_changes_nothing(tmp_path: Path, server: FakeServer) -> None:
    result = run(tmp_path, "queue:\n- name: keep\n  rate: 1/s\n  max_concurent_requests: 3\n")
    assert result.exit_code == 1
    assert (
        "queues.yaml:4: keep.max_concurent_requests: unknown field; did you mean max_concurrent_requests?"
        in (result.output)
    )
    assert server.changes == []
