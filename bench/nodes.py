"""Several opentasks servers ("nodes") on one PostgreSQL database, each queue dispatched by one.

* latency: two nodes, A and B, and a queue held by B. Tasks are created with the official
  client at 50/s for about 20 s through A (the signal crosses from A to B by NOTIFY), then
  through B itself (the baseline); the delay from each create call's return to the task's
  arrival at the handler, p50 and p99 (targets through A: p50 <= 10 ms, p99 <= 50 ms).
* scaling: 8 queues with a paused backlog each (rate caps lifted), resumed at once, drained by
  one node and then by two nodes holding four queues each; tasks/s of both and their ratio
  (target >= 1.6x). Everything shares this machine's cores, so the CPU of each node, of the
  handlers, of PostgreSQL and of anything else is reported beside the rates.

Each run starts on a fresh database (dropped and created; its name must contain "bench"),
which is dropped at the end; all traffic goes to 127.0.0.1. Usage:

    python bench/nodes.py [--storage postgresql://postgres@127.0.0.1:5432/opentasks_bench_nodes]
        [--only latency,scaling] [--latency-seconds 20] [--rate 50] [--queues 8]
        [--tasks-per-queue 5000] [--concurrency 100] [--rounds 2] [--handler lean_handler.py]
        [--handlers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import psutil
from google.cloud import tasks_v2

from dispatch import (
    BODY,
    PARENT,
    Handler,
    _client,
    _handler_call,
    _load,
    _percentile,
    check_paused,
    database_cpu,
    driver_dsn,
    drop_database,
    ensure_database,
    handler_process,
    wait_held,
    with_database,
)
from opentasks.testing import ServerProcess

DEFAULT_STORAGE = "postgresql://postgres@127.0.0.1:5432/opentasks_bench_nodes"


# -- nodes ------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Running nodes by ID, on one fresh database."""

    storage: str
    nodes: dict[str, ServerProcess]
    clients: dict[str, tasks_v2.CloudTasksAsyncClient] = field(default_factory=dict)

    def client(self, node_id: str) -> tasks_v2.CloudTasksAsyncClient:
        """An async official client of that node, made in the running event loop."""
        if node_id not in self.clients:
            self.clients[node_id] = _client(self.nodes[node_id].address)
        return self.clients[node_id]

    async def close_clients(self) -> None:
        for client in self.clients.values():
            await client.transport.close()
        self.clients.clear()


@contextmanager
def cluster(storage: str, node_ids: list[str], folder: Path) -> Iterator[Cluster]:
    """``node_ids`` servers on a fresh database, each logging to ``folder``; all alive on entry;
    stopped and the database dropped on exit."""
    asyncio.run(ensure_database(storage, fresh=True))
    try:
        with ExitStack() as stack:
            nodes = {}
            for node_id in node_ids:
                server = ServerProcess(
                    storage,
                    "--node-id",
                    node_id,
                    "--max-rate-per-queue",
                    "1000000",
                    log_path=folder / f"{node_id}.log",
                )
                nodes[node_id] = stack.enter_context(server)
            asyncio.run(_wait_alive(storage, len(node_ids)))
            yield Cluster(storage, nodes)
    finally:
        asyncio.run(drop_database(storage))


async def _reachable(storage: str) -> None:
    conn = await asyncpg.connect(with_database(storage, "postgres"), timeout=5)
    await conn.close()


async def _wait_alive(storage: str, count: int, timeout_s: float = 30) -> None:
    conn = await asyncpg.connect(driver_dsn(storage), timeout=10)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            alive = await conn.fetchval(
                "SELECT count(*) FROM nodes WHERE expire_us > $1", int(time.time() * 1e6)
            )
            if alive >= count:
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError(f"fewer than {count} nodes alive after {timeout_s} s")


async def queues_held(
    nodes: Cluster, wanted: dict[str, int], prefix: str, fields: dict[str, object], *, paused: bool
) -> dict[str, str]:
    """Create queues until each node in ``wanted`` holds that many (the others are deleted);
    queue name -> holder. Paused ones are paused once held (see dispatch.create_paused_queue)."""
    creator = nodes.client(next(iter(nodes.nodes)))
    found: dict[str, str] = {}
    index = 0
    while any(sum(1 for h in found.values() if h == node) < n for node, n in wanted.items()):
        name = f"{PARENT}/queues/{prefix}-{index}"
        index += 1
        await creator.create_queue(parent=PARENT, queue={"name": name, **fields})
        node = await wait_held(nodes.storage, name)
        if sum(1 for h in found.values() if h == node) < wanted.get(node, 0):
            found[name] = node
            if paused:
                await asyncio.sleep(0.5)  # the holder's worker exists: the pause reaches it
                await nodes.client(node).pause_queue(name=name)
        else:
            await creator.delete_queue(name=name)
        if index > 200:
            raise RuntimeError(f"could not place queues as {wanted}: {found}")
    return found


# -- cross-node latency -----------------------------------------------------------------------


