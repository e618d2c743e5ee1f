"""Prometheus metrics, modelled on Cloud Monitoring's Cloud Tasks metrics (docs/metrics.md).

:class:`Metrics` is an observer of the dispatcher, the services and the API: counters and
histograms are plain numbers updated in place (no lock, no label lookup on the dispatch path)
and exported by a collector of their own registry. Gauges about queues are read at scrape time
from :class:`~opentasks.service.queue_insights.StoreInsights`, never by scanning tasks.

Serve them with :func:`add_metrics_route` (``GET /metrics`` on the HTTP port) or
:func:`start_metrics_server` (their own port).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from opentasks.clock import Clock
from opentasks.domain.history import FinishReason
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue, QueueState
from opentasks.domain.stats import QueueStats
from opentasks.service.observers import (
    AttemptFinished,
    Observer,
    QueueChange,
    QueueChanged,
    RpcServed,
    TaskCreated,
    TaskFinished,
    outcome_class,
)
from opentasks.service.queue_insights import StoreInsights, oldest_due_age

# Seconds from a task falling due to its attempt: on time is milliseconds, a backlog is minutes.
DISPATCH_DELAY_BUCKETS = (0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)
# Handler response time; dispatch deadlines reach 30 min (HTTP) and 24 h (App Engine).
RESPONSE_BUCKETS = (0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 60.0, 600.0)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0)
COMMIT_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
STATES = (QueueState.RUNNING, QueueState.PAUSED, QueueState.DISABLED)


class _Histogram:
    """Bucket counts and a sum, updated without locks (the event loop is the only writer)."""

    __slots__ = ("bound_texts", "bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.bound_texts = (*(repr(float(b)) for b in bounds), "+Inf")
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


@dataclass
class _QueueCounters:
    label_text: str
    created: int = 0
    attempts: dict[str, int] = field(default_factory=dict)  # outcome class -> count
    finished: dict[str, int] = field(default_factory=dict)  # reason -> count
    delay: _Histogram = field(default_factory=lambda: _Histogram(DISPATCH_DELAY_BUCKETS))
    response: _Histogram = field(default_factory=lambda: _Histogram(RESPONSE_BUCKETS))


class Metrics(Observer):
    """Every opentasks metric, in a registry of its own (``self.registry``)."""

    def __init__(self, clock: Clock, insights: StoreInsights | None = None) -> None:
        self._clock = clock
        self._insights = insights
        self._queues: dict[QueueName, _QueueCounters] = {}
        self._snapshot: list[tuple[Queue, QueueStats]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.api_requests = Counter(
            "opentasks_api_requests",
            "API calls by transport, method and status code (gRPC code name, or HTTP status for REST).",
            ["transport", "method", "code"],
            registry=self.registry,
        )
        self.api_latency = Histogram(
            "opentasks_api_request_duration_seconds",
            "Time to serve an API call.",
            ["transport", "method"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "opentasks_store_commit_duration_seconds",
            "Group commits of the SQLite store, from BEGIN to committed (durable: with fsync).",
            ["durable"],
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.commit_size = Histogram(
            "opentasks_store_commit_operations",
            "Write operations per group commit of the SQLite store.",
            buckets=COMMIT_SIZE_BUCKETS,
            registry=self.registry,
        )

    def use_node(self, queues_held: Callable[[], int], proven: Callable[[], bool]) -> None:
        """Gauges of this node: the queues it dispatches, and whether it can prove its leases
        (0 while it cannot reach the store to renew them: it dispatches nothing then)."""
        held = Gauge(
            "opentasks_node_queues_held",
            "Queues this node dispatches (each queue is held by one node at a time).",
            registry=self.registry,
        )
        held.set_function(lambda: float(queues_held()))
        leases = Gauge(
            "opentasks_node_leases_proven",
            "1 while this node has renewed its queue leases in time, 0 while it has not "
            "(it then stops dispatching until it can).",
            registry=self.registry,
        )
        leases.set_function(lambda: 1.0 if proven() else 0.0)

    def use_insights(self, insights: StoreInsights) -> None:
        """Read queue gauges from ``insights`` at every scrape."""
        self._insights = insights

    # -- observer ---------------------------------------------------------------------------

    def _counters(self, name: QueueName) -> _QueueCounters:
        counters = self._queues.get(name)
        if counters is None:
            counters = self._queues[name] = _QueueCounters(_label_text(name))
        return counters

    def _align_counters(self, names: set[QueueName]) -> None:
        """Counters for exactly the queues that exist: a queue's counter series are there (at 0)
        from its first scrape on, so that ``increase()`` sees its first event, and end with it."""
        for name in names:
            self._counters(name)
        for name in [n for n in self._queues if n not in names]:
            del self._queues[name]

    def task_created(self, event: TaskCreated) -> None:
        self._counters(event.task.name.queue).created += 1

    def attempt_finished(self, event: AttemptFinished) -> None:
        counters = self._counters(event.task.name.queue)
        kind = outcome_class(event.outcome)
        counters.attempts[kind] = counters.attempts.get(kind, 0) + 1
        counters.delay.observe(event.dispatch_delay_seconds)
        counters.response.observe(event.response_seconds)

    def task_finished(self, event: TaskFinished) -> None:
        finished = self._counters(event.name.queue).finished
        reason = event.reason.value
        finished[reason] = finished.get(reason, 0) + 1

    def queue_changed(self, event: QueueChanged) -> None:
        if event.change == QueueChange.DELETED:
            self._queues.pop(event.name, None)  # its series end with it

    def rpc_served(self, event: RpcServed) -> None:
        self.api_requests.labels(event.transport, event.method, event.code).inc()
        self.api_latency.labels(event.transport, event.method).observe(event.duration_seconds)

    def store_commit(self, operations: int, seconds: float, durable: bool) -> None:
        """The SQLite store's commit hook (``SqliteStore.observe_commits``)."""
        self.commit_latency.labels("true" if durable else "false").observe(seconds)
        self.commit_size.observe(operations)

    # -- scrape -----------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The text exposition, with queue gauges read from the insights now."""
        if self._insights is not None:
            self._snapshot = await self._insights.all_queue_stats()
            self._align_counters({queue.name for queue, _ in self._snapshot})
        queues = render_queues(self._snapshot, list(self._queues.values()), self._clock.now())
        return generate_latest(self.registry) + queues.encode()


