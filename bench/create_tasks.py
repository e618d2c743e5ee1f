"""CreateTask throughput: concurrent callers of the official async client against a real server.

Prints creates/s and server CPU per create for opentasks on each store, and for a bare gRPC
echo server (the baseline) measured with the same client in the same run. A PostgreSQL store
also shows the CPU of the database's processes per create. Usage:

    python bench/create_tasks.py [--tasks 5000] [--concurrency 64] [--storage URL ...] [--shared-port]

``--storage`` (repeatable) measures those stores instead of memory and SQLite, e.g.
``--storage sqlite:///tmp/b.db --storage postgresql://postgres@127.0.0.1:5432/opentasks_bench``.
Each run creates a queue of its own and deletes it at the end, so a database can be reused.
``--shared-port`` also sends the same calls to each server's HTTP port, which relays gRPC to
the gRPC server, and reports that against the dedicated gRPC port (rounds alternate).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from dispatch import database_cpu
from opentasks.testing import ServerProcess, free_port

PARENT = "projects/bench/locations/us-central1"
HERE = Path(__file__).parent


@dataclass
class Result:
    label: str
    creates_per_s: float
    server_cpu_us_per_create: float
    database_cpu_us_per_create: float = 0.0


async def drive(address: str, total: int, concurrency: int, pid: int, label: str) -> Result:
    channel = grpc.aio.insecure_channel(address)
    client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    queue = f"{PARENT}/queues/bench-{uuid.uuid4().hex[:8]}"
    await client.create_queue(parent=PARENT, queue={"name": queue})
    # Paused: what is measured is accepting tasks. Sending them (to a URL that goes nowhere from
    # here) would add failed connection attempts to the server's CPU; the dispatcher still hears
    # of every task, as it does of tasks created in a running queue.
    with contextlib.suppress(exceptions.MethodNotImplemented):  # the baseline keeps no queues
        await client.pause_queue(name=queue)
    request = {
        "http_request": {
            "url": "https://example.com/handler",
            "body": b"x" * 200,
            "headers": {"Content-Type": "application/json"},
        }
    }
    await asyncio.gather(*(client.create_task(parent=queue, task=request) for _ in range(200)))  # warm-up

    remaining = iter(range(total))

    async def caller() -> None:
        for _ in remaining:
            await client.create_task(parent=queue, task=request)

    server = psutil.Process(pid)
    cpu_before, database_before = sum(server.cpu_times()[:2]), database_cpu()
    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    database = database_cpu() - database_before
    with contextlib.suppress(exceptions.MethodNotImplemented):  # the baseline keeps no queues
        await client.delete_queue(name=queue)
    await channel.close()
    return Result(label, total / elapsed, cpu / total * 1e6, database / total * 1e6)


def run_opentasks(label: str, storage: str, args: argparse.Namespace) -> list[Result]:
    with ServerProcess(storage) as server:
        if not args.shared_port:
            return [asyncio.run(drive(server.address, args.tasks, args.concurrency, server.pid, label))]
        shared = f"127.0.0.1:{server.http_port}"
        rounds: dict[str, list[Result]] = {label: [], f"{label} via HTTP port": []}
        for _ in range(3):
            for (name, runs), address in zip(rounds.items(), (server.address, shared), strict=True):
                runs.append(asyncio.run(drive(address, args.tasks, args.concurrency, server.pid, name)))
        return [_median(runs) for runs in rounds.values()]


def _median(runs: list[Result]) -> Result:
    """The run with the median rate."""
    return sorted(runs, key=lambda r: r.creates_per_s)[len(runs) // 2]


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
    parser.add_argument(
        "--storage", action="append", default=[], metavar="URL", help="a store to measure (repeatable)"
    )
    parser.add_argument(
        "--shared-port", action="store_true", help="also call each server's HTTP port (gRPC relayed)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        stores = [(url.split("?", 1)[0][:28], url) for url in args.storage] or [
            ("memory://", "memory://"),
            ("sqlite FULL", f"sqlite:///{folder}/full.db"),
            ("sqlite NORMAL", f"sqlite:///{folder}/normal.db?synchronous=normal"),
        ]
        results = [run_echo(args), *(r for label, url in stores for r in run_opentasks(label, url, args))]
    baseline = results[0]
    width = max(16, *(len(r.label) + 2 for r in results))
    print(f"CreateTask, {args.tasks} tasks, {args.concurrency} concurrent official-client callers")
    columns = f"{'creates/s':>12}{'vs baseline':>13}{'server CPU/create':>20}{'db CPU/create':>16}"
    print(f"{'server':<{width}}{columns}")
    for r in results:
        print(
            f"{r.label:<{width}}{r.creates_per_s:>12,.0f}{r.creates_per_s / baseline.creates_per_s:>12.2f}x"
            f"{r.server_cpu_us_per_create:>17,.0f} us{r.database_cpu_us_per_create:>13,.0f} us"
        )
    by_label = {r.label: r for r in results}
    for r in results:
        dedicated = by_label.get(r.label.removesuffix(" via HTTP port"))
        if dedicated is not None and dedicated is not r:
            ratio = r.creates_per_s / dedicated.creates_per_s
            extra = r.server_cpu_us_per_create - dedicated.server_cpu_us_per_create
            print(
                f"gRPC through the HTTP port ({dedicated.label}): {ratio:.2f}x the dedicated port's"
                f" creates/s, {extra:+,.0f} us server CPU per create"
            )


if __name__ == "__main__":
    main()
