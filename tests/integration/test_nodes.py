"""Three real servers sharing one PostgreSQL database: every task delivered once whichever node
took it, queues spread over the nodes, a killed node's queues dispatched by another within 10 s
and nothing lost, SIGTERM handing over without a gap, and the rate held across a hand-over."""

import asyncio
import itertools
import json
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from google.cloud import tasks_v2
from prometheus_client.parser import text_string_to_metric_families

from opentasks.testing import OPENTASKS, ServerProcess, wait_until_drained
from tests.contract.conftest import fresh_storage
from tests.integration.handlers import HandlerProcess, Received

pytestmark = pytest.mark.integration
PARENT = "projects/nodes/locations/us-central1"
DATABASE = "opentasks_nodes_it"
NODES = ("n1", "n2", "n3")


@pytest.fixture
def storage() -> str:
    """A storage URL of an empty database of its own (dropped and created again per test)."""
    return fresh_storage(DATABASE)


@pytest.fixture
def handler() -> Iterator[HandlerProcess]:
    """A handler of each test's own: a killed node's attempts repeated after its test ended
    must not count as the next test's deliveries."""
    with HandlerProcess() as running:
        yield running


class Nodes:
    """Three servers on one database, each with its own ports and log."""

    def __init__(self, storage: str, folder: Path, *extra: str) -> None:
        self.storage = storage
        # A short lease grace: attempts lost with a killed node come back within seconds.
        self.servers = {
            node_id: ServerProcess(
                storage,
                "--node-id",
                node_id,
                "--lease-grace",
                "1s",
                *extra,
                log_path=folder / f"{node_id}.log",
            )
            for node_id in NODES
        }

    def __enter__(self) -> "Nodes":
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:  # they start together
            started = [pool.submit(server.start) for server in self.servers.values()]
        try:
            for future in started:
                future.result()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers.values():
            if server.process is not None and server.process.poll() is None:
                server.kill()

    def client(self, node_id: str) -> tasks_v2.CloudTasksClient:
        return self.servers[node_id].client()

    def listed(self) -> dict[str, dict[str, object]]:
        """``opentasks nodes list --format json``, by node ID."""
        out = subprocess.run(
            [OPENTASKS, "nodes", "list", "--storage", self.storage, "--format", "json"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return {node["nodeId"]: node for node in json.loads(out)}

    def holder_and_other(self, queue: str) -> tuple[str, tasks_v2.CloudTasksClient]:
        """The node holding ``queue``, and a client of a node that does not."""
        holder = self.holder(queue)
        return holder, self.client(next(node_id for node_id in NODES if node_id != holder))

    def holder(self, queue: str, *, other_than: str | None = None, timeout_s: float = 20) -> str:
        """The node holding ``queue`` (waiting until one does, and is not ``other_than``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = asyncio.run(_holder(self.storage, queue))
            if found is not None and found != other_than:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no node other than {other_than} holds {queue}")
            time.sleep(0.1)


async def _holder(storage: str, queue: str) -> str | None:
    parent, queue_id = queue.rsplit("/queues/", 1)
    conn = await asyncpg.connect(storage.split("?", 1)[0])
    try:
        return await conn.fetchval(  # type: ignore[no-any-return]
            "SELECT o.node_id FROM queue_owners o JOIN queues q ON q.pk = o.queue_pk"
            " WHERE q.parent = $1 AND q.queue_id = $2 AND o.expire_us > $3",
            parent,
            queue_id,
            int(time.time() * 1e6),
        )
    finally:
        await conn.close()


def node_gauges(http_port: int) -> dict[str, float]:
    """The node's own gauges from its GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("opentasks_node_")
    }


def fill(
    client: tasks_v2.CloudTasksClient, queue: str, url: str, prefix: str, count: int, **task: object
) -> list[bytes]:
    """Create ``count`` tasks with bodies ``prefix-0`` … through ``client``, a few calls at a time;
    their bodies."""
    sent = [f"{prefix}-{index}".encode() for index in range(count)]

    def create(body: bytes) -> None:
        client.create_task(parent=queue, task={"http_request": {"url": url, "body": body}, **task})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, sent))
    return sent


def late_deliveries(handler: HandlerProcess, since: float) -> list[float]:
    """Seconds after ``since`` at which requests still arrived, until a second passes without one."""
    late = []
    while handler.nothing_more(1.0) is False:
        late.append(time.monotonic() - since)
    return late


def make_queue(client: tasks_v2.CloudTasksClient, queue_id: str, **fields: object) -> str:
    name = f"{PARENT}/queues/{queue_id}"
    client.create_queue(parent=PARENT, queue={"name": name, **fields})
    return name


