"""App Engine routing, queue-level targets, BufferTask, signed requests, API authentication and
the dispatch target policy, through a real server and real handler processes."""

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import google.auth.transport.requests
import grpc
import jwt
import pytest
import requests
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.oauth2 import id_token
from google.protobuf import field_mask_pb2

import opentasks
from opentasks.testing import OPENTASKS, ServerProcess
from opentasks.verify import TokenVerifier
from tests.integration.handlers import HandlerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/secure/locations/us-central1"
SA = "worker@secure.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def default_app() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


@pytest.fixture(scope="module")
def worker_app() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    default_app: HandlerProcess, worker_app: HandlerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("secure")
    with ServerProcess(
        "memory://",
        "--app-engine-url",
        default_app.url(""),
        "--app-engine-service",
        f"worker={worker_app.url('')}",
        "--keys-dir",
        str(folder / "keys"),
        "--oauth-token",
        f"{SA}=opaque-oauth-token",
        "--allowed-host",
        "opentasks",
        log_path=folder / "server.log",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> tasks_v2.CloudTasksClient:
    return server.client()


def make_queue(client: tasks_v2.CloudTasksClient, queue_id: str, **fields: object) -> str:
    name = f"{PARENT}/queues/{queue_id}"
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, **fields))
    return name


def test_app_engine_tasks_reach_their_service(
    client: tasks_v2.CloudTasksClient, default_app: HandlerProcess, worker_app: HandlerProcess
) -> None:
    queue = make_queue(client, "appengine")
    to_worker = client.create_task(
        parent=queue,
        task={
            "app_engine_http_request": {
                "relative_uri": "/process?id=7",
                "app_engine_routing": {"service": "worker"},
                "body": b"payload",
            }
        },
    )
    assert to_worker.app_engine_http_request.app_engine_routing.host == f"127.0.0.1:{worker_app.port}"
    client.create_task(parent=queue, task={"app_engine_http_request": {"relative_uri": "/home"}})
    [at_worker] = worker_app.take(1)
    [at_default] = default_app.take(1)
    assert (at_worker.path, at_worker.body) == ("/process?id=7", b"payload")
    # What a Flask worker written for App Engine checks before doing anything.
    assert at_worker.header("X-AppEngine-TaskName") == to_worker.name.rsplit("/", 1)[1]
    assert at_worker.header("X-AppEngine-QueueName") == "appengine"
    assert at_worker.header("User-Agent") == "AppEngine-Google; (+http://code.google.com/appengine)"
    assert at_worker.header("Content-Type") == "application/octet-stream"
    assert at_default.path == "/home"


def test_queue_level_override_retargets_waiting_tasks(
    client: tasks_v2.CloudTasksClient, default_app: HandlerProcess, worker_app: HandlerProcess
) -> None:
    queue = make_queue(client, "retarget")
    client.pause_queue(name=queue)
    client.create_task(parent=queue, task={"http_request": {"url": default_app.url("/jobs/1?x=y")}})
    override = {"uri_override": {"scheme": "HTTP", "host": "127.0.0.1", "port": worker_app.port}}
    client.update_queue(
        queue=tasks_v2.Queue(name=queue, http_target=override),
        update_mask=field_mask_pb2.FieldMask(paths=["http_target"]),
    )
    client.resume_queue(name=queue)
    [received] = worker_app.take(1)
    assert received.path == "/jobs/1?x=y"
    assert default_app.nothing_more(0.3)