async def latency_run(
    client: tasks_v2.CloudTasksAsyncClient, queue: str, handler: Handler, rate: float, seconds: float
) -> list[float]:
    """Create tasks at ``rate``/s for ``seconds``; each one's delay in ms from its create call's
    return to its arrival at the handler (both on this machine's monotonic clock)."""
    count = int(rate * seconds)
    returned: dict[str, float] = {}
    task = {"http_request": {"url": f"{handler.base}/task", "body": BODY}}
    async with aiohttp.ClientSession() as session:
        await _handler_call(session, handler.base, "/__reset", "POST")
        start = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            created = await client.create_task(parent=queue, task=task, timeout=30)
            returned[created.name.rsplit("/", 1)[1]] = time.monotonic()
        deadline = time.monotonic() + 30
        while True:
            stats = await _handler_call(session, handler.base, "/__stats")
            if stats["count"] >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    if stats["count"] < count:
        raise RuntimeError(f"only {stats['count']} of {count} tasks arrived")
    return [(at - returned[name]) * 1000 for at, _, name, _ in stats["arrivals"]]


@dataclass(frozen=True)
class Latency:
    label: str
    delays_ms: list[float]

    def line(self) -> str:
        d = self.delays_ms
        return (
            f"  {self.label:<34} p50 {_percentile(d, 50):6.2f} ms  p99 {_percentile(d, 99):6.2f} ms"
            f"  max {max(d):6.2f} ms  min {min(d):+6.2f} ms  ({len(d)} tasks)"
        )


def latency(args: argparse.Namespace, folder: Path) -> list[Latency]:
    with handler_process(args.handler) as handler, cluster(args.storage, ["A", "B"], folder) as nodes:

        async def run() -> list[Latency]:
            queue = next(iter(await queues_held(nodes, {"B": 1}, "latency", {}, paused=False)))
            through_a, through_b = nodes.client("A"), nodes.client("B")
            for client in (through_a, through_b):  # warm-up: channels, the handler's connections
                await latency_run(client, queue, handler, args.rate, 1)
            cross: list[float] = []
            holder: list[float] = []
            for _ in range(args.rounds):
                cross += await latency_run(through_a, queue, handler, args.rate, args.latency_seconds)
                holder += await latency_run(through_b, queue, handler, args.rate, args.latency_seconds)
            await nodes.close_clients()
            return [
                Latency("created through A, held by B", cross),
                Latency("created through B (baseline)", holder),
            ]

        results = asyncio.run(run())
    print(
        f"latency: create call's return -> arrival at the handler, {args.rate:g} tasks/s for "
        f"{args.latency_seconds:g} s per round, {args.rounds} round(s), {args.handler}"
    )
    for result in results:
        print(result.line())
    print("  (target through A: p50 <= 10 ms, p99 <= 50 ms; min < 0: delivered before the call returned)")
    return results


# -- scaling ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    """One drain of the backlog: tasks/s, and CPU seconds per second of drain of each part."""

    nodes: int
    rate: float
    seconds: float
    node_cpu: dict[str, float]
    handler_cpu: float
    database_cpu: float
    machine_busy: float  # all CPUs, in cores
    steal: float
    node_done: dict[str, float]  # when each node's last task arrived, seconds after the resume


def _machine() -> tuple[float, float, float]:
    """(busy, steal, total) CPU seconds of the whole machine so far."""
    times = psutil.cpu_times()
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, getattr(times, "steal", 0.0), total


def _cpu(pid: int) -> float:
    return sum(psutil.Process(pid).cpu_times()[:2])


async def _wait_total(session: aiohttp.ClientSession, handlers: list[Handler], total: int) -> float:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        counts = [await _handler_call(session, h.base, "/__stats?count_only=1") for h in handlers]
        if sum(c["count"] for c in counts) >= total:
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the backlog of {total} tasks did not drain in 600 s")


