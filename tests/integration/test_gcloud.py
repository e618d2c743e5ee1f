"""Google's own `gcloud tasks` commands, run as subprocesses against a real server's REST port.

Each test checks gcloud's output and the server's state (read back with the official client over
gRPC); `run` and `buffer` are checked at a real handler. Skipped where gcloud is not installed.
"""

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.iam.v1 import policy_pb2
from google.protobuf import json_format

from opentasks.clock import SystemClock
from opentasks.testing import ServerProcess
from tests.integration.handlers import HandlerProcess

GCLOUD = shutil.which("gcloud")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(GCLOUD is None, reason="the Google Cloud SDK's gcloud is not on the PATH"),
]
PROJECT = "gcloud-project"
PARENT = f"projects/{PROJECT}/locations/us-central1"
WHERE = ("--location=us-central1",)
ACCOUNT = f"runner@{PROJECT}.iam.gserviceaccount.com"
ENQUEUER, VIEWER = "cloudtasks.enqueuer", "cloudtasks.viewer"
# Any connection gcloud tried to make to Google would go through this dead proxy and fail.
DEAD_PROXY = "http://127.0.0.1:9"
# Python's and json_format's own words, which must never reach gcloud's user.
PYTHON_WORDING = ("Traceback", "literal", "int()", "does not match format", "Failed to parse", "NoneType")