def bodies(received: list[Received]) -> Counter[bytes]:
    return Counter(r.body for r in received)


def test_tasks_created_through_every_node_are_delivered_once(
    storage: str, handler: HandlerProcess, tmp_path: Path
) -> None:
    with Nodes(storage, tmp_path) as nodes:
        queues = [make_queue(nodes.client("n1"), f"spread-{i}") for i in range(6)]
        clients = [nodes.client(node_id) for node_id in NODES]
        sent = []
        for index in range(90):
            queue = queues[index % len(queues)]
            body = f"task-{index}".encode()
            clients[index % 3].create_task(
                parent=queue, task={"http_request": {"url": handler.url("/nodes/once"), "body": body}}
            )
            sent.append(body)
        received = handler.take(90)
        assert bodies(received) == Counter(sent)  # each once
        assert handler.nothing_more(1.0)
        listed = nodes.listed()
        assert sorted(listed) == list(NODES)
        assert all(node["state"] == "alive" for node in listed.values())
        assert sum(int(str(node["queues"])) for node in listed.values()) == 6
        held = [node_gauges(server.http_port) for server in nodes.servers.values()]
        assert sum(h["opentasks_node_queues_held"] for h in held) == 6
        assert all(h["opentasks_node_leases_proven"] == 1 for h in held)


def test_a_thousand_queues_spread_evenly_over_three_nodes(storage: str, tmp_path: Path) -> None:
    with Nodes(storage, tmp_path) as nodes:
        client = nodes.client("n2")
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda index: make_queue(client, f"q-{index:04d}"), range(1000)))
        deadline = time.monotonic() + 30
        while True:
            counts = {node_id: int(str(node["queues"])) for node_id, node in nodes.listed().items()}
            if sum(counts.values()) == 1000 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sum(counts.values()) == 1000, counts
        assert all(abs(count - 1000 / 3) <= 0.2 * 1000 / 3 for count in counts.values()), counts


def test_kill_9_of_a_busy_queues_holder_moves_it_within_10_s_and_loses_nothing(
    storage: str, handler: HandlerProcess, tmp_path: Path
) -> None:
    with Nodes(storage, tmp_path) as nodes:
        queue = make_queue(
            nodes.client("n1"), "busy", rate_limits={"max_dispatches_per_second": 20, "max_burst_size": 20}
        )
        holder, client = nodes.holder_and_other(queue)
        # A 15 s deadline with the 1 s grace: attempts lost with the node return in 16 s.
        expected = fill(
            client, queue, handler.url("/nodes/busy"), "busy", 200, dispatch_deadline={"seconds": 15}
        )
        before = handler.take(20)  # the holder is dispatching
        nodes.servers[holder].kill()
        killed_at = time.monotonic()
        after = handler.take(len(expected) - len(before), timeout_s=60)
        # The first delivery after the kill came from the new holder within 10 s (deliveries in
        # the kill's own instant came from the dead node's last attempts).
        resumed = [r.at for r in after if r.at > killed_at + 0.2]
        assert resumed
        print(f"dispatch resumed {resumed[0] - killed_at:.2f} s after kill -9 of {holder}")
        assert resumed[0] - killed_at <= 10.0
        nodes.holder(queue, other_than=holder)  # another node holds it (or this fails)
        wait_until_drained(client, queue, timeout_s=30)
        delivered = set(bodies(before + after))
        while delivered != set(expected):  # repeats of attempts in flight made take() end early
            delivered |= set(bodies(handler.take(1, timeout_s=10)))  # nothing lost


def test_sigterm_hands_a_queue_over_without_a_gap(
    storage: str, handler: HandlerProcess, tmp_path: Path
) -> None:
    with Nodes(storage, tmp_path) as nodes:
        queue = make_queue(
            nodes.client("n1"), "handover", rate_limits={"max_dispatches_per_second": 20, "max_burst_size": 5}
        )
        holder, client = nodes.holder_and_other(queue)
        fill(client, queue, handler.url("/nodes/handover"), "h", 60)
        received = handler.take(20)
        assert nodes.servers[holder].stop() == 0
        stopped = time.monotonic()
        received += handler.take(40, timeout_s=30)
        assert sum(r.at > stopped for r in received) >= 10  # the new holder's share is measured too
        gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
        print(f"longest gap between deliveries across the SIGTERM hand-over: {max(gaps):.3f} s")
        assert max(gaps) <= 2.0, max(gaps)
        nodes.holder(queue, other_than=holder)  # another node holds it (or this fails)
        assert len(set(bodies(received))) == 60