def drain(args: argparse.Namespace, handlers: list[Handler], node_ids: list[str], folder: Path) -> Drain:
    """A paused backlog in ``args.queues`` queues spread evenly over ``node_ids``, resumed at once."""
    with cluster(args.storage, node_ids, folder) as nodes:

        async def run() -> Drain:
            limits = {"max_dispatches_per_second": 1_000_000, "max_concurrent_dispatches": args.concurrency}
            share = {node: args.queues // len(node_ids) for node in node_ids}
            share[node_ids[0]] += args.queues - sum(share.values())
            queues = await queues_held(nodes, share, "scaling", {"rate_limits": limits}, paused=True)
            async with aiohttp.ClientSession() as session:
                for handler in handlers:
                    await _handler_call(session, handler.base, "/__reset", "POST")
                loader = nodes.client(node_ids[0])
                for index, queue in enumerate(queues):
                    target = handlers[index % len(handlers)]
                    await _load(loader, queue, f"{target.base}/task", args.tasks_per_queue)
                for handler in handlers:
                    await check_paused(session, handler.base, "the paused queues scaling-*")
                total = args.tasks_per_queue * len(queues)
                pids = {node: nodes.nodes[node].pid for node in node_ids}
                node_cpu = {node: _cpu(pid) for node, pid in pids.items()}
                handler_cpu = sum(h.cpu() for h in handlers)
                database, (busy, steal, _) = database_cpu(), _machine()
                start = time.monotonic()
                await asyncio.gather(*(nodes.client(node).resume_queue(name=q) for q, node in queues.items()))
                end = await _wait_total(session, handlers, total)
                done: dict[str, float] = {}
                for handler in handlers:
                    by_queue = await _handler_call(session, handler.base, "/__stats?by_queue=1")
                    for queue, node in queues.items():
                        seen = by_queue.get(queue.rsplit("/", 1)[1])
                        if seen is not None:
                            done[node] = max(done.get(node, 0.0), seen[1] - start)
            seconds = end - start
            busy_end, steal_end, _ = _machine()
            await nodes.close_clients()
            return Drain(
                nodes=len(node_ids),
                rate=total / seconds,
                seconds=seconds,
                node_cpu={node: (_cpu(pid) - node_cpu[node]) / seconds for node, pid in pids.items()},
                handler_cpu=(sum(h.cpu() for h in handlers) - handler_cpu) / seconds,
                database_cpu=(database_cpu() - database) / seconds,
                machine_busy=(busy_end - busy) / seconds,
                steal=(steal_end - steal) / seconds,
                node_done=done,
            )

        return asyncio.run(run())


def scaling(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    runs: dict[int, list[Drain]] = {1: [], 2: []}
    with ExitStack() as stack:
        handlers = [stack.enter_context(handler_process(args.handler)) for _ in range(args.handlers)]
        for _ in range(args.rounds):
            runs[1].append(drain(args, handlers, ["A"], folder))
            runs[2].append(drain(args, handlers, ["A", "B"], folder))
    total = args.queues * args.tasks_per_queue
    print(
        f"scaling: {args.queues} queues x {args.tasks_per_queue} due tasks ({total} in all), "
        f"max_concurrent_dispatches {args.concurrency} each, rate caps lifted; {args.handlers} "
        f"{args.handler} process(es); medians of {args.rounds} alternating round(s)"
    )
    print(
        "  CPU in cores while draining (this machine has "
        f"{psutil.cpu_count()}): each node, handler(s), PostgreSQL (all its processes), "
        "the whole machine, of which steal"
    )
    medians = {}
    for count, drains in runs.items():
        medians[count] = statistics.median(d.rate for d in drains)
        rates = ", ".join(f"{d.rate:,.0f}" for d in drains)
        print(f"  {count} node(s): {medians[count]:8,.0f} tasks/s  (rounds: {rates})")
        for d in drains:
            nodes = " + ".join(f"{node} {cpu:.2f}" for node, cpu in d.node_cpu.items())
            done = ", ".join(f"{node} {at:.1f} s" for node, at in sorted(d.node_done.items()))
            print(
                f"      {d.seconds:5.1f} s: nodes {nodes}, handlers {d.handler_cpu:.2f}, "
                f"PostgreSQL {d.database_cpu:.2f}, machine {d.machine_busy:.2f} (steal {d.steal:.2f}); "
                f"last task of {done}"
            )
    print(f"  ratio 2 nodes / 1 node: {medians[2] / medians[1]:.2f}x (target >= 1.6x)")
    return medians[1], medians[2]


def main() -> None:
    try:  # the servers run on uvloop where it is installed; so do the clients here
        import uvloop  # noqa: PLC0415 - optional

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="PostgreSQL database to drop, create and drop again"
    )
    parser.add_argument("--only", default="latency,scaling")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=50, help="tasks/s created in the latency runs")
    parser.add_argument("--queues", type=int, default=8)
    parser.add_argument("--tasks-per-queue", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100, help="max_concurrent_dispatches per queue")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--handler", default="lean_handler.py", help="handler.py or lean_handler.py")
    parser.add_argument("--handlers", type=int, default=1, help="handler processes (scaling)")
    args = parser.parse_args()
    if "bench" not in urlsplit(args.storage).path:
        parser.error("--storage must name a database whose name contains 'bench': it is dropped")
    try:
        asyncio.run(_reachable(args.storage))
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise SystemExit(f"nodes.py needs PostgreSQL ({args.storage}): {reason}") from None
    latencies: list[Latency] = []
    scaled: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory() as folder:
        if "latency" in args.only:
            latencies = latency(args, Path(folder))
        if "scaling" in args.only:
            scaled = scaling(args, Path(folder))
    print("\nresults")
    for result in latencies:
        print(result.line())
    if scaled is not None:
        one, two = scaled
        print(f"  scaling: 1 node {one:,.0f} tasks/s, 2 nodes {two:,.0f} tasks/s, ratio {two / one:.2f}x")


if __name__ == "__main__":
    main()