@dataclass(frozen=True)
class Gcloud:
    """The real gcloud, configured for one server; calls return the finished process."""

    env: dict[str, str]

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        assert GCLOUD is not None
        run = subprocess.run(
            [GCLOUD, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if ok:
            assert run.returncode == 0, f"gcloud {' '.join(args)} failed: {run.stderr}"
        else:
            assert run.returncode != 0, f"gcloud {' '.join(args)} succeeded: {run.stdout}"
            for phrase in PYTHON_WORDING:
                assert phrase not in run.stderr, run.stderr
        return run

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--format=json").stdout)

    def parallel(
        self, calls: Sequence[Sequence[str]], *, ok: bool = True
    ) -> list[subprocess.CompletedProcess[str]]:
        """Independent calls at once (gcloud takes about a second to start)."""
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(lambda args: self(*args, ok=ok), calls))


def gcloud_env(server: ServerProcess, config_dir: Path) -> dict[str, str]:
    """The settings docs/gcloud.md gives, plus a private config folder and no way out."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLOUDSDK_")}
    env |= {
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS": f"{server.rest_url}/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_PROJECT": PROJECT,
        "CLOUDSDK_CONFIG": str(config_dir),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "true",
    }
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[proxy] = DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@pytest.fixture(scope="module")
def gcloud(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Gcloud:
    return Gcloud(gcloud_env(server, tmp_path_factory.mktemp("gcloud-config")))


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


def rfc3339(after: timedelta) -> str:
    return (SystemClock().now() + after).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_queue(client: tasks_v2.CloudTasksClient, queue_id: str, **fields: Any) -> str:
    name = f"{PARENT}/queues/{queue_id}"
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, **fields))
    return name


def queue_command(gcloud: Gcloud, verb: str, queue_id: str, *flags: str) -> str:
    """``gcloud tasks queues VERB QUEUE``; what it said on stderr."""
    return gcloud("tasks", "queues", verb, queue_id, *WHERE, *flags).stderr


def as_json(message: Any) -> Any:
    """A proto-plus message in the REST API's JSON form."""
    return json_format.MessageToDict(type(message).pb(message))


def test_queue_create_and_update_with_flags(gcloud: Gcloud, client: tasks_v2.CloudTasksClient) -> None:
    created = queue_command(
        gcloud, "create", "g-queue",
        "--max-dispatches-per-second=5", "--max-concurrent-dispatches=3", "--max-attempts=4",
        "--min-backoff=1s", "--max-backoff=10s", "--max-doublings=2", "--max-retry-duration=100s",
        "--http-uri-override=scheme:https,host:example.com,port:8443,path:/p,query:a=b,mode:always",
        "--http-method-override=PUT", "--http-header-override=X-A:1", "--log-sampling-ratio=0.25",
        f"--http-oidc-service-account-email-override={ACCOUNT}", "--http-oidc-token-audience-override=aud",
    )  # fmt: skip
    assert "Created queue [us-central1/g-queue]." in created
    queue = client.get_queue(name=f"{PARENT}/queues/g-queue")
    limits, retry, target = queue.rate_limits, queue.retry_config, queue.http_target
    assert (limits.max_dispatches_per_second, limits.max_concurrent_dispatches) == (5, 3)
    assert (retry.max_attempts, retry.max_doublings) == (4, 2)
    assert [retry.min_backoff, retry.max_backoff, retry.max_retry_duration] == [
        timedelta(seconds=s) for s in (1, 10, 100)
    ]
    override = target.uri_override
    assert (override.scheme, override.host, override.port) == (override.Scheme.HTTPS, "example.com", 8443)
    assert (override.path_override.path, override.query_override.query_params) == ("/p", "a=b")
    assert override.uri_override_enforce_mode == override.UriOverrideEnforceMode.ALWAYS
    assert target.http_method == tasks_v2.HttpMethod.PUT
    assert [(h.header.key, h.header.value) for h in target.header_overrides] == [("X-A", "1")]
    assert (target.oidc_token.service_account_email, target.oidc_token.audience) == (ACCOUNT, "aud")
    assert queue.stackdriver_logging_config.sampling_ratio == 0.25

    updated = queue_command(
        gcloud, "update", "g-queue", "--max-dispatches-per-second=8", "--max-attempts=9",
        "--routing-override=service:worker,version:v2",
    )  # fmt: skip
    assert "Updated queue [us-central1/g-queue]." in updated
    queue = client.get_queue(name=f"{PARENT}/queues/g-queue")
    limits, retry, routing = queue.rate_limits, queue.retry_config, queue.app_engine_routing_override
    assert (limits.max_dispatches_per_second, limits.max_concurrent_dispatches) == (8, 3)
    assert (retry.max_attempts, retry.min_backoff) == (9, timedelta(seconds=1))
    assert (routing.service, routing.version) == ("worker", "v2")
    assert queue.http_target.uri_override.host == "example.com"
    assert gcloud.json("tasks", "queues", "describe", "g-queue", *WHERE) == as_json(queue)

    queue_command(
        gcloud, "update", "g-queue", "--clear-max-attempts", "--clear-max-concurrent-dispatches",
        "--clear-routing-override", "--clear-log-sampling-ratio",
    )  # fmt: skip
    queue = client.get_queue(name=f"{PARENT}/queues/g-queue")
    assert (queue.retry_config.max_attempts, queue.rate_limits.max_concurrent_dispatches) == (100, 1000)
    assert "app_engine_routing_override" not in queue and "stackdriver_logging_config" not in queue
    assert queue.rate_limits.max_dispatches_per_second == 8 and queue.retry_config.max_doublings == 2


def test_queue_pause_resume_purge_list_delete(gcloud: Gcloud, client: tasks_v2.CloudTasksClient) -> None:
    name = make_queue(client, "g-states")
    assert "Paused queue [us-central1/g-states]." in queue_command(gcloud, "pause", "g-states")
    assert client.get_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    assert "Resumed queue [us-central1/g-states]." in queue_command(gcloud, "resume", "g-states")
    assert client.get_queue(name=name).state == tasks_v2.Queue.State.RUNNING

    later = SystemClock().now() + timedelta(hours=1)
    client.create_task(parent=name, task={"http_request": {"url": "https://a.test/"}, "schedule_time": later})
    purged, listed = gcloud.parallel(
        [
            ("tasks", "queues", "purge", "g-states", *WHERE),
            ("tasks", "queues", "list", *WHERE, "--format=json"),
        ]
    )
    assert "Purged queue [us-central1/g-states]." in purged.stderr
    assert list(client.list_tasks(parent=name)) == []
    assert name in [queue["name"] for queue in json.loads(listed.stdout)]
    assert "Deleted queue [us-central1/g-states]." in queue_command(gcloud, "delete", "g-states")
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=name)
    missing = gcloud("tasks", "queues", "describe", "g-states", *WHERE, ok=False)
    assert "NOT_FOUND: Queue does not exist." in missing.stderr


