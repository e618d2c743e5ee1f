"""Readiness and its two faces: GET /readyz and grpc.health.v1.Health (in process)."""

import asyncio
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from opentasks.api.health import GrpcHealth, add_routes
from opentasks.clock import FakeClock, SystemClock
from opentasks.service.health import Readiness
from opentasks.storage.memory import MemoryStore
from opentasks.storage.sqlite import SqliteStore

SERVICE = "google.cloud.tasks.v2.CloudTasks"


class BrokenStore(MemoryStore):
    async def list_locations(self, project: str) -> list[str]:
        raise OSError("disk I/O error")


class HangingStore(MemoryStore):
    async def list_locations(self, project: str) -> list[str]:
        await asyncio.Event().wait()
        return []


async def test_ready_when_the_store_answers_and_the_dispatcher_runs() -> None:
    running = True
    readiness = Readiness(MemoryStore(), FakeClock(), dispatching=lambda: running)
    assert await readiness.reason() is None
    running = False
    assert await readiness.reason() == "the dispatcher is stopped"


async def test_no_dispatcher_needed_when_started_without_one() -> None:
    assert await Readiness(MemoryStore(), FakeClock(), dispatching=None).reason() is None


async def test_a_failing_store_is_not_ready() -> None:
    reason = await Readiness(BrokenStore(), FakeClock()).reason()
    assert reason == "the store does not answer: disk I/O error"


async def test_a_store_that_hangs_is_not_ready_after_the_timeout() -> None:
    clock = FakeClock()
    check = asyncio.ensure_future(Readiness(HangingStore(), clock, timeout_s=2).reason())
    await clock.sleeping()  # the check waits for the store, on the clock
    clock.advance(2.5)
    assert await asyncio.wait_for(check, 5) == "the store did not answer within 2 s"


async def test_an_sqlite_store_whose_file_was_removed_is_not_ready(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    store = SqliteStore(folder / "t.db")
    await store.open()
    try:
        readiness = Readiness(store, SystemClock())
        assert await readiness.reason() is None
        folder.rename(tmp_path / "elsewhere")
        assert "unreachable" in (await readiness.reason() or "")
    finally:
        await store.close()


async def test_concurrent_checks_share_one_probe() -> None:
    calls = 0

    class Counting(MemoryStore):
        async def list_locations(self, project: str) -> list[str]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            return []

    readiness = Readiness(Counting(), SystemClock())
    assert await asyncio.gather(*(readiness.reason() for _ in range(20))) == [None] * 20
    assert calls == 1


async def http_client(readiness: Readiness) -> TestClient[Any, Any]:
    app = web.Application()
    add_routes(app, readiness)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_http_healthz_and_readyz() -> None:
    running = True
    client = await http_client(Readiness(MemoryStore(), SystemClock(), dispatching=lambda: running))
    try:
        answer = await client.get("/healthz")
        assert (answer.status, await answer.json()) == (200, {"status": "ok"})
        answer = await client.get("/readyz")
        assert (answer.status, await answer.json()) == (200, {"status": "ready"})
        running = False
        answer = await client.get("/readyz")
        assert answer.status == 503
        assert await answer.json() == {"status": "not ready", "reason": "the dispatcher is stopped"}
        assert (await client.get("/healthz")).status == 200
        assert (await client.head("/readyz")).status == 503
    finally:
        await client.close()


async def test_grpc_health_follows_readiness_and_shutdown() -> None:
    running = True
    clock = SystemClock()
    health = GrpcHealth(Readiness(MemoryStore(), clock, dispatching=lambda: running), clock, [SERVICE])
    server = grpc.aio.server()
    health.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    health.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                return int(answer.status)

            serving = health_pb2.HealthCheckResponse.SERVING
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert await status("") == serving
            assert await status(SERVICE) == serving
            running = False
            assert await status("") == not_serving
            assert await status(SERVICE) == not_serving
            running = True
            assert await status(SERVICE) == serving
            try:
                await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
            else:
                raise AssertionError("an unknown service must be NOT_FOUND")
            await health.stop()
            assert await status("") == not_serving
    finally:
        await server.stop(None)
