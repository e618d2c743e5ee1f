"""The `opentasks queues|tasks` commands, run as a user runs them, against a real server."""

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from opentasks.testing import OPENTASKS, ServerProcess
from tests.integration.handlers import HandlerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


@pytest.fixture(scope="module")
def cli_server(handler: HandlerProcess) -> Iterator[ServerProcess]:
    with ServerProcess("memory://", "--app-engine-url", handler.url("")) as running:
        yield running


@pytest.fixture(scope="module", autouse=True)
def call_to_nowhere() -> Iterator[subprocess.Popen[str]]:
    """A call to a port where nothing listens, started with the module: the CLI waits up to 5 s
    for a server that is starting before it gives up, so the other tests run meanwhile."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused, and no server can take it
        port = closed.getsockname()[1]
        with subprocess.Popen(
            [OPENTASKS, "queues", "list", "--endpoint", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as running:
            yield running
            running.communicate(timeout=60)  # ended and drained, whether the test read it or not


def cli(
    server: ServerProcess, *args: str, ok: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [OPENTASKS, *args, "--endpoint", server.address, "--project", "cli-project"],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        check=False,
    )
    if ok:
        assert run.returncode == 0, run.stderr
    return run


def test_seed_workflow(cli_server: ServerProcess, handler: HandlerProcess) -> None:
    created = yaml.safe_load(
        cli(
            cli_server,
            "queues",
            "create",
            "emails",
            "--max-dispatches-per-second",
            "5",
            "--max-attempts",
            "3",
            "--min-backoff",
            "1s",
            "--max-backoff",
            "10s",
            "--format",
            "yaml",
        ).stdout
    )
    assert created["name"] == "projects/cli-project/locations/us-central1/queues/emails"
    assert created["rateLimits"] == {
        "maxDispatchesPerSecond": 5.0,
        "maxBurstSize": 10,
        "maxConcurrentDispatches": 1000,
    }
    assert created["retryConfig"]["maxAttempts"] == 3
    assert created["retryConfig"]["minBackoff"] == "1s"

    task = yaml.safe_load(
        cli(
            cli_server,
            "tasks",
            "create-http-task",
            "welcome-ada",
            "--queue",
            "emails",
            "--url",
            handler.url("/send-email"),
            "--header",
            "Content-Type: application/json",
            "--body-content",
            '{"to": "ada@example.com"}',
            "--format",
            "yaml",
        ).stdout
    )
    assert task["name"].endswith("/queues/emails/tasks/welcome-ada")
    (received,) = handler.take(1)
    assert (received.path, received.body) == ("/send-email", b'{"to": "ada@example.com"}')
    assert received.header("Content-Type") == "application/json"

    described = yaml.safe_load(cli(cli_server, "queues", "describe", "emails").stdout)
    assert described["state"] == "RUNNING"
    assert described["stats"] == {
        "tasksCount": 0,
        "executedLastMinuteCount": described["stats"]["executedLastMinuteCount"],
        "concurrentDispatchesCount": 0,
        "effectiveExecutionRate": described["stats"]["effectiveExecutionRate"],
    }
    assert "stats" not in yaml.safe_load(cli(cli_server, "queues", "describe", "emails", "--no-stats").stdout)
    table = cli(cli_server, "queues", "list").stdout.splitlines()
    assert table[0].split() == [
        "QUEUE_NAME",
        "STATE",
        "MAX_NUM_OF_TASKS",
        "MAX_RATE",
        "(/sec)",
        "MAX_ATTEMPTS",
        "TASKS",
        "OLDEST",
    ]
    assert table[1].split() == ["emails", "RUNNING", "1000", "5.0", "3", "0"]


def test_queue_updates_and_state(cli_server: ServerProcess) -> None:
    cli(cli_server, "queues", "create", "settings")
    updated = yaml.safe_load(
        cli(
            cli_server,
            "queues",
            "update",
            "settings",
            "--max-concurrent-dispatches",
            "7",
            "--max-attempts",
            "unlimited",
            "--routing-override",
            "service:worker",
            "--format",
            "yaml",
        ).stdout
    )
    assert updated["rateLimits"]["maxConcurrentDispatches"] == 7
    assert updated["retryConfig"]["maxAttempts"] == -1
    assert updated["appEngineRoutingOverride"]["service"] == "worker"
    cleared = yaml.safe_load(
        cli(
            cli_server,
            "queues",
            "update",
            "settings",
            "--clear-max-attempts",
            "--clear-routing-override",
            "--format",
            "json",
        ).stdout
    )
    assert cleared["retryConfig"]["maxAttempts"] == 100
    assert "appEngineRoutingOverride" not in cleared
    assert cli(cli_server, "queues", "pause", "settings").stderr == "Paused queue [us-central1/settings].\n"
    paused = json.loads(
        cli(cli_server, "queues", "list", "--filter", "state: PAUSED", "--format", "json").stdout
    )
    assert [q["name"].rsplit("/", 1)[1] for q in paused] == ["settings"]
    assert cli(cli_server, "queues", "resume", "settings").stderr.startswith("Resumed queue [")
    assert cli(cli_server, "queues", "purge", "settings").stderr.startswith("Purged queue [")
    assert cli(cli_server, "queues", "delete", "settings").stderr.startswith("Deleted queue [")
    assert cli(cli_server, "queues", "update", "x", ok=False).returncode == 2  # no setting named


def test_task_commands(cli_server: ServerProcess, handler: HandlerProcess, tmp_path: Path) -> None:
    cli(cli_server, "queues", "create", "work")
    cli(cli_server, "queues", "pause", "work")
    body = tmp_path / "body.bin"
    body.write_bytes(b"\x00\x01binary")
    cli(
        cli_server,
        "tasks",
        "create-app-engine-task",
        "ae1",
        "--queue",
        "work",
        "--relative-uri",
        "/ae",
        "--body-file",
        str(body),
        "--routing",
        "service:worker",
        "--schedule-time",
        "+1h",
    )
    cli(
        cli_server,
        "tasks",
        "create-http-task",
        "--queue",
        "work",
        "--url",
        handler.url("/generated"),
        "--method",
        "put",
        "--body-content",
        "x",
    )
    listed = json.loads(cli(cli_server, "tasks", "list", "--queue", "work", "--format", "json").stdout)
    assert ["appEngineHttpRequest" in t for t in listed] == [True, False]
    table = cli(cli_server, "tasks", "list", "--queue", "work").stdout.splitlines()
    assert table[0].split()[:2] == ["TASK_NAME", "TYPE"] and table[1].split()[:2] == ["ae1", "app-engine"]
    full = yaml.safe_load(
        cli(cli_server, "tasks", "describe", "ae1", "--queue", "work", "--response-view", "full").stdout
    )
    assert full["appEngineHttpRequest"]["body"] == "AAFiaW5hcnk="  # base64, as in the REST API
    assert full["appEngineHttpRequest"]["appEngineRouting"]["service"] == "worker"
    ran = yaml.safe_load(cli(cli_server, "tasks", "run", "ae1", "--queue", "work").stdout)
    assert ran["dispatchCount"] == 1
    (received,) = handler.take(1)
    assert (received.path, received.body) == ("/ae", b"\x00\x01binary")
    assert cli(cli_server, "tasks", "delete", listed[1]["name"]).stderr.startswith("Deleted task [")


def test_import_tasks_from_json_lines(cli_server: ServerProcess, tmp_path: Path) -> None:
    cli(cli_server, "queues", "create", "bulk")
    cli(cli_server, "queues", "pause", "bulk")
    lines = [json.dumps({"httpRequest": {"url": f"https://example.com/{i}"}}) for i in range(250)]
    lines.insert(10, json.dumps({"httpRequest": {"url": "ftp://refused"}}))
    source = tmp_path / "tasks.jsonl"
    source.write_text("\n".join(lines) + "\n")
    run = cli(cli_server, "tasks", "import", str(source), "--queue", "bulk", ok=False)
    assert run.returncode == 1
    assert "Created 250 of 251 tasks" in run.stdout
    assert "line 11: HttpTarget.url must start with 'http://' or 'https://'." in run.stderr
    listed = json.loads(cli(cli_server, "tasks", "list", "--queue", "bulk", "--format", "json").stdout)
    assert len(listed) == 250
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"httpRequest": {"url": "https://x"}}\n{not json\n')
    run = cli(cli_server, "tasks", "import", str(broken), "--queue", "bulk", ok=False)
    assert run.returncode == 1 and "line 2: not a Task in JSON" in run.stderr
    assert "Traceback" not in run.stderr


def test_errors_read_well(cli_server: ServerProcess, call_to_nowhere: subprocess.Popen[str]) -> None:
    missing = cli(cli_server, "queues", "describe", "nope", ok=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "ERROR: (NOT_FOUND) Queue does not exist. If you just created the queue, wait at least a minute "
        "for the queue to initialize."
    )
    invalid = cli(cli_server, "queues", "create", "bad", "--max-dispatches-per-second", "501", ok=False)
    assert invalid.stderr.strip() == (
        "ERROR: (INVALID_ARGUMENT) RateLimits.maxDispatchesPerSecond must be less than or equal to 500."
    )
    _, unreachable_stderr = call_to_nowhere.communicate(timeout=60)
    assert call_to_nowhere.returncode == 2
    assert unreachable_stderr.startswith("ERROR: cannot reach the opentasks server")
    assert "Traceback" not in missing.stderr + invalid.stderr + unreachable_stderr


def test_queue_level_http_target_flags(cli_server: ServerProcess, handler: HandlerProcess) -> None:
    port = handler.url("").rsplit(":", 1)[1]
    created = yaml.safe_load(
        cli(
            cli_server,
            "queues",
            "create",
            "routed",
            f"--http-uri-override=scheme:http,host:127.0.0.1,port:{port},path:/routed,mode:always",
            "--http-header-override",
            "X-Team: billing",
            "--http-oidc-service-account-email-override",
            "queue@cli-project.iam.gserviceaccount.com",
            "--http-oidc-token-audience-override",
            "https://billing.example",
            "--format",
            "yaml",
        ).stdout
    )
    target = created["httpTarget"]
    assert target["uriOverride"]["host"] == "127.0.0.1"
    assert target["uriOverride"]["pathOverride"] == {"path": "/routed"}
    assert target["headerOverrides"] == [{"header": {"key": "X-Team", "value": "billing"}}]
    assert target["oidcToken"]["audience"] == "https://billing.example"
    # An update merges into what the queue has: the URI override stays.
    updated = yaml.safe_load(
        cli(
            cli_server, "queues", "update", "routed", "--http-method-override", "put", "--format", "yaml"
        ).stdout
    )
    assert updated["httpTarget"]["httpMethod"] == "PUT"
    assert updated["httpTarget"]["uriOverride"]["pathOverride"] == {"path": "/routed"}
    cli(cli_server, "tasks", "create-http-task", "--queue", "routed", "--url", "http://elsewhere.example/x")
    [received] = handler.take(1)
    assert (received.method, received.path, received.header("X-Team")) == ("PUT", "/routed", "billing")
    assert (received.header("Authorization") or "").startswith("Bearer ")
    cleared = yaml.safe_load(
        cli(cli_server, "queues", "update", "routed", "--clear-http-target", "--format", "yaml").stdout
    )
    assert "httpTarget" not in cleared
    bad = cli(cli_server, "queues", "update", "routed", "--http-uri-override=colour:red", ok=False)
    assert bad.returncode == 2
    assert "'colour:red': write KEY:VALUE" in bad.stderr


def test_queue_stats_in_describe_and_list(cli_server: ServerProcess) -> None:
    cli(cli_server, "queues", "create", "counted", "--max-dispatches-per-second", "3")
    cli(cli_server, "queues", "pause", "counted")
    for i in range(3):
        cli(
            cli_server,
            "tasks",
            "create-http-task",
            f"t{i}",
            "--queue",
            "counted",
            "--url",
            "https://example.com/",
        )
    stats = yaml.safe_load(cli(cli_server, "queues", "describe", "counted").stdout)["stats"]
    assert stats["tasksCount"] == 3 and stats["effectiveExecutionRate"] == 0
    assert stats["oldestEstimatedArrivalTime"].endswith("Z")
    rows = [line.split() for line in cli(cli_server, "queues", "list").stdout.splitlines()]
    (row,) = [r for r in rows if r[0] == "counted"]
    assert row[5:7] == ["3", stats["oldestEstimatedArrivalTime"]]
