"""CreateTask over REST: concurrent aiohttp callers POSTing the JSON CreateTask request, against
opentasks and against a bare aiohttp server that answers the same POST with the task it was sent
(plus a name) and does nothing else: no validation, no storage. Both are measured with the same
client in the same run; creates/s, the ratio to the bare server and server CPU per create are
printed. The queue is paused, so what is measured is accepting tasks, not sending them.

    python bench/create_tasks_rest.py [--tasks 5000] [--concurrency 32] [--storage URL ...]
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

import aiohttp
import psutil

from opentasks.testing import ServerProcess, free_port

PARENT = "projects/bench/locations/us-central1"
QUEUE = f"{PARENT}/queues/rest-bench"
HERE = Path(__file__).parent
BODY = {
    "task": {
        "httpRequest": {
            "url": "https://example.com/handler",
            "body": "eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4",
            "headers": {"Content-Type": "application/json"},
        }
    }
}


@dataclass
class Result:
    label: str
    creates_per_s: float
    server_cpu_us_per_create: float


async def drive(base: str, total: int, concurrency: int, pid: int, label: str) -> Result:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _answered(session.post(f"{base}/v2/{PARENT}/queues", json={"name": QUEUE}))
        await _answered(session.post(f"{base}/v2/{QUEUE}:pause", json={}))
        url = f"{base}/v2/{QUEUE}/tasks"
        await asyncio.gather(*(_answered(session.post(url, json=BODY)) for _ in range(200)))  # warm-up
        remaining = iter(range(total))

        async def caller() -> None:
            for _ in remaining:
                await _answered(session.post(url, json=BODY))

        server = psutil.Process(pid)
        cpu_before = sum(server.cpu_times()[:2])
        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu = sum(server.cpu_times()[:2]) - cpu_before
    return Result(label, total / elapsed, cpu / total * 1e6)


async def _answered(request: aiohttp.client._RequestContextManager) -> None:
    async with request as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {await response.text()}")


def run_opentasks(label: str, storage: str, args: argparse.Namespace) -> Result:
    with ServerProcess(storage) as server:
        return asyncio.run(drive(server.rest_url, args.tasks, args.concurrency, server.pid, label))


def run_bare(args: argparse.Namespace) -> Result:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "rest_echo_server.py"), str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_ready(base))
        return asyncio.run(drive(base, args.tasks, args.concurrency, process.pid, "bare aiohttp"))
    finally:
        process.terminate()
        process.wait(10)


async def _ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(base + "/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{base} does not answer")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--storage", action="append", default=[], metavar="URL", help="a store (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        stores = [(url.split("?", 1)[0][:28], url) for url in args.storage] or [
            ("memory://", "memory://"),
            ("sqlite FULL", f"sqlite:///{folder}/full.db"),
        ]
        results = [run_bare(args), *(run_opentasks(label, url, args) for label, url in stores)]
    baseline = results[0]
    print(f"CreateTask over REST, {args.tasks} tasks, {args.concurrency} concurrent aiohttp callers")
    print(f"{'server':<16}{'creates/s':>12}{'vs baseline':>13}{'server CPU/create':>20}")
    for r in results:
        print(
            f"{r.label:<16}{r.creates_per_s:>12,.0f}{r.creates_per_s / baseline.creates_per_s:>12.2f}x"
            f"{r.server_cpu_us_per_create:>17,.0f} us"
        )


if __name__ == "__main__":
    main()