def test_updating_one_http_override_keeps_the_others(
    gcloud: Gcloud, client: tasks_v2.CloudTasksClient
) -> None:
    target = {
        "uri_override": {"host": "example.com", "path_override": {"path": "/p"}},
        "http_method": tasks_v2.HttpMethod.PUT,
        "header_overrides": [{"header": {"key": "X-A", "value": "1"}}],
    }
    name = make_queue(client, "g-http-target", http_target=target)
    gcloud("tasks", "queues", "update", "g-http-target", *WHERE, "--http-method-override=GET")
    http_target = client.get_queue(name=name).http_target
    assert http_target.http_method == tasks_v2.HttpMethod.GET
    assert (http_target.uri_override.host, len(http_target.header_overrides)) == ("example.com", 1)


def full_task(client: tasks_v2.CloudTasksClient, name: str) -> tasks_v2.Task:
    return client.get_task(request={"name": name, "response_view": tasks_v2.Task.View.FULL})


def create_tasks(gcloud: Gcloud, handler: HandlerProcess, body_file: Path, later: str) -> None:
    """Three tasks in queue g-tasks, made at once with most of the create flags."""
    on_queue = ("--queue=g-tasks", *WHERE, f"--schedule-time={later}")
    created = gcloud.parallel(
        [
            (
                "tasks", "create-http-task", "t-file", *on_queue, f"--url={handler.url('/file')}",
                "--method=PUT", "--header=X-Foo:bar", "--header=Content-Type:application/json",
                f"--body-file={body_file}",
                f"--oidc-service-account-email={ACCOUNT}", "--oidc-token-audience=https://handler.example",
            ),
            (
                "tasks", "create-http-task", "t-content", *on_queue, f"--url={handler.url('/content')}",
                "--body-content=hello", f"--oauth-service-account-email={ACCOUNT}",
                "--oauth-token-scope=https://www.googleapis.com/auth/cloud-platform",
            ),
            (
                "tasks", "create-app-engine-task", "t-app", *on_queue, "--relative-uri=/work?x=1",
                "--routing=service:worker", "--method=PUT", "--header=X-Bar:baz", "--body-content=payload",
            ),
        ]
    )  # fmt: skip
    for run, task_id in zip(created, ("t-file", "t-content", "t-app"), strict=True):
        assert f"Created task [{PARENT}/queues/g-tasks/tasks/{task_id}]." in run.stderr