def test_buffer_task_over_rest(
    server: ServerProcess, client: tasks_v2.CloudTasksClient, worker_app: HandlerProcess
) -> None:
    override = {"uri_override": {"scheme": "HTTP", "host": "127.0.0.1", "port": worker_app.port}}
    override["uri_override"]["path_override"] = {"path": "/buffered"}
    queue = make_queue(client, "buffer", http_target=override)
    request = urllib.request.Request(
        f"{server.rest_url}/v2/{queue}/tasks/order-1:buffer",
        data=b'{"order": 1}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        created = json.load(response)
    assert created["task"]["name"] == f"{queue}/tasks/order-1"
    [received] = worker_app.take(1)
    assert (received.method, received.path, received.body) == ("POST", "/buffered", b'{"order": 1}')
    assert received.header("Content-Type") == "application/json"


def test_oidc_tokens_verify_with_google_auth_pyjwt_and_the_helper(
    server: ServerProcess, client: tasks_v2.CloudTasksClient, worker_app: HandlerProcess
) -> None:
    queue = make_queue(client, "signed")
    url = worker_app.url("/signed")
    client.create_task(
        parent=queue,
        task={"http_request": {"url": url, "oidc_token": {"service_account_email": SA}}},
    )
    [received] = worker_app.take(1)
    token = (received.header("Authorization") or "").removeprefix("Bearer ")
    with requests.Session() as http:
        claims = id_token.verify_token(  # type: ignore[no-untyped-call]
            token,
            google.auth.transport.requests.Request(http),  # type: ignore[no-untyped-call]
            audience=url,
            certs_url=f"{server.rest_url}/oauth2/v1/certs",
        )
    assert (claims["email"], claims["email_verified"], claims["iss"]) == (SA, True, server.rest_url)
    jwks = jwt.PyJWKClient(f"{server.rest_url}/oauth2/v3/certs")
    key = jwks.get_signing_key_from_jwt(token)
    decoded = jwt.decode(token, key.key, algorithms=["RS256"], audience=url, issuer=server.rest_url)
    assert decoded["sub"] == claims["sub"]
    verifier = TokenVerifier(audience=url, issuer=server.rest_url)
    assert verifier.verify(f"Bearer {token}").email == SA
    discovery_url = f"{server.rest_url}/.well-known/openid-configuration"
    with urllib.request.urlopen(discovery_url, timeout=10) as response:
        discovery = json.load(response)
    assert discovery["jwks_uri"] == f"{server.rest_url}/oauth2/v3/certs"


def test_oauth_tokens_are_the_configured_bearer(
    client: tasks_v2.CloudTasksClient, worker_app: HandlerProcess
) -> None:
    queue = make_queue(client, "oauth")
    task = {"http_request": {"url": worker_app.url("/oauth"), "oauth_token": {"service_account_email": SA}}}
    client.create_task(parent=queue, task=task)
    [received] = worker_app.take(1)
    assert received.header("Authorization") == "Bearer opaque-oauth-token"


def test_metadata_server_targets_are_refused(client: tasks_v2.CloudTasksClient) -> None:
    queue = make_queue(client, "ssrf")
    with pytest.raises(exceptions.InvalidArgument, match=r"169\.254\.169\.254 is not allowed"):
        client.create_task(
            parent=queue, task={"http_request": {"url": "http://169.254.169.254/computeMetadata/v1/"}}
        )


def test_api_tokens_are_required_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "server.log"
    secret, viewer = "s3cret-admin-token", "v1ewer-token"
    with ServerProcess(
        "memory://", "--api-token", secret, "--api-read-only-token", viewer, log_path=log
    ) as server:
        with pytest.raises(exceptions.Unauthenticated, match="missing an API credential"):
            server.client().list_queues(parent=PARENT)
        with pytest.raises(exceptions.Unauthenticated, match="invalid authentication credentials"):
            opentasks.client(server.address, api_token="wrong").list_queues(parent=PARENT)
        admin = opentasks.client(server.address, api_token=secret)
        admin.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/q"})
        monkeypatch.setenv("OPENTASKS_REST_URL", server.rest_url)
        rest = opentasks.client(server.address, transport="rest", api_token=secret)
        assert [q.name for q in rest.list_queues(parent=PARENT)] == [f"{PARENT}/queues/q"]
        rest.transport.close()
        read_only = opentasks.client(server.address, api_token=viewer)
        assert read_only.get_queue(name=f"{PARENT}/queues/q").name == f"{PARENT}/queues/q"
        with pytest.raises(exceptions.PermissionDenied, match="read-only"):
            read_only.delete_queue(name=f"{PARENT}/queues/q")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.rest_url}/v2/{PARENT}/queues", timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        with urllib.request.urlopen(f"{server.rest_url}/oauth2/v3/certs", timeout=10) as keys:
            assert json.load(keys)["keys"]  # the public keys need no credential
        cli = subprocess.run(
            [OPENTASKS, "queues", "list", "--endpoint", server.address, "--project", "secure"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"OPENTASKS_API_TOKEN": secret, "PATH": ""},
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert "q" in cli.stdout
        with grpc.insecure_channel(server.address) as raw, pytest.raises(grpc.RpcError) as caught:
            stub = raw.unary_unary("/google.cloud.tasks.v2.CloudTasks/ListQueues")
            stub(b"", metadata=[("authorization", "Bearer nope")])
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert secret not in log.read_text()


def test_a_public_bind_needs_authentication() -> None:
    run = subprocess.run(
        [OPENTASKS, "serve", "--host", "0.0.0.0", "--storage", "memory://", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "needs API authentication: set --api-token" in run.stderr
    assert "--insecure-no-auth" in run.stderr


@pytest.mark.parametrize(
    "call",
    [
        ("POST", "/v2/{parent}/queues", '{"name": "{parent}/queues/forged"}'),
        ("POST", "/v2/{queue}/tasks", '{"task": {"httpRequest": {"url": "http://127.0.0.1:9/"}}}'),
        ("POST", "/v2/{queue}/tasks/forged:buffer", "a form post"),
        ("POST", "/v2/{queue}:pause", ""),
        ("DELETE", "/v2/{queue}", ""),
        ("GET", "/v2/{queue}/tasks", ""),
        ("POST", "/opentasks/v1/{queue}/finishedTasks:redrive", '{"all": true}'),
        ("GET", "/opentasks/v1/{queue}/finishedTasks", ""),
        ("GET", "/v2beta3/{queue}", ""),
    ],
)
@pytest.mark.parametrize(
    "browser",
    [
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},  # a form or fetch() elsewhere
        {"Origin": "http://evil.example"},  # a browser without Sec-Fetch-*
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"},
        {"Origin": "null"},  # a sandboxed frame
        # DNS rebinding: the page's own name resolves here; to its browser it is same-origin.
        {"Host": "evil.example:8124", "Origin": "http://evil.example:8124", "Sec-Fetch-Site": "same-origin"},
        {"Host": "evil.example:8124"},  # over http a browser sends no Sec-Fetch-*, a GET no Origin
    ],
    ids=["cross-site", "origin-only", "same-site", "null-origin", "rebound", "rebound-get"],
)
def test_browsers_of_other_sites_cannot_call_the_tokenless_api(
    server: ServerProcess,
    client: tasks_v2.CloudTasksClient,
    call: tuple[str, str, str],
    browser: dict[str, str],
) -> None:
    """Without tokens, a page on another site could otherwise post to localhost (a plain form:
    no preflight) or rebind its name here: refused with 403 PERMISSION_DENIED, nothing done."""
    method, path, body = call
    queue = f"{PARENT}/queues/target"
    try:
        client.get_queue(name=queue)
    except exceptions.NotFound:
        make_queue(client, "target")
    url = server.rest_url + path.replace("{parent}", PARENT).replace("{queue}", queue)
    headers = {"Content-Type": "text/plain", **browser}
    answer = requests.request(method, url, data=body.replace("{parent}", PARENT), headers=headers, timeout=10)
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert "--allowed-host evil.example" in error["message"] or "other sites are refused" in error["message"]
    assert client.get_queue(name=queue).state == tasks_v2.Queue.State.RUNNING
    assert list(client.list_tasks(parent=queue)) == []
    names = [q.name for q in client.list_queues(parent=PARENT)]
    assert f"{PARENT}/queues/forged" not in names


def test_same_origin_browsers_and_allowed_names_are_served(
    server: ServerProcess, client: tasks_v2.CloudTasksClient
) -> None:
    """What the refusals must not catch: a page served by this server at its IP address, and
    programs calling it by a name given with --allowed-host, as in a compose file."""
    queue = make_queue(client, "allowed")
    same_origin = {"Origin": server.rest_url, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert requests.get(f"{server.rest_url}/v2/{queue}", headers=same_origin, timeout=10).status_code == 200
    named = {"Host": "OpenTasks:8124", "Content-Type": "application/json"}
    answer = requests.post(f"{server.rest_url}/v2/{queue}:pause", data="{}", headers=named, timeout=10)
    assert answer.status_code == 200, answer.text
    assert client.get_queue(name=queue).state == tasks_v2.Queue.State.PAUSED
    other = {"Host": "tasks.internal:8124", "Content-Type": "application/json"}
    answer = requests.post(f"{server.rest_url}/v2/{queue}:resume", data="{}", headers=other, timeout=10)
    assert answer.status_code == 403
    assert "start it with --allowed-host tasks.internal" in answer.json()["error"]["message"]
    assert client.get_queue(name=queue).state == tasks_v2.Queue.State.PAUSED