def test_the_rate_holds_within_2_percent_while_the_queue_moves(
    storage: str, handler: HandlerProcess, tmp_path: Path
) -> None:
    rate, seconds = 20, 30
    with Nodes(storage, tmp_path) as nodes:
        queue = make_queue(nodes.client("n1"), "steady", rate_limits={"max_dispatches_per_second": rate})
        holder, client = nodes.holder_and_other(queue)
        client.pause_queue(name=queue)
        fill(client, queue, handler.url("/nodes/steady"), "s", rate * seconds * 2)
        burst = client.get_queue(name=queue).rate_limits.max_burst_size
        client.resume_queue(name=queue)
        received = handler.take(burst)  # the full bucket's burst, then the steady rate
        start = received[-1].at
        moved = False
        while received[-1].at - start < seconds:
            received += handler.take(1)
            if not moved and received[-1].at - start > seconds / 2:
                nodes.servers[holder].stop()  # the queue moves once, half-way
                moved = True
        in_window = [r for r in received[burst:] if r.at - start < seconds]
        print(f"{len(in_window)} deliveries in {seconds} s at {rate}/s with one hand-over")
        assert abs(len(in_window) - rate * seconds) <= 0.02 * rate * seconds, len(in_window)
        assert len(set(bodies(received))) == len(received)


def test_queue_changes_through_any_node_take_effect_on_the_holder_at_once(
    storage: str, handler: HandlerProcess, tmp_path: Path
) -> None:
    with Nodes(storage, tmp_path) as nodes:
        queue = make_queue(
            nodes.client("n1"), "remote", rate_limits={"max_dispatches_per_second": 10, "max_burst_size": 1}
        )
        _, other = nodes.holder_and_other(queue)
        fill(other, queue, handler.url("/nodes/remote"), "r", 300)
        handler.take(5)
        other.pause_queue(name=queue)
        late = late_deliveries(handler, time.monotonic())  # only what was already on its way
        assert all(after < 0.5 for after in late), late
        other.resume_queue(name=queue)
        resumed = handler.take(1, timeout_s=5)[0].at
        # A faster rate set through a non-holder: the holder uses it at once.
        other.update_queue(
            queue={"name": queue, "rate_limits": {"max_dispatches_per_second": 100}},
            update_mask={"paths": ["rate_limits.max_dispatches_per_second"]},
        )
        burst = handler.take(100, timeout_s=10)
        assert burst[-1].at - resumed < 5.0  # at 10/s this would take 10 s
        other.delete_queue(name=queue)
        late = late_deliveries(handler, time.monotonic())
        assert all(after < 0.5 for after in late), late


def test_a_second_server_with_a_node_id_in_use_is_refused_and_changes_nothing(
    storage: str, tmp_path: Path
) -> None:
    with ServerProcess(storage, "--node-id", "only", log_path=tmp_path / "first.log") as first:
        make_queue(first.client(), "kept")
        serve = [OPENTASKS, "serve", "--port", "0", "--http-port", "0", "--storage", storage]
        second = subprocess.run(
            [*serve, "--node-id", "only"], check=False, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert "--node-id only is in use by another running server" in second.stderr
        assert "Traceback" not in second.stderr
        listed = Nodes(storage, tmp_path).listed()
        assert listed["only"]["state"] == "alive" and listed["only"]["queues"] == 1


def test_a_page_token_from_one_node_is_read_by_another(storage: str, tmp_path: Path) -> None:
    with (
        ServerProcess(storage, "--node-id", "p1", log_path=tmp_path / "p1.log") as first,
        ServerProcess(storage, "--node-id", "p2", log_path=tmp_path / "p2.log") as second,
    ):
        one, two = first.client(), second.client()
        queue = make_queue(one, "paged")
        one.pause_queue(name=queue)
        for index in range(5):
            one.create_task(
                parent=queue,
                task={"name": f"{queue}/tasks/t{index}", "http_request": {"url": "http://127.0.0.1:9/"}},
            )
        page = one.list_tasks(request={"parent": queue, "page_size": 2}).pages
        first_page = next(page)
        rest = two.list_tasks(
            request={"parent": queue, "page_size": 3, "page_token": first_page.next_page_token}
        )
        names = [t.name.rsplit("/", 1)[1] for t in first_page.tasks] + [
            t.name.rsplit("/", 1)[1] for t in rest
        ]
        assert names == [f"t{index}" for index in range(5)]
