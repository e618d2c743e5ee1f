"""The observer seam, the insights and the metrics' exposition, in process."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opentasks.clock import FakeClock
from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue, resolve_queue
from opentasks.domain.task import AttemptFailure, AttemptOutcome, HttpRequest, TaskDraft, new_task
from opentasks.metrics import Metrics
from opentasks.service.dispatcher import MinuteCount
from opentasks.service.observers import (
    AttemptFinished,
    FinishReason,
    Observer,
    Observers,
    TaskCreated,
    TaskFinished,
    outcome_class,
)
from opentasks.service.queue_insights import StoreInsights
from opentasks.storage.base import Windows
from opentasks.storage.memory import MemoryStore
from opentasks.storage.sqlite import SqliteStore


def test_an_observer_that_fails_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[object] = []

    class Broken(Observer):
        def task_created(self, event: TaskCreated) -> None:
            raise RuntimeError("boom")

    class Keeps(Observer):
        def task_created(self, event: TaskCreated) -> None:
            seen.append(event)

    observers = Observers([Broken(), Keeps()], monotonic=FakeClock().monotonic)
    assert "task_created" in observers.wanted and "attempt_finished" not in observers.wanted
    event = TaskCreated(task(QueueName("p", "l", "q")))
    observers.task_created(event)
    assert seen == [event]
    assert "boom" in caplog.text
    assert "https://example.com" not in caplog.text  # the event (and its task) is never logged


def test_outcome_classes_are_bounded() -> None:
    assert outcome_class(AttemptOutcome(http_status=204)) == "2xx"
    assert outcome_class(AttemptOutcome(http_status=503)) == "5xx"
    assert outcome_class(AttemptOutcome(failure=AttemptFailure.TIMEOUT)) == "timeout"
    assert outcome_class(AttemptOutcome(http_status=999)) == "other"


def test_minute_count_forgets_after_sixty_seconds() -> None:
    count = MinuteCount()
    for second in (0.1, 0.5, 30.0, 59.9):
        count.add(1000 + second)
    assert count.total(1059.9) == 4
    assert count.total(1060.2) == 2  # second 1000 has passed
    assert count.total(1200.0) == 0


def key(labels: tuple[tuple[str, str], ...], **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*labels, *more.items())))


def task(queue: QueueName, at: timedelta = timedelta(0)) -> object:
    clock = FakeClock()
    draft = TaskDraft(http_request=HttpRequest(url="https://example.com/h"), schedule_time=clock.now() + at)
    return new_task(draft, queue, clock.now(), "t", Limits())


async def test_insights_and_exposition(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    store = MemoryStore()
    q = QueueName("p", "l", "q")
    await store.create_queue(resolve_queue(Queue(q), Limits()), clock.now())
    for index, ahead in enumerate((0, 0, 60)):
        draft = TaskDraft(
            http_request=HttpRequest(url="https://example.com/h"),
            schedule_time=clock.now() + timedelta(seconds=ahead),
        )
        await store.create_task(new_task(draft, q, clock.now(), f"t{index}", Limits()), clock.now())
    clock.advance(30)
    insights = StoreInsights(store, clock)
    stats = await insights.queue_stats(q)
    assert (stats.tasks_count, stats.due_tasks_count) == (3, 2)
    assert (
        stats.effective_execution_rate
        == resolve_queue(Queue(q), Limits()).rate_limits.max_dispatches_per_second
    )

    metrics = Metrics(clock, insights)
    created = task(q)
    metrics.task_created(TaskCreated(created))  # type: ignore[arg-type]
    metrics.attempt_finished(AttemptFinished(created, AttemptOutcome(http_status=500), 0.2, 1.5))  # type: ignore[arg-type]
    metrics.task_finished(TaskFinished(created.name, FinishReason.MAX_ATTEMPTS, 3))  # type: ignore[attr-defined]
    text = (await metrics.render()).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    labels = (("location", "l"), ("project", "p"), ("queue", "q"))
    assert samples[("opentasks_queue_tasks", key(labels, state="due"))] == 2
    assert samples[("opentasks_queue_oldest_due_task_age_seconds", labels)] == 30
    assert samples[("opentasks_queue_attempts_total", key(labels, outcome="5xx"))] == 1
    assert samples[("opentasks_queue_tasks_finished_total", key(labels, reason="max_attempts"))] == 1
    assert samples[("opentasks_queue_dispatch_delay_seconds_bucket", key(labels, le="5.0"))] == 1
    assert samples[("opentasks_queue_dispatch_delay_seconds_bucket", key(labels, le="1.0"))] == 0
    assert "process_cpu_seconds_total" in text or "python_info" in text
    # Series a queue has not had yet are there at 0, so that increase() sees the first event.
    assert samples[("opentasks_queue_tasks_finished_total", key(labels, reason="max_retry_duration"))] == 0
    assert samples[("opentasks_queue_attempts_total", key(labels, outcome="refused"))] == 0
    # A deleted queue's series end with it.
    await store.delete_queue(q, clock.now(), Windows(clock.now(), clock.now()))
    assert 'queue="q"' not in (await metrics.render()).decode()


async def test_a_scrape_of_many_queues_stays_fast(tmp_path: Path) -> None:
    """A small version of bench/metrics_scrape.py (1,000 queues, 1,000,000 tasks: < 100 ms)."""
    clock = FakeClock()
    store = SqliteStore(tmp_path / "many.db", synchronous="OFF")
    await store.open()
    try:
        names = [QueueName("p", "l", f"q{index}") for index in range(100)]
        for name in names:
            await store.create_queue(resolve_queue(Queue(name), Limits()), clock.now())
        drafts = [TaskDraft(http_request=HttpRequest(url="https://example.com/h"))] * 20
        for name in names:
            for index, draft in enumerate(drafts):
                await store.create_task(
                    new_task(draft, name, clock.now(), f"t{index}", Limits()), clock.now()
                )
        metrics = Metrics(clock, StoreInsights(store, clock))
        for name in names:
            created = task(name)
            metrics.attempt_finished(AttemptFinished(created, AttemptOutcome(http_status=200), 0.1, 0.1))  # type: ignore[arg-type]
        started = time.perf_counter()
        text = (await metrics.render()).decode()
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    assert text.count("opentasks_queue_tasks{") == 200
    assert elapsed < 0.5, f"scrape of 100 queues took {elapsed * 1000:.0f} ms"
    logging.getLogger(__name__).info("scrape of 100 queues: %.1f ms", elapsed * 1000)