def test_create_list_describe_run_delete_tasks(
    gcloud: Gcloud, client: tasks_v2.CloudTasksClient, handler: HandlerProcess, tmp_path: Path
) -> None:
    queue = make_queue(client, "g-tasks")
    body_file = tmp_path / "body.json"
    body_file.write_bytes(b'{"greeting": "hello"}\n')
    later = rfc3339(timedelta(hours=1))
    create_tasks(gcloud, handler, body_file, later)

    file_task = full_task(client, f"{queue}/tasks/t-file")
    request, oidc = file_task.http_request, file_task.http_request.oidc_token
    assert (request.url, request.http_method, request.body) == (
        handler.url("/file"), tasks_v2.HttpMethod.PUT, body_file.read_bytes(),
    )  # fmt: skip
    assert (request.headers["X-Foo"], request.headers["Content-Type"]) == ("bar", "application/json")
    assert (oidc.service_account_email, oidc.audience) == (ACCOUNT, "https://handler.example")
    assert file_task.schedule_time.strftime("%Y-%m-%dT%H:%M:%SZ") == later
    content = full_task(client, f"{queue}/tasks/t-content").http_request
    assert (content.body, content.oauth_token.service_account_email) == (b"hello", ACCOUNT)
    assert content.oauth_token.scope == "https://www.googleapis.com/auth/cloud-platform"
    app = full_task(client, f"{queue}/tasks/t-app").app_engine_http_request
    assert (app.relative_uri, app.app_engine_routing.service, app.body) == ("/work?x=1", "worker", b"payload")
    assert (app.http_method, app.headers["X-Bar"]) == (tasks_v2.HttpMethod.PUT, "baz")

    on_queue = ("--queue=g-tasks", *WHERE, "--format=json")
    listed, basic, described = gcloud.parallel(
        [
            ("tasks", "list", *on_queue, "--page-size=1"),  # gcloud follows the page tokens
            ("tasks", "describe", "t-file", *on_queue),
            ("tasks", "describe", "t-file", *on_queue, "--response-view=full"),
        ]
    )
    names = sorted(task["name"] for task in json.loads(listed.stdout))
    assert names == [f"{queue}/tasks/{task_id}" for task_id in ("t-app", "t-content", "t-file")]
    assert "body" not in json.loads(basic.stdout)["httpRequest"]
    assert json.loads(described.stdout) == as_json(file_task)

    run, deleted = gcloud.parallel(
        [
            ("tasks", "run", "t-file", "--queue=g-tasks", *WHERE, "--format=json"),
            ("tasks", "delete", "t-content", "--queue=g-tasks", *WHERE),
        ]
    )
    ran = json.loads(run.stdout)
    assert ran["name"] == f"{queue}/tasks/t-file" and ran["dispatchCount"] == 1
    (received,) = handler.take(1)
    assert (received.method, received.path, received.body) == ("PUT", "/file", body_file.read_bytes())
    assert (received.header("X-Foo"), received.header("X-CloudTasks-TaskName")) == ("bar", "t-file")
    token = (received.header("Authorization") or "").removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["email"], claims["aud"]) == (ACCOUNT, "https://handler.example")

    assert "Deleted task [t-content]." in deleted.stderr
    with pytest.raises(exceptions.NotFound):
        client.get_task(name=f"{queue}/tasks/t-content")


def test_buffer_sends_a_task_to_the_queue_target(
    gcloud: Gcloud, client: tasks_v2.CloudTasksClient, handler: HandlerProcess
) -> None:
    override = {
        "scheme": "HTTP",
        "host": "127.0.0.1",
        "port": handler.port,
        "path_override": {"path": "/buffered"},
    }
    make_queue(client, "g-buffer", http_target={"uri_override": override})
    buffered = gcloud("tasks", "buffer", "--queue=g-buffer", *WHERE, "--task-id=b-1")
    assert "Buffered task in queue [us-central1/g-buffer]." in buffered.stderr
    (received,) = handler.take(1)
    assert (received.method, received.path) == ("POST", "/buffered")
    assert received.header("X-CloudTasks-QueueName") == "g-buffer"
    assert received.header("X-CloudTasks-TaskName") == "b-1"


def test_iam_policy_commands(gcloud: Gcloud, client: tasks_v2.CloudTasksClient, tmp_path: Path) -> None:
    name = make_queue(client, "g-iam")
    assert "bindings" not in gcloud.json("tasks", "queues", "get-iam-policy", "g-iam", *WHERE)
    for member, role in (("user:ada@example.com", ENQUEUER), (f"serviceAccount:{ACCOUNT}", VIEWER)):
        queue_command(gcloud, "add-iam-policy-binding", "g-iam", f"--member={member}", f"--role=roles/{role}")
    removed = gcloud.json(
        "tasks", "queues", "remove-iam-policy-binding", "g-iam", *WHERE,
        "--member=user:ada@example.com", f"--role=roles/{ENQUEUER}",
    )  # fmt: skip
    assert removed["bindings"] == [
        {"members": [f"serviceAccount:{ACCOUNT}"], "role": "roles/cloudtasks.viewer"}
    ]
    assert [(b.role, list(b.members)) for b in client.get_iam_policy(resource=name).bindings] == [
        ("roles/cloudtasks.viewer", [f"serviceAccount:{ACCOUNT}"])
    ]

    policy_file = tmp_path / "policy.json"
    policy_file.write_text(
        json.dumps({"bindings": [{"role": "roles/cloudtasks.admin", "members": ["user:bob@example.com"]}]})
    )
    gcloud("tasks", "queues", "set-iam-policy", "g-iam", str(policy_file), *WHERE)
    stored: policy_pb2.Policy = client.get_iam_policy(resource=name)
    described = gcloud.json("tasks", "queues", "get-iam-policy", "g-iam", *WHERE)
    assert described == json_format.MessageToDict(stored)
    assert [(b.role, list(b.members)) for b in stored.bindings] == [
        ("roles/cloudtasks.admin", ["user:bob@example.com"])
    ]


