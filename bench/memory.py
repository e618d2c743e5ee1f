"""Server memory from an empty queue to a large backlog (default 1,000,000 queued tasks).

Tasks are scheduled an hour ahead on a running queue, so the dispatcher is live but has
nothing to send. Prints the server's RSS as the backlog grows. Usage:

    python bench/memory.py [--tasks 1000000] [--storage sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator

import grpc
import psutil
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport
from google.protobuf import timestamp_pb2

from opentasks.testing import ServerProcess

PARENT = "projects/bench/locations/us-central1"
QUEUE = f"{PARENT}/queues/memory"


async def fill(address: str, pid: int, total: int, step: int) -> list[tuple[int, float]]:
    channel = grpc.aio.insecure_channel(address)
    client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    await client.create_queue(parent=PARENT, queue={"name": QUEUE})
    later = timestamp_pb2.Timestamp()
    later.FromSeconds(int(time.time()) + 3600)
    request = {
        "parent": QUEUE,
        "task": {
            "http_request": {"url": "http://127.0.0.1:9/never", "body": b'{"order": 42}'},
            "schedule_time": later,
        },
    }
    server = psutil.Process(pid)
    samples = [(0, server.memory_info().rss / 2**20)]
    created = 0

    async def loader(batches: Iterator[int]) -> None:
        for _ in batches:
            operation = await client.batch_create_tasks(parent=QUEUE, requests=[request] * 100)
            await operation.result()

    while created < total:
        batches = iter(range(created, min(created + step, total), 100))
        await asyncio.gather(*(loader(batches) for _ in range(8)))
        created = min(created + step, total)
        samples.append((created, server.memory_info().rss / 2**20))
        print(f"  {created:>9,} tasks  RSS {samples[-1][1]:7.1f} MiB", flush=True)
    await channel.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    args = parser.parse_args()
    step = max(100, args.tasks // 10 // 100 * 100)
    with tempfile.TemporaryDirectory() as folder, ServerProcess(f"sqlite:///{folder}/memory.db") as server:
        start = time.monotonic()
        samples = asyncio.run(fill(server.address, server.pid, args.tasks, step))
        elapsed = time.monotonic() - start
    rss = [r for _, r in samples]
    print(f"memory: 0 -> {args.tasks:,} queued tasks (SQLite store) in {elapsed:.0f} s")
    print(
        f"  RSS empty {rss[0]:.1f} MiB, full {rss[-1]:.1f} MiB, growth {rss[-1] - rss[0]:+.1f} MiB, "
        f"peak {max(rss):.1f} MiB (target: growth within 50 MB)"
    )


if __name__ == "__main__":
    main()
