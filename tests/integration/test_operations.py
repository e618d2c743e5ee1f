"""Operating a real server: backups while it writes, refusals at start-up, file modes, version."""

import json
import os
import sqlite3
import stat
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from unittest.mock import patch

import grpc
import pytest
from google.api_core import exceptions
from grpc_health.v1 import health_pb2, health_pb2_grpc

from opentasks.storage.sqlite_files import latest_schema
from opentasks.testing import OPENTASKS, ServerProcess

pytestmark = pytest.mark.integration
PARENT = "projects/ops/locations/us-central1"
QUEUE = f"{PARENT}/queues/backed-up"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENTASKS, *args], capture_output=True, text=True, timeout=timeout, check=False)


def serve(storage: str) -> subprocess.CompletedProcess[str]:
    """``opentasks serve`` that is expected to refuse to start."""
    return run("serve", "--storage", storage, "--port", "0", "--http-port", "0", timeout=30)


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("opentasks ")
    assert result.stdout.split()[1][0].isdigit()


def test_a_backup_taken_while_the_server_writes_holds_every_acknowledged_task(tmp_path: Path) -> None:
    database = tmp_path / "live.db"
    server = ServerProcess(f"sqlite:///{database}", "--no-dispatch", log_path=tmp_path / "server.log")
    with server:
        client = server.client()
        client.create_queue(parent=PARENT, queue={"name": QUEUE})
        acknowledged: list[str] = []
        lock = threading.Lock()
        enough, stop = threading.Event(), threading.Event()

        def producer(worker: int) -> None:
            own = server.client()
            for i in range(100_000):
                if stop.is_set():
                    return
                task = own.create_task(
                    parent=QUEUE,
                    task={
                        "name": f"{QUEUE}/tasks/w{worker}-{i}",
                        "http_request": {"url": "https://example.com/x", "body": b"x" * 2000},
                    },
                )
                with lock:
                    acknowledged.append(task.name)
                    if len(acknowledged) >= 1500:
                        enough.set()

        threads = [threading.Thread(target=producer, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        try:
            assert enough.wait(60), "the server never acknowledged 1500 creates"
            with lock:
                before = list(acknowledged)
            copy = tmp_path / "backup.db"
            result = run("backup", "--storage", f"sqlite:///{database}", "--step-pages", "16", str(copy))
            with lock:
                during = len(acknowledged) - len(before)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert result.returncode == 0, result.stderr
        assert "Backed up" in result.stdout
        assert during > 0, "the server was expected to keep writing during the backup"
        # the server kept serving and still does
        client.create_task(parent=QUEUE, task={"http_request": {"url": "https://example.com/after"}})

    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    # restore: a server started on the copy has every task acknowledged before the backup
    restored = tmp_path / "restored.db"
    restored.write_bytes(copy.read_bytes())
    with ServerProcess(f"sqlite:///{restored}", "--no-dispatch") as again:
        names = {task.name for task in again.client().list_tasks(parent=QUEUE)}
    missing = [name for name in before if name not in names]
    assert not missing, f"{len(missing)} acknowledged tasks are missing from the backup, e.g. {missing[:3]}"


def test_backup_refuses_to_overwrite_and_names_a_missing_database(tmp_path: Path) -> None:
    target = tmp_path / "exists.db"
    target.write_bytes(b"keep me")
    source = tmp_path / "source.db"
    with sqlite3.connect(source) as conn:
        conn.execute("PRAGMA user_version=1")
        conn.execute("CREATE TABLE queues (pk INTEGER)")
        conn.execute("CREATE TABLE tasks (seq INTEGER)")
    result = run("backup", "--storage", f"sqlite:///{source}", str(target))
    assert result.returncode != 0
    assert "already exists" in result.stderr
    assert target.read_bytes() == b"keep me"
    result = run("backup", "--storage", f"sqlite:///{tmp_path}/missing.db", str(tmp_path / "b.db"))
    assert result.returncode != 0
    assert "does not exist" in result.stderr
    assert not (tmp_path / "missing.db").exists()
    assert not (tmp_path / "b.db").exists()
    result = run("backup", "--storage", "memory://", str(tmp_path / "m.db"))
    assert result.returncode != 0
    assert "only an SQLite database" in result.stderr
    # Without --storage, the database of --data-dir, as serve finds it.
    (tmp_path / "data").mkdir()
    source.rename(tmp_path / "data" / "opentasks.db")
    result = run("backup", "--data-dir", str(tmp_path / "data"), str(tmp_path / "from-data-dir.db"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-data-dir.db").exists()


def test_serve_refuses_a_corrupt_database_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"\x00garbage" * 2000)
    assert_one_line_refusal(serve(f"sqlite:///{path}"), "cannot start", str(path), "corrupt")
    assert path.read_bytes() == b"\x00garbage" * 2000


def test_serve_refuses_a_storage_path_whose_directory_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "tasks.db"
    assert_one_line_refusal(serve(f"sqlite:///{path}"), "cannot start", "does not exist")
    assert not (tmp_path / "no").exists()


def test_serve_refuses_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with ServerProcess(f"sqlite:///{path}", "--no-dispatch"):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={latest_schema() + 7}")
    assert_one_line_refusal(
        serve(f"sqlite:///{path}"), "cannot start", f"schema version {latest_schema() + 7}", "newer"
    )


def test_database_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    with ServerProcess(f"sqlite:///{path}", "--no-dispatch") as server:
        server.client().create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/private"})
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")]
        modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert modes == {f.name: "0o600" for f in files}


def test_a_second_server_on_the_same_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with ServerProcess(f"sqlite:///{path}", "--no-dispatch") as first:
        assert_one_line_refusal(serve(f"sqlite:///{path}"), "cannot start", "in use")
        with pytest.raises(exceptions.NotFound):
            first.client().get_queue(name=f"{PARENT}/queues/none")


def http_get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def grpc_health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        return int(answer.status)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CLOUD_TASKS = "google.cloud.tasks.v2.CloudTasks"


def test_health_checks_follow_the_store_without_api_authentication(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    tokens = {**os.environ, "OPENTASKS_API_TOKENS": "s3cret"}
    server = ServerProcess(f"sqlite:///{folder}/tasks.db", log_path=tmp_path / "server.log")
    with patch.dict(os.environ, tokens), server:
        assert http_get(f"{server.rest_url}/healthz") == (200, {"status": "ok"})
        assert http_get(f"{server.rest_url}/readyz") == (200, {"status": "ready"})
        assert grpc_health(server.address, "") == SERVING
        assert grpc_health(server.address, CLOUD_TASKS) == SERVING
        # the API itself still wants its token
        assert http_get(f"{server.rest_url}/v2/projects/p/locations/l/queues")[0] == 401

        folder.rename(tmp_path / "moved")  # the store's file is unreachable at its path
        status, body = http_get(f"{server.rest_url}/readyz")
        assert status == 503
        assert body["status"] == "not ready"
        assert "unreachable" in body["reason"]
        assert grpc_health(server.address, "") == NOT_SERVING
        assert grpc_health(server.address, CLOUD_TASKS) == NOT_SERVING
        assert http_get(f"{server.rest_url}/healthz") == (200, {"status": "ok"})  # alive all the same

        (tmp_path / "moved").rename(folder)
        assert http_get(f"{server.rest_url}/readyz") == (200, {"status": "ready"})
        assert grpc_health(server.address, "") == SERVING


def test_json_logs_and_the_start_up_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with ServerProcess("memory://", "--log-format", "json", "--lease-grace", "45s", log_path=log):
        pass
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries, "the server logged nothing"
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
        assert entry["time"].endswith("Z")
    started = next(e for e in entries if "listening" in e["message"])
    assert started["level"] == "INFO"
    assert started["version"] == run("--version").stdout.split()[1]
    assert started["storage"].startswith("memory://")
    assert (started["dispatch"], started["api_auth"], started["lease_grace_s"]) == (True, False, 45.0)
    assert started["max_rate_per_queue"] == 500.0
    for fact in (
        started["version"],
        "memory://",
        "rate cap 500/s",
        "lease grace 45 s",
        "API authentication off",
    ):
        assert fact in started["message"]


def test_text_logs_state_the_settings_too(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with ServerProcess("memory://", "--no-dispatch", "--log-format", "text", log_path=log):
        pass
    started = next(line for line in log.read_text().splitlines() if "listening" in line)
    assert " INFO opentasks: opentasks " in started
    assert "not dispatching (--no-dispatch)" in started
    assert "API authentication off" in started