# Per-queue series are formatted here rather than by prometheus-client's generic exposition,
# which takes about 5 us per sample: a thousand queues are some 50,000 samples.


# Written at 0 before they happen, so that rate() and increase() count a queue's first event.
OUTCOMES = ("2xx", "3xx", "4xx", "5xx", "timeout", "unreachable", "refused")
REASONS = tuple(
    reason.value for reason in FinishReason if reason is not FinishReason.PURGED
)  # purges publish none


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_text(name: QueueName) -> str:
    project, location, queue = (_escape(part) for part in (name.project, name.location, name.queue_id))
    return f'project="{project}",location="{location}",queue="{queue}"'


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, int) or value.is_integer() else repr(value)


def _header(out: list[str], name: str, kind: str, documentation: str) -> None:
    out.append(f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n")


def render_queues(
    snapshot: list[tuple[Queue, QueueStats]], queues: list[_QueueCounters], now: datetime
) -> str:
    """The per-queue families in the Prometheus text format."""
    out: list[str] = []
    labels = [(_label_text(queue.name), queue, stats) for queue, stats in snapshot]
    _gauges(out, labels, now)
    _counters(out, queues)
    _histograms(out, queues)
    return "".join(out)


def _gauges(out: list[str], labels: list[tuple[str, Queue, QueueStats]], now: datetime) -> None:
    _header(
        out,
        "opentasks_queue_tasks",
        "gauge",
        "Tasks in the queue: due (attempts in flight included) or scheduled later.",
    )
    for text, _, stats in labels:
        out.append(f'opentasks_queue_tasks{{{text},state="due"}} {stats.due_tasks_count}\n')
        out.append(
            f'opentasks_queue_tasks{{{text},state="scheduled"}} {stats.tasks_count - stats.due_tasks_count}\n'
        )
    singles: tuple[tuple[str, str, Callable[[Queue, QueueStats], float]], ...] = (
        (
            "opentasks_queue_attempts_in_flight",
            "Attempts being sent now.",
            lambda q, s: s.concurrent_dispatches_count,
        ),
        (
            "opentasks_queue_oldest_due_task_age_seconds",
            "Seconds since the oldest due task fell due (0: none).",
            lambda q, s: oldest_due_age(s, now),
        ),
        (
            "opentasks_queue_max_dispatches_per_second",
            "The queue's configured dispatch rate.",
            lambda q, s: q.rate_limits.max_dispatches_per_second,
        ),
        (
            "opentasks_queue_max_concurrent_dispatches",
            "The queue's configured concurrency cap.",
            lambda q, s: q.rate_limits.max_concurrent_dispatches,
        ),
    )
    for name, documentation, read in singles:
        _header(out, name, "gauge", documentation)
        out.extend(f"{name}{{{text}}} {_number(read(queue, stats))}\n" for text, queue, stats in labels)
    _header(out, "opentasks_queue_state", "gauge", "1 for the queue's state, 0 for the others.")
    for text, queue, _ in labels:
        for state in STATES:
            out.append(f'opentasks_queue_state{{{text},state="{state.name}"}} {int(queue.state == state)}\n')


def _counters(out: list[str], queues: list[_QueueCounters]) -> None:
    name = "opentasks_queue_tasks_created_total"
    _header(out, name, "counter", "Tasks accepted by CreateTask.")
    out.extend(f"{name}{{{q.label_text}}} {q.created}\n" for q in queues)
    name = "opentasks_queue_attempts_total"
    _header(out, name, "counter", "Attempts ended, by outcome: 2xx..5xx, timeout, unreachable or refused.")
    for q in queues:
        attempts = dict.fromkeys(OUTCOMES, 0) | q.attempts
        out.extend(f'{name}{{{q.label_text},outcome="{k}"}} {n}\n' for k, n in attempts.items())
    name = "opentasks_queue_tasks_finished_total"
    _header(
        out,
        name,
        "counter",
        "Tasks that left the queue: succeeded, failed for good (max_attempts, max_retry_duration), deleted.",
    )
    for q in queues:
        finished = dict.fromkeys(REASONS, 0) | q.finished
        out.extend(f'{name}{{{q.label_text},reason="{k}"}} {n}\n' for k, n in finished.items())


def _histograms(out: list[str], queues: list[_QueueCounters]) -> None:
    for name, documentation, pick in (
        ("opentasks_queue_dispatch_delay_seconds", "From a task falling due to its attempt leaving.", _delay),
        (
            "opentasks_queue_handler_response_seconds",
            "How long handlers took to answer an attempt.",
            _response,
        ),
    ):
        _header(out, name, "histogram", documentation)
        for q in queues:
            histogram = pick(q)
            total = 0
            for bound, count in zip(histogram.bound_texts, histogram.counts, strict=True):
                total += count
                out.append(f'{name}_bucket{{{q.label_text},le="{bound}"}} {total}\n')
            out.append(
                f"{name}_count{{{q.label_text}}} {total}\n{name}_sum{{{q.label_text}}} {histogram.sum!r}\n"
            )


def _delay(counters: _QueueCounters) -> _Histogram:
    return counters.delay


def _response(counters: _QueueCounters) -> _Histogram:
    return counters.response


# -- serving -----------------------------------------------------------------------------------


def metrics_handler(metrics: Metrics) -> web.Handler:  # type: ignore[name-defined]
    async def serve(request: web.Request) -> web.Response:
        body = await metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return serve


def add_metrics_route(app: web.Application, metrics: Metrics) -> None:
    """Serve ``GET /metrics`` on ``app`` (register it before any catch-all route)."""
    app.router.add_get("/metrics", metrics_handler(metrics))


async def start_metrics_server(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """Serve ``GET /metrics`` on a port of its own (``--metrics-port``); ``cleanup()`` stops it."""
    app = web.Application()
    add_metrics_route(app, metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
