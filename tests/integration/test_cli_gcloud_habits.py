"""The `opentasks` CLI keeps gcloud's habits: its output, list flags, formats, names, project
variables, and its safety rails. Each command runs as a user runs it, against a real server."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from opentasks.cli.tasks import SCHEDULE_TIME_HELP
from opentasks.testing import OPENTASKS, ServerProcess

pytestmark = pytest.mark.integration
PROJECT = "habits"
PARENT = f"projects/{PROJECT}/locations/us-central1"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("memory://") as running:
        yield running


def environment(server: ServerProcess, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENTASKS_", "CLOUDSDK_"))}
    env.update({"CLOUD_TASKS_EMULATOR_HOST": server.address, "OPENTASKS_REST_URL": server.rest_url})
    env.update(extra)
    return env


def cli(
    server: ServerProcess, *args: str, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    project = [] if env is not None else ["--project", PROJECT]
    run = subprocess.run(
        [OPENTASKS, *args, *project],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env if env is not None else environment(server),
    )
    if ok:
        assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run


def paused_queue(server: ServerProcess, queue: str) -> None:
    """Set-up through the API (the commands under test run as subprocesses)."""
    client = server.client()
    client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/{queue}"})
    client.pause_queue(name=f"{PARENT}/queues/{queue}")


def http_task(server: ServerProcess, queue: str, task: str) -> None:
    name = f"{PARENT}/queues/{queue}"
    server.client().create_task(
        parent=name, task={"name": f"{name}/tasks/{task}", "http_request": {"url": "https://example.com/"}}
    )


def on_terminal(server: ServerProcess, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run with standard input on a terminal, typing ``answer``."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())
        return subprocess.run(
            [OPENTASKS, *args, "--project", PROJECT],
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=environment(server),
        )
    finally:
        os.close(terminal)
        os.close(controller)


def test_create_says_so_on_stderr_and_prints_the_resource_only_with_format(server: ServerProcess) -> None:
    created = cli(server, "queues", "create", "said")
    assert (created.stdout, created.stderr) == ("", "Created queue [us-central1/said].\n")
    shown = json.loads(cli(server, "queues", "create", "shown", "--format", "json").stdout)
    assert shown["name"] == f"{PARENT}/queues/shown"
    named = cli(
        server,
        "queues",
        "update",
        "shown",
        "--max-attempts",
        "7",
        "--format",
        "value(retryConfig.maxAttempts)",
    )
    assert (named.stdout, named.stderr) == ("7\n", "Updated queue [us-central1/shown].\n")
    task = cli(server, "tasks", "create-http-task", "t", "--queue", "said", "--url", "https://example.com/")
    assert (task.stdout, task.stderr) == ("", f"Created task [{PARENT}/queues/said/tasks/t].\n")


def test_describe_sorts_keys_omits_empty_fields_and_hides_the_body_in_basic_view(
    server: ServerProcess,
) -> None:
    paused_queue(server, "described")
    headers = [f"--header=X-{letter}: {letter}" for letter in "zyxabc"]
    cli(
        server,
        "tasks",
        "create-http-task",
        "t",
        "--queue",
        "described",
        "--url",
        "https://example.com/",
        *headers,
        "--body-content",
        "secret",
    )
    first = cli(server, "tasks", "describe", "t", "--queue", "described").stdout
    second = cli(server, "tasks", "describe", f"{PARENT}/queues/described/tasks/t").stdout
    assert first == second
    basic = yaml.safe_load(first)
    assert list(basic) == sorted(basic)
    assert list(basic["httpRequest"]["headers"]) == sorted(basic["httpRequest"]["headers"])
    assert "body" not in basic["httpRequest"] and basic["view"] == "BASIC"
    assert "secret" not in first and "c2VjcmV0" not in first
    full = yaml.safe_load(
        cli(server, "tasks", "describe", "t", "--queue", "described", "--response-view", "full").stdout
    )
    assert full["httpRequest"]["body"] == "c2VjcmV0"
    assert "''" not in first and "{}" not in first


def test_list_flags_and_formats(server: ServerProcess) -> None:
    paused_queue(server, "listed")
    for name in ("b", "c", "a"):
        cli(
            server,
            "tasks",
            "create-http-task",
            name,
            "--queue",
            "listed",
            "--url",
            f"https://example.com/{name}",
        )
    cli(server, "tasks", "create-app-engine-task", "d", "--queue", "listed")
    base = ("tasks", "list", "--queue", "listed")
    value = cli(
        server,
        *base,
        "--sort-by",
        "~name",
        "--limit",
        "2",
        "--page-size",
        "1",
        "--format",
        "value(name.basename())",
    )
    assert value.stdout == "d\nc\n"
    csv = cli(
        server,
        *base,
        "--filter",
        "httpRequest.url~/[ab]$",
        "--sort-by",
        "name",
        "--format",
        "csv(name.basename(),httpRequest.url)",
    )
    assert csv.stdout == "task_name,url\na,https://example.com/a\nb,https://example.com/b\n"
    headless = cli(
        server,
        *base,
        "--filter",
        "NOT httpRequest:*",
        "--format",
        "table[no-heading](name.basename(),tasktype())",
    )
    assert headless.stdout == "d  app-engine\n"
    uris = cli(server, *base, "--uri", "--limit", "1", "--sort-by", "name").stdout
    assert uris == f"{server.rest_url}/v2/{PARENT}/queues/listed/tasks/a\n"
    assert cli(server, *base, "--format", "none").stdout == ""
    as_yaml = list(yaml.safe_load_all(cli(server, *base, "--format", "yaml", "--limit", "2").stdout))
    assert len(as_yaml) == 2 and all(doc["name"].startswith(PARENT) for doc in as_yaml)
    nothing = ("--filter", "name:nothing-like-this")
    empty = cli(server, *base, *nothing)
    assert (empty.stdout, empty.stderr) == ("", "Listed 0 items.\n")
    silent = cli(server, *base, *nothing, "--format", "value(name)")
    assert (silent.stdout, silent.stderr) == ("", "")
    assert cli(server, *base, *nothing, "--format", "json").stdout == "[]\n"
    queues = cli(
        server,
        "queues",
        "list",
        "--filter",
        "state=PAUSED AND name:listed",
        "--format",
        "value(name.basename(),state)",
    )
    assert queues.stdout == "listed\tPAUSED\n"
    one = cli(server, "queues", "list", "--filter", "name:listed", "--page-size", "1", "--uri")
    assert one.stdout == f"{server.rest_url}/v2/{PARENT}/queues/listed\n"
    located = cli(server, "locations", "list", "--page-size", "1", "--limit", "1", "--format", "value(name)")
    assert located.stdout == f"{PARENT}\n"
    bad = cli(server, *base, "--format", "value()", ok=False)
    assert bad.returncode == 2 and "--format" in bad.stderr


def test_tasks_list_has_gcloud_columns_and_queues_list_spells_unlimited(server: ServerProcess) -> None:
    cli(
        server,
        "queues",
        "create",
        "columns",
        "--max-attempts",
        "unlimited",
        "--max-dispatches-per-second",
        "0.5",
    )
    cli(server, "queues", "pause", "columns")
    cli(server, "tasks", "create-http-task", "h", "--queue", "columns", "--url", "https://example.com/")
    table = cli(server, "tasks", "list", "--queue", "columns").stdout.splitlines()
    assert table[0].split() == [
        "TASK_NAME",
        "TYPE",
        "CREATE_TIME",
        "SCHEDULE_TIME",
        "DISPATCH_ATTEMPTS",
        "RESPONSE_ATTEMPTS",
        "LAST_ATTEMPT_STATUS",
    ]
    assert table[1].split()[:2] == ["h", "http"] and table[1].split()[4:] == ["0", "0", "Unknown"]
    rows = [line.split() for line in cli(server, "queues", "list").stdout.splitlines()]
    (row,) = [r for r in rows if r[0] == "columns"]
    assert row[:5] == ["columns", "PAUSED", "1000", "0.5", "unlimited"]


def test_full_task_names_need_no_queue(server: ServerProcess) -> None:
    paused_queue(server, "named")
    http_task(server, "named", "t")
    full = f"{PARENT}/queues/named/tasks/t"
    assert yaml.safe_load(cli(server, "tasks", "run", full).stdout)["name"] == full
    assert cli(server, "tasks", "delete", full).stderr == "Deleted task [t].\n"
    missing = cli(server, "tasks", "describe", "t", ok=False)
    assert missing.returncode == 2 and "Give --queue, or the task's full name" in missing.stderr


def test_project_comes_from_flag_then_opentasks_then_cloudsdk(server: ServerProcess) -> None:
    cli(server, "queues", "create", "whose", "--project", "from-flag", env=environment(server))
    show = ("queues", "list", "--format", "value(name)")
    both = environment(server, OPENTASKS_PROJECT="from-opentasks", CLOUDSDK_CORE_PROJECT="from-cloudsdk")
    cli(server, "queues", "create", "whose", env=both)
    cli(server, "queues", "create", "whose", env=environment(server, CLOUDSDK_CORE_PROJECT="from-cloudsdk"))
    for project in ("from-flag", "from-opentasks", "from-cloudsdk"):
        listed = cli(server, *show, "--project", project, env=environment(server)).stdout
        assert listed == f"projects/{project}/locations/us-central1/queues/whose\n"


def test_queue_settings_and_per_field_clears(server: ServerProcess) -> None:
    cli(
        server,
        "queues",
        "create",
        "cleared",
        "--log-sampling-ratio",
        "0.25",
        "--http-method-override",
        "put",
        "--http-header-override",
        "X-A: 1",
        "--http-oidc-service-account-email-override",
        "q@p.iam.gserviceaccount.com",
        "--http-oidc-token-audience-override",
        "https://audience.example",
    )

    def described() -> dict[str, object]:
        found: dict[str, object] = yaml.safe_load(
            cli(server, "queues", "describe", "cleared", "--no-stats").stdout
        )
        return found

    queue = described()
    assert queue["stackdriverLoggingConfig"] == {"samplingRatio": 0.25}
    cli(server, "queues", "update", "cleared", "--clear-http-method-override", "--clear-log-sampling-ratio")
    queue = described()
    assert "stackdriverLoggingConfig" not in queue
    target = queue["httpTarget"]
    assert isinstance(target, dict) and "httpMethod" not in target
    assert target["headerOverrides"] == [{"header": {"key": "X-A", "value": "1"}}]
    assert target["oidcToken"]["audience"] == "https://audience.example"
    cli(server, "queues", "update", "cleared", "--clear-http-oidc-service-account-email-override")
    assert "oidcToken" not in described()["httpTarget"]  # type: ignore[operator]  # a token without its account
    cli(server, "queues", "update", "cleared", "--clear-http-header-override")
    assert "httpTarget" not in described()
    both = cli(server, "queues", "update", "cleared", "--max-attempts", "3", "--clear-max-attempts", ok=False)
    assert both.returncode == 2 and "cannot be given together" in both.stderr


def test_http_task_flags_and_the_schedule_time_help_example(server: ServerProcess) -> None:
    paused_queue(server, "timed")
    example = SCHEDULE_TIME_HELP.split("such as ", 1)[1].split(" ", 1)[0]
    assert example in cli(server, "tasks", "create-http-task", "--help").stdout.replace("\n", " ")
    for index, when in enumerate([example, "+10m", "+PT1H"]):
        cli(
            server,
            "tasks",
            "create-http-task",
            f"t{index}",
            "--queue",
            "timed",
            "--url",
            "https://example.com/",
            "--schedule-time",
            when,
        )
    oauth = json.loads(
        cli(
            server,
            "tasks",
            "create-http-task",
            "--queue",
            "timed",
            "--url",
            "https://example.com/",
            "--oauth-service-account-email",
            "t@p.iam.gserviceaccount.com",
            "--oauth-token-scope",
            "scope-x",
            "--format",
            "json",
        ).stdout
    )
    assert oauth["httpRequest"]["oauthToken"] == {
        "serviceAccountEmail": "t@p.iam.gserviceaccount.com",
        "scope": "scope-x",
    }
    bad = cli(
        server,
        "tasks",
        "create-http-task",
        "--queue",
        "timed",
        "--url",
        "https://x/",
        "--schedule-time",
        "soon",
        ok=False,
    )
    assert bad.returncode == 2 and "'--schedule-time'" in bad.stderr


def test_buffer_iam_locations_and_cmek(server: ServerProcess, tmp_path: Path) -> None:
    cli(
        server, "queues", "create", "buffered", "--http-uri-override", "scheme:https,host:example.com,path:/b"
    )
    cli(server, "queues", "pause", "buffered")
    buffered = cli(
        server,
        "tasks",
        "buffer",
        "b1",
        "--queue",
        "buffered",
        "--body-content",
        "{}",
        "--format",
        "value(name)",
    )
    assert buffered.stdout == f"{PARENT}/queues/buffered/tasks/b1\n"
    assert buffered.stderr == "Buffered task in queue [us-central1/buffered].\n"
    member, role = "user:ada@example.com", "roles/cloudtasks.enqueuer"
    added = cli(server, "queues", "add-iam-policy-binding", "buffered", "--member", member, "--role", role)
    assert yaml.safe_load(added.stdout)["bindings"] == [{"members": [member], "role": role}]
    assert added.stderr == "Updated IAM policy for queue [buffered].\n"
    policy = json.loads(cli(server, "queues", "get-iam-policy", "buffered", "--format", "json").stdout)
    assert policy["bindings"] == [{"members": [member], "role": role}]
    cli(server, "queues", "remove-iam-policy-binding", "buffered", "--member", member, "--role", role)
    again = cli(
        server,
        "queues",
        "remove-iam-policy-binding",
        "buffered",
        "--member",
        member,
        "--role",
        role,
        ok=False,
    )
    assert again.returncode == 1 and "not found" in again.stderr
    assert "bindings" not in yaml.safe_load(cli(server, "queues", "get-iam-policy", "buffered").stdout)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(f"bindings:\n- members: [{member}]\n  role: {role}\n")
    replaced = cli(server, "queues", "set-iam-policy", "buffered", str(policy_file), "--format", "json")
    assert json.loads(replaced.stdout)["bindings"] == [{"members": [member], "role": role}]
    assert replaced.stderr == "Updated IAM policy for queue [buffered].\n"
    assert cli(server, "locations", "list", "--format", "value(locationId)").stdout == "us-central1\n"
    location = yaml.safe_load(cli(server, "locations", "describe", "us-central1").stdout)
    assert location["name"] == PARENT
    assert yaml.safe_load(cli(server, "cmek-config", "describe").stdout) == {"name": f"{PARENT}/cmekConfig"}
    cli(server, "cmek-config", "update", "--clear-kms-key")
    refused = cli(server, "cmek-config", "update", "--kms-key-name", "k", "--kms-keyring", "r", ok=False)
    assert refused.returncode == 1 and refused.stderr.startswith("ERROR: (UNIMPLEMENTED)")


def test_destructive_commands_ask_on_a_terminal(server: ServerProcess) -> None:
    paused_queue(server, "guarded")
    declined = on_terminal(server, "n\n", "queues", "delete", "guarded")
    assert declined.returncode == 1, declined.stderr
    assert "Are you sure you want to delete: [us-central1/guarded]" in declined.stderr
    assert "--queue-tombstone" in declined.stderr
    assert declined.stderr.endswith(
        "Are you sure you want to delete: [us-central1/guarded] (Y/n)?  \nERROR: Aborted by user.\n"
    )
    cli(server, "queues", "describe", "guarded")  # still there
    for name in ("a1", "a2", "keep"):
        http_task(server, "guarded", name)
    purge = on_terminal(server, "n\n", "queues", "purge", "guarded")
    assert purge.returncode == 1 and "Are you sure you want to purge: [us-central1/guarded]" in purge.stderr
    deleted = on_terminal(server, "y\n", "tasks", "delete", "--queue", "guarded", "--filter", "name~/a")
    assert deleted.returncode == 0, deleted.stderr
    assert "2 tasks of [us-central1/guarded] match" in deleted.stderr
    remaining = cli(server, "tasks", "list", "--queue", "guarded", "--format", "value(name.basename())")
    assert remaining.stdout == "keep\n"
    purged = on_terminal(server, "", "queues", "purge", "guarded", "-q")
    assert (purged.returncode, purged.stderr) == (0, "Purged queue [us-central1/guarded].\n")
    quiet = on_terminal(server, "", "-q", "queues", "delete", "guarded")  # -q also goes first
    assert quiet.returncode == 0
    assert quiet.stderr == "Deleted queue [us-central1/guarded].\n"


def test_bad_values_and_wrong_endpoints_are_one_line(server: ServerProcess) -> None:
    env = {
        k: v
        for k, v in environment(server).items()
        if k not in ("CLOUD_TASKS_EMULATOR_HOST", "OPENTASKS_REST_URL")
    }
    bad = cli(server, "queues", "create", "x", "--max-attempts", "five", ok=False)
    assert bad.returncode == 2 and "Invalid value for '--max-attempts': 'five'" in bad.stderr
    url = cli(server, "queues", "list", "--endpoint", "https://127.0.0.1:1/v2", ok=False, env=env)
    assert url.returncode == 2 and "is not host:port: --endpoint takes the host and port" in url.stderr
    for shared in (server.rest_url, f"127.0.0.1:{server.http_port}"):  # the HTTP port serves gRPC too
        listed = cli(server, "queues", "list", "--endpoint", shared, env=env)
        assert listed.returncode == 0, listed.stderr
        history = cli(server, "tasks", "failed", "--queue", "none", "--endpoint", shared, env=env)
        assert history.returncode == 0, history.stderr  # its REST calls go to the same port
    port = cli(server, "queues", "create", "x", "--http-uri-override", "port:eighty", ok=False)
    assert port.returncode == 2 and "the port is a number" in port.stderr


def test_a_client_call_does_not_import_the_client_library(server: ServerProcess, tmp_path: Path) -> None:
    """What keeps `opentasks queues list` fast (bench/cli_startup.py measures it)."""
    probe = (
        "import sys\n"
        "from opentasks.cli import main\n"
        "try:\n"
        "    main(['queues', 'list', '--format', 'none'])\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "slow = ('google.cloud.tasks_v2', 'google.api_core', 'opentasks.config', 'aiohttp')\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(slow))\n"
        "print(heavy)\n"
    )
    env = environment(server, XDG_CACHE_HOME=str(tmp_path))
    python = str(Path(OPENTASKS).with_name("python"))
    first = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert first.stdout.strip() != "[]"  # the first call fills the cache from the package
    assert list(tmp_path.glob("opentasks/cloudtasks-*.desc"))
    second = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert second.stdout.strip() == "[]"


def test_a_command_waits_briefly_for_a_server_that_is_starting() -> None:
    """As in a script that starts the server in the background and then calls it."""
    starting = ServerProcess("memory://")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENTASKS_", "CLOUDSDK_"))}
    command = [OPENTASKS, "queues", "list", "--endpoint", starting.address, "--format", "json"]
    waiting = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with starting:
        out, err = waiting.communicate(timeout=60)
    assert (waiting.returncode, out, err) == (0, "[]\n", "")
