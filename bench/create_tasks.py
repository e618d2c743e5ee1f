"""CreateTask throughput: concurrent callers of the official async client against a real server.

Prints creates/s and server CPU per create for opentasks on each store, and for a bare gRPC
echo server (the baseline) measured with the same client in the same run. Usage:

    python bench/create_tasks.py [--tasks 5000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from opentasks.testing import ServerProcess, free_port

PARENT = "projects/bench/locations/us-central1"
QUEUE = f"{PARENT}/queues/bench"
HERE = Path(__file__).parent


@dataclass
class Result:
    label: str
    creates_per_s: float
    server_cpu_us_per_create: float


async def drive(address: str, total: int, concurrency: int, pid: int, label: str) -> Result:
    channel = grpc.aio.insecure_channel(address)
    client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    await client.create_queue(parent=PARENT, queue={"name": QUEUE})
    request = {
        "http_request": {
            "url": "https://example.com/handler",
            "body": b"x" * 200,
            "headers": {"Content-Type": "application/json"},
        }
    }
    await asyncio.gather(*(client.create_task(parent=QUEUE, task=request) for _ in range(200)))  # warm-up

    remaining = iter(range(total))

    async def caller() -> None:
        for _ in remaining:
            await client.create_task(parent=QUEUE, task=request)

    server = psutil.Process(pid)
    cpu_before = sum(server.cpu_times()[:2])
    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    await channel.close()
    return Result(label, total / elapsed, cpu / total * 1e6)


def run_opentasks(label: str, storage: str, args: argparse.Namespace) -> Result:
    with ServerProcess(storage) as server:
        return asyncio.run(drive(server.address, args.tasks, args.concurrency, server.pid, label))


def run_echo(args: argparse.Namespace) -> Result:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "echo_server.py"), str(port)])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        return asyncio.run(drive(f"127.0.0.1:{port}", args.tasks, args.concurrency, process.pid, "baseline"))
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = [
            run_echo(args),
            run_opentasks("memory://", "memory://", args),
            run_opentasks("sqlite FULL", f"sqlite:///{folder}/full.db", args),
            run_opentasks("sqlite NORMAL", f"sqlite:///{folder}/normal.db?synchronous=normal", args),
        ]
    baseline = results[0]
    print(f"CreateTask, {args.tasks} tasks, {args.concurrency} concurrent official-client callers")
    print(f"{'server':<16}{'creates/s':>12}{'vs baseline':>13}{'server CPU/create':>20}")
    for r in results:
        print(
            f"{r.label:<16}{r.creates_per_s:>12,.0f}{r.creates_per_s / baseline.creates_per_s:>12.2f}x"
            f"{r.server_cpu_us_per_create:>17,.0f} us"
        )


if __name__ == "__main__":
    main()
