"""Metrics through a real scrape of a real server (gRPC and REST on loopback ports, SQLite,
the dispatcher pushing to a local handler), checked with promtool and a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport
from prometheus_client.parser import text_string_to_metric_families

from opentasks.api.cloud_tasks_grpc import CloudTasksApi, handlers
from opentasks.api.rest import RestApi
from opentasks.clock import SystemClock
from opentasks.domain.target_policy import TargetPolicy
from opentasks.observability import Observability
from opentasks.service.dispatcher import Dispatcher
from opentasks.service.locations import LocationService
from opentasks.service.pusher import AiohttpPusher
from opentasks.service.queues import QueueService
from opentasks.service.tasks import TaskService
from opentasks.storage.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
PARENT = "projects/p/locations/us-central1"
QUEUE = f"{PARENT}/queues/metrics"
LABELS = {"project": "p", "location": "us-central1", "queue": "metrics"}


@dataclass
class Running:
    http: str
    grpc_port: int
    handler: str
    dispatcher: Dispatcher


async def _handler_app() -> tuple[web.AppRunner, str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/fail", fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    clock = SystemClock()
    store = SqliteStore(tmp_path / "metrics.db")
    observed = Observability.build(clock, access_log=True)
    store.observe_commits(observed.metrics.store_commit, clock.monotonic)
    await store.open()
    targets = TargetPolicy(deny=())
    dispatcher = Dispatcher(
        store, clock, AiohttpPusher(targets, clock=clock), targets=targets, observers=observed.observers
    )
    queues = QueueService(store, clock, events=dispatcher, targets=targets, observers=observed.observers)
    tasks = TaskService(
        store, clock, events=dispatcher, runner=dispatcher, targets=targets, observers=observed.observers
    )
    observed.insights(store, dispatcher)
    api = CloudTasksApi(queues, tasks, LocationService(store), clock)
    server = grpc.aio.server(interceptors=[observed.interceptor(None)])
    server.add_generic_rpc_handlers(handlers(api))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http = web.AppRunner(RestApi(api).app(extra_routes=lambda app: observed.add_to_http_app(app, None)))
    await http.setup()
    await web.TCPSite(http, "127.0.0.1", 0).start()
    handler_runner, handler = await _handler_app()
    await dispatcher.start()
    try:
        yield Running(f"http://127.0.0.1:{http.addresses[0][1]}", grpc_port, handler, dispatcher)
    finally:
        await dispatcher.stop()
        await http.cleanup()
        await server.stop(1)
        await handler_runner.cleanup()
        await store.close()


async def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted({**LABELS, **labels}.items()))), 0.0)


async def rest(base: str, method: str, path: str, body: object = None) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base}/v2/{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]


async def wait_for(condition: object, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_metrics_follow_tasks_created_dispatched_retried_and_dropped(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    retry = {"maxAttempts": 2, "minBackoff": "0.1s", "maxBackoff": "0.1s"}
    await rest(running.http, "POST", f"{PARENT}/queues", {"name": QUEUE, "retryConfig": retry})
    await rest(running.http, "POST", f"{QUEUE}:pause")
    for target in ("ok", "fail"):
        task = {"httpRequest": {"url": f"{running.handler}/{target}"}}
        await rest(running.http, "POST", f"{QUEUE}/tasks", {"task": task})

    before = await scrape(running.http)
    assert value(before, "opentasks_queue_tasks_created_total") == 2
    assert value(before, "opentasks_queue_tasks", state="due") == 2
    assert value(before, "opentasks_queue_state", state="PAUSED") == 1
    assert value(before, "opentasks_queue_max_dispatches_per_second") > 0
    calls = {"transport": "http", "method": "CreateTask", "code": "200"}
    assert before[("opentasks_api_requests_total", tuple(sorted(calls.items())))] == 2

    await rest(running.http, "POST", f"{QUEUE}:resume")

    async def drained() -> bool:
        samples = await scrape(running.http)
        return value(samples, "opentasks_queue_tasks_finished_total", reason="max_attempts") == 1

    await wait_for(drained)
    await running.dispatcher.settle()
    after = await scrape(running.http)
    assert value(after, "opentasks_queue_attempts_total", outcome="2xx") == 1
    assert value(after, "opentasks_queue_attempts_total", outcome="5xx") == 2  # first try and the retry
    assert value(after, "opentasks_queue_tasks_finished_total", reason="succeeded") == 1
    assert value(after, "opentasks_queue_tasks", state="due") == 0
    assert value(after, "opentasks_queue_handler_response_seconds_count") == 3
    assert value(after, "opentasks_queue_dispatch_delay_seconds_count") == 3
    assert value(after, "opentasks_queue_state", state="RUNNING") == 1
    assert sum(v for (name, _), v in after.items() if name == "opentasks_store_commit_operations_count") > 0

    dropped = [r for r in caplog.records if r.name == "opentasks.tasks" and r.levelno == logging.WARNING]
    assert len(dropped) == 1
    assert dropped[0].__dict__["queue"] == QUEUE and dropped[0].__dict__["attempt"] == 2
    assert dropped[0].__dict__["status"] == "500" and dropped[0].__dict__["reason"] == "max_attempts"
    changes = [r.getMessage() for r in caplog.records if r.name == "opentasks.queues"]
    assert changes == [f"queue {QUEUE} paused", f"queue {QUEUE} resumed"]
    access = [r for r in caplog.records if r.name == "opentasks.access"]
    assert any(r.__dict__["method"] == "CreateTask" and r.__dict__["status"] == 200 for r in access)


async def test_grpc_calls_are_counted(running: Running) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    await client.list_queues(parent=PARENT)
    with pytest.raises(Exception, match="exist"):
        await client.get_queue(name=f"{PARENT}/queues/missing")
    await channel.close()
    samples = await scrape(running.http)
    ok = {"transport": "grpc", "method": "ListQueues", "code": "OK"}
    missing = {"transport": "grpc", "method": "GetQueue", "code": "NOT_FOUND"}
    assert samples[("opentasks_api_requests_total", tuple(sorted(ok.items())))] == 1
    assert samples[("opentasks_api_requests_total", tuple(sorted(missing.items())))] == 1


# -- the real tools ------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package prometheus)")
    return path


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [_tool("promtool"), "check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_promtool_accepts_a_real_scrape(running: Running) -> None:
    await rest(running.http, "POST", f"{PARENT}/queues", {"name": QUEUE})
    await rest(
        running.http, "POST", f"{QUEUE}/tasks", {"task": {"httpRequest": {"url": f"{running.handler}/ok"}}}
    )
    await running.dispatcher.settle()
    async with aiohttp.ClientSession() as session, session.get(f"{running.http}/metrics") as response:
        text = await response.read()
    checker = await asyncio.create_subprocess_exec(
        _tool("promtool"),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(checker.communicate(text), 60)
    assert checker.returncode == 0, output.decode()


def test_dashboard_uses_only_served_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/opentasks.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    names = set(re.findall(r"opentasks_[a-z_]+", "\n".join(exprs) + rules))
    served = (ROOT / "docs/metrics.md").read_text()
    for name in names:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f"`{base}" in served, f"{name} is used but not documented in docs/metrics.md"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_real_prometheus_scrapes_the_server(running: Running, tmp_path: Path) -> None:
    prometheus = _tool("prometheus")
    await rest(running.http, "POST", f"{PARENT}/queues", {"name": QUEUE})
    target = running.http.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ROOT / 'deploy/prometheus/alerts.yml'}']\n"
        f"scrape_configs: [{{job_name: opentasks, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    query = f"http://127.0.0.1:{port}/api/v1/query"
    try:
        async with aiohttp.ClientSession() as session:

            async def scraped() -> bool:
                try:
                    params = {"query": 'opentasks_queue_state{queue="metrics",state="RUNNING"}'}
                    async with session.get(query, params=params) as response:
                        found = (await response.json())["data"]["result"]
                except (aiohttp.ClientError, KeyError, ValueError):
                    return False
                return bool(found) and found[0]["value"][1] == "1"

            await wait_for(scraped, seconds=45)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
