"""Dispatcher benchmarks against a minimal aiohttp handler in another process.

* throughput: a backlog of due tasks in one queue, resumed at once, versus a bare aiohttp
  client loop sending as many requests to the same handler in the same run (the baseline);
* latency: create -> delivery at a steady 50 tasks/s, and lateness of tasks scheduled 2 s ahead;
* rate: the steady dispatch rate of a queue at 5/s and 200/s, and its largest burst.

Usage: python bench/dispatch.py [--backlog 20000] [--rate-seconds 60] [--only throughput,latency,rate]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport
from google.protobuf import timestamp_pb2

from opentasks.testing import ServerProcess, free_port

HERE = Path(__file__).parent
PARENT = "projects/bench/locations/us-central1"
BODY = b'{"order": 42, "action": "charge"}'


@contextmanager
def handler_process() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "handler.py"), str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(base)
        yield base
    finally:
        process.terminate()
        process.wait(10)


def _wait_http(base: str) -> None:
    async def probe() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/__stats?count_only=1"):
                        return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        raise RuntimeError("handler did not start")

    asyncio.run(probe())


async def _handler_call(session: aiohttp.ClientSession, base: str, path: str, method: str = "GET") -> Any:
    async with session.request(method, f"{base}{path}") as response:
        return await response.json()


async def _wait_count(session: aiohttp.ClientSession, base: str, count: int, timeout_s: float) -> float:
    """Poll the handler until ``count`` requests arrived; returns the monotonic time it saw that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = await _handler_call(session, base, "/__stats?count_only=1")
        if stats["count"] >= count:
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise RuntimeError(f"only {stats['count']} of {count} tasks arrived in {timeout_s}s")


def _client(address: str) -> tasks_v2.CloudTasksAsyncClient:
    channel = grpc.aio.insecure_channel(address)
    return tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))


async def _load(client: tasks_v2.CloudTasksAsyncClient, queue: str, url: str, count: int) -> None:
    """Create ``count`` tasks with BatchCreateTasks, 100 per call, 8 calls at a time."""
    task = {"http_request": {"url": url, "body": BODY, "headers": {"Content-Type": "application/json"}}}
    batches = [min(100, count - start) for start in range(0, count, 100)]
    pending = iter(batches)

    async def loader() -> None:
        for size in pending:
            operation = await client.batch_create_tasks(
                parent=queue, requests=[{"parent": queue, "task": task}] * size
            )
            await operation.result()

    await asyncio.gather(*(loader() for _ in range(8)))


# -- throughput -------------------------------------------------------------------------------