def test_locations(gcloud: Gcloud, client: tasks_v2.CloudTasksClient) -> None:
    client.create_queue(
        parent=f"projects/{PROJECT}/locations/europe-west1",
        queue={"name": f"projects/{PROJECT}/locations/europe-west1/queues/g-location"},
    )
    listed, described = gcloud.parallel(
        [
            ("tasks", "locations", "list", "--format=json"),
            ("tasks", "locations", "describe", "europe-west1", "--format=json"),
        ]
    )
    europe = {"name": f"projects/{PROJECT}/locations/europe-west1", "locationId": "europe-west1"}
    assert {**europe, "displayName": "europe-west1"} in json.loads(listed.stdout)
    assert json.loads(described.stdout).items() >= europe.items()


def test_beta_commands_use_v2beta3(gcloud: Gcloud, client: tasks_v2.CloudTasksClient) -> None:
    name = make_queue(client, "g-beta", rate_limits={"max_dispatches_per_second": 7})
    described = gcloud.json("beta", "tasks", "queues", "describe", "g-beta", *WHERE)
    assert (described["name"], described["rateLimits"]["maxDispatchesPerSecond"]) == (name, 7)


def test_refusals_are_cloud_tasks_errors(gcloud: Gcloud, client: tasks_v2.CloudTasksClient) -> None:
    make_queue(client, "g-errors")
    task = ("tasks", "create-http-task", "--queue=g-errors", *WHERE, "--url=https://example.com/")
    calls: list[tuple[tuple[str, ...], str]] = [
        (
            (*task, "--schedule-time=+PT1H"),
            "INVALID_ARGUMENT: Invalid value at 'task.schedule_time' "
            '(type.googleapis.com/google.protobuf.Timestamp), "+PT1H": Illegal timestamp format',
        ),
        ((*task, "--schedule-time=2030-1-2T3:4:5Z"), '"2030-1-2T3:4:5Z": Illegal timestamp format'),
        ((*task, f"--schedule-time={rfc3339(timedelta(days=40))}"), "is too far in the future"),
        (("tasks", "queues", "create", "g-errors", *WHERE), "ALREADY_EXISTS: Queue already exists"),
        (
            ("tasks", "queues", "create", "g-fast", *WHERE, "--max-dispatches-per-second=501"),
            "INVALID_ARGUMENT",
        ),
        (("tasks", "describe", "nothing", "--queue=g-errors", *WHERE), "NOT_FOUND"),
        (("alpha", "tasks", "queues", "list", *WHERE), "No Cloud Tasks v2beta2 method is served"),
    ]
    runs = gcloud.parallel([args for args, _ in calls], ok=False)
    for (args, expected), run in zip(calls, runs, strict=True):
        assert expected in run.stderr, (args, run.stderr)
    assert list(client.list_tasks(parent=f"{PARENT}/queues/g-errors")) == []
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=f"{PARENT}/queues/g-fast")


def test_a_server_that_requires_a_token_takes_gcloud_access_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token")
    with ServerProcess("memory://", "--api-token", "s3cret-token") as secured:
        env = gcloud_env(secured, tmp_path / "config")
        without = Gcloud(env)
        with_token = Gcloud(
            {key: value for key, value in env.items() if key != "CLOUDSDK_AUTH_DISABLE_CREDENTIALS"}
            | {"CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token_file)}
        )
        with ThreadPoolExecutor(max_workers=2) as pool:
            created = pool.submit(with_token, "tasks", "queues", "create", "g-secured", *WHERE)
            refused = pool.submit(without, "tasks", "queues", "list", *WHERE, ok=False)
        assert "Created queue [us-central1/g-secured]." in created.result().stderr
        assert "UNAUTHENTICATED: Request is missing an API credential." in refused.result().stderr