async def bare_client_loop(base: str, total: int, concurrency: int) -> tuple[float, float]:
    """The baseline: the fastest plain aiohttp loop we can write, sending the very request a
    dispatch sends (same URL, body and headers) to the same handler."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Google-Cloud-Tasks",
        "X-CloudTasks-QueueName": "throughput",
        "X-CloudTasks-TaskName": "1234567890123456789",
        "X-CloudTasks-TaskRetryCount": "0",
        "X-CloudTasks-TaskExecutionCount": "0",
        "X-CloudTasks-TaskETA": "1795326844.697401",
    }
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _handler_call(session, base, "/__reset", "POST")
        remaining = iter(range(total))

        async def worker() -> None:
            for _ in remaining:
                async with session.post(f"{base}/task", data=BODY, headers=headers) as response:
                    await response.read()

        start, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.monotonic() - start, time.process_time() - cpu
        return total / elapsed, cpu / total * 1e6


async def opentasks_backlog(
    address: str, base: str, total: int, concurrency: int, *, pid: int, round_: int = 0
) -> tuple[float, float]:
    """(tasks/s, server CPU µs per task) while a paused backlog drains after resume."""
    client = _client(address)
    queue = f"{PARENT}/queues/throughput-{round_}"
    await client.create_queue(
        parent=PARENT,
        queue={
            "name": queue,
            "rate_limits": {"max_dispatches_per_second": 1_000_000, "max_concurrent_dispatches": concurrency},
        },
    )
    await client.pause_queue(name=queue)
    await _load(client, queue, f"{base}/task", total)
    server = psutil.Process(pid)
    async with aiohttp.ClientSession() as session:
        await _handler_call(session, base, "/__reset", "POST")
        start, cpu = time.monotonic(), sum(server.cpu_times()[:2])
        await client.resume_queue(name=queue)
        end = await _wait_count(session, base, total, timeout_s=600)
        cpu = sum(server.cpu_times()[:2]) - cpu
    return total / (end - start), cpu / total * 1e6


def throughput(args: argparse.Namespace) -> None:
    """Alternate baseline and dispatcher runs in one session; compare the medians."""
    bare: list[float] = []
    ours: list[float] = []
    bare_cpu: list[float] = []
    our_cpu: list[float] = []
    with handler_process() as base, tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{folder}/bench.db"
        with ServerProcess(storage, "--max-rate-per-queue", "1000000") as server:
            for round_ in range(args.rounds):
                rate, cpu = asyncio.run(bare_client_loop(base, args.backlog, args.concurrency))
                bare.append(rate)
                bare_cpu.append(cpu)
                backlog = opentasks_backlog(
                    server.address, base, args.backlog, args.concurrency, pid=server.pid, round_=round_
                )
                rate, cpu = asyncio.run(backlog)
                ours.append(rate)
                our_cpu.append(cpu)
    baseline, dispatcher = statistics.median(bare), statistics.median(ours)
    print(
        f"throughput: backlog of {args.backlog} due tasks, {args.concurrency} concurrent, SQLite store, "
        f"median of {args.rounds} alternating rounds"
    )
    print(f"  bare aiohttp client loop : {baseline:8,.0f} requests/s  (rounds: {_figures(bare)})")
    print(f"  opentasks dispatcher     : {dispatcher:8,.0f} tasks/s     (rounds: {_figures(ours)})")
    print(f"  ratio                    : {dispatcher / baseline:.0%} of the baseline (target >= 85%)")
    client_cpu, server_cpu = statistics.median(bare_cpu), statistics.median(our_cpu)
    print(
        f"  CPU per request          : bare client {client_cpu:.0f} us, opentasks server {server_cpu:.0f} us "
        f"({server_cpu / client_cpu:.2f}x; steadier than the rates on a noisy host)"
    )


def _figures(values: list[float]) -> str:
    return ", ".join(f"{x:,.0f}" for x in values)


# -- latency ----------------------------------------------------------------------------------


async def latency_run(address: str, base: str, count: int, rate: float, ahead_s: float) -> list[float]:
    """Create ``count`` tasks at ``rate``/s; returns each one's delivery delay in ms.

    With ``ahead_s`` = 0 the delay is delivery - create call; otherwise tasks are scheduled
    ``ahead_s`` seconds ahead and the delay is delivery - schedule_time (negative = early).
    """
    client = _client(address)
    queue = f"{PARENT}/queues/latency-{int(ahead_s)}"
    await client.create_queue(parent=PARENT, queue={"name": queue})
    sent: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        await _handler_call(session, base, "/__reset", "POST")
        start = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            task: dict[str, Any] = {"http_request": {"url": f"{base}/task", "body": BODY}}
            wall = time.time()
            if ahead_s:
                eta = timestamp_pb2.Timestamp()
                eta.FromNanoseconds(int((wall + ahead_s) * 1e9))
                task["schedule_time"] = eta
            created = await client.create_task(parent=queue, task=task)
            sent[created.name.rsplit("/", 1)[1]] = wall + ahead_s
        await _wait_count(session, base, count, timeout_s=60)
        stats = await _handler_call(session, base, "/__stats")
    return [(wall - sent[name]) * 1000 for _, wall, name, _ in stats["arrivals"]]


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def latency(args: argparse.Namespace) -> None:
    with handler_process() as base, ServerProcess("sqlite:///" + tempfile.mkdtemp() + "/lat.db") as server:
        immediate = asyncio.run(latency_run(server.address, base, args.latency_tasks, 50, 0))
        scheduled = asyncio.run(latency_run(server.address, base, args.latency_tasks // 2, 50, 2))
    print(f"latency: {args.latency_tasks} tasks at 50/s, SQLite store")
    p50, p99 = _percentile(immediate, 50), _percentile(immediate, 99)
    print(
        f"  create -> delivery         p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   (target p50 <= 5, p99 <= 25)"
    )
    p50, p99 = _percentile(scheduled, 50), _percentile(scheduled, 99)
    print(
        f"  scheduled 2 s ahead, late  p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
        f"   earliest {min(scheduled):+.2f} ms (never early: >= 0)"
    )


# -- rate accuracy ----------------------------------------------------------------------------


async def rate_run(address: str, base: str, rate: float, seconds: float) -> tuple[float, int, int, int]:
    """(steady rate after the burst, excess over the bucket bound raw and with 25 ms jitter, burst)."""
    client = _client(address)
    queue = f"{PARENT}/queues/rate-{int(rate)}"
    created = await client.create_queue(
        parent=PARENT, queue={"name": queue, "rate_limits": {"max_dispatches_per_second": rate}}
    )
    burst = created.rate_limits.max_burst_size
    total = int(rate * seconds) + burst
    await client.pause_queue(name=queue)
    await _load(client, queue, f"{base}/task", total)
    async with aiohttp.ClientSession() as session:
        await _handler_call(session, base, "/__reset", "POST")
        await client.resume_queue(name=queue)
        await _wait_count(session, base, total, timeout_s=seconds * 2 + 30)
        stats = await _handler_call(session, base, "/__stats")
    times = sorted(t for t, _, _, _ in stats["arrivals"])
    steady = times[burst:]
    measured = (len(steady) - 1) / (steady[-1] - steady[0])
    return measured, _bucket_excess(times, burst, rate, 0.0), _bucket_excess(times, burst, rate, 0.025), burst


def _bucket_excess(times: list[float], burst: int, rate: float, jitter_s: float) -> int:
    """Most arrivals in any window beyond the token-bucket bound burst + rate * (length + jitter).

    Arrival times are taken at the handler, after the network and after the sender's own CPU
    time: sending a 100-request burst takes milliseconds, so the burst's first arrival is late
    relative to its tokens and the following ones seem bunched. ``jitter_s`` allows for that.
    """
    excess, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        for k in range(j, i + 1):
            bound = burst + rate * (t - times[k] + jitter_s)
            excess = max(excess, (i - k + 1) - int(bound))
    return excess


def rate(args: argparse.Namespace) -> None:
    with handler_process() as base, ServerProcess("sqlite:///" + tempfile.mkdtemp() + "/rate.db") as server:
        for target in (5.0, 200.0):
            outcome = asyncio.run(rate_run(server.address, base, target, args.rate_seconds))
            measured, raw, jittered, burst = outcome
            print(
                f"rate {target:g}/s over {args.rate_seconds:g} s: measured {measured:.3f}/s "
                f"({(measured - target) / target:+.2%}, target within ±2%), burst {burst}; most arrivals "
                f"beyond the bucket bound in any window: {raw} as timed at the handler, {jittered} "
                "allowing 25 ms for the network and for sending the burst (target 0)"
            )


def main() -> None:
    try:  # the server runs on uvloop where it is installed; so does the baseline
        import uvloop  # noqa: PLC0415 - optional

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--rate-seconds", type=float, default=60)
    parser.add_argument("--only", default="throughput,latency,rate")
    args = parser.parse_args()
    benches = {"throughput": throughput, "latency": latency, "rate": rate}
    for name in args.only.split(","):
        benches[name](args)


if __name__ == "__main__":
    main()
