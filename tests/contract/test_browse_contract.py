"""Browsing on every backend: a queue's tasks by state, in order, a page at a time with cursors,
searched, each page bounded by the rows it may read; dead letters counted; ended attempts
counted per minute over nodes."""

import dataclasses
import random
from datetime import datetime, timedelta

import pytest
from msgspec.structs import replace

from opentasks.domain.browse import BrowseCursor, BrowsePage, OutcomeMinute, TaskSearch, TaskState
from opentasks.domain.history import FAILED_REASONS, FinishReason
from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.task import AppEngineHttpRequest, HttpRequest, Task, TaskDraft, new_task
from opentasks.errors import NotFound
from opentasks.storage.base import AttemptResult, Store
from opentasks.storage.codec import to_micros
from tests.contract.test_store_contract import T0, WINDOWS, Q, queue

Q2 = QueueName("p", "us-central1", "q2")
LEASE_GRACE = timedelta(minutes=1)
KEEP = dataclasses.replace(WINDOWS, history_until=T0 + timedelta(days=7), now=T0)


def http_task(
    task_id: str,
    *,
    at: datetime = T0,
    url: str = "https://example.com/h",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    q: QueueName = Q,
) -> Task:
    draft = TaskDraft(
        name=f"{q}/tasks/{task_id}",
        http_request=HttpRequest(url=url, headers=headers or {}, body=body),
        schedule_time=at,
    )
    return new_task(draft, q, T0, task_id, Limits())


def app_engine_task(task_id: str, relative_uri: str, *, at: datetime = T0) -> Task:
    draft = TaskDraft(
        name=f"{Q}/tasks/{task_id}",
        app_engine_http_request=AppEngineHttpRequest(relative_uri=relative_uri, body=b"ae"),
        schedule_time=at,
    )
    return new_task(draft, Q, T0, task_id, Limits())


def ids(page: BrowsePage) -> list[str]:
    return [task.name.task_id for task in page.tasks]


async def everything(
    store: Store, now: datetime, state: TaskState, limit: int, **options: object
) -> list[str]:
    """The IDs of every page of ``state``, read page after page with the cursors."""
    found: list[str] = []
    after: BrowseCursor | None = None
    for _ in range(1000):
        page = await store.browse_tasks(Q, now, state, after=after, limit=limit, **options)  # type: ignore[arg-type]
        found += ids(page)
        if page.next_cursor is None:
            return found
        assert after is None or page.next_cursor > after
        after = page.next_cursor
    raise AssertionError("the cursors never ended")


async def four_states(store: Store) -> None:
    """due (T0), later (T0+1h, never run), flying (leased at T0 until T0+11min), retry (failed
    once, due again at T0+30min)."""
    await store.create_queue(queue(), T0)
    for task in (
        http_task("flying", body=b"in flight"),
        http_task("retry"),
        http_task("due", body=b"due body"),
        http_task("later", at=T0 + timedelta(hours=1)),
    ):
        await store.create_task(task, T0)
    await store.claim_task(TaskName(Q, "flying"), T0, LEASE_GRACE)
    claimed = await store.claim_task(TaskName(Q, "retry"), T0, LEASE_GRACE)
    again = replace(claimed, schedule_time=T0 + timedelta(minutes=30))
    await store.finish_attempts([AttemptResult(claimed.name, 1, again)], WINDOWS)


async def test_each_state_holds_its_tasks_as_get_task_returns_them(store: Store) -> None:
    await four_states(store)
    now = T0 + timedelta(seconds=1)
    expected = {
        TaskState.DUE: ["due"],
        TaskState.SCHEDULED: ["later"],
        TaskState.RETRYING: ["retry"],
        TaskState.IN_FLIGHT: ["flying"],
    }
    for state, wanted in expected.items():
        page = await store.browse_tasks(Q, now, state)
        assert ids(page) == wanted, state
        assert page.next_cursor is None
        for task in page.tasks:
            assert task == await store.get_task(task.name, now)
    [due] = (await store.browse_tasks(Q, now, TaskState.DUE)).tasks
    assert due.http_request is not None and due.http_request.body == b"due body"
    [flying] = (await store.browse_tasks(Q, now, TaskState.IN_FLIGHT)).tasks
    assert flying.dispatch_count == 1
    assert flying.http_request is not None and flying.http_request.body == b"in flight"


async def test_an_expired_lease_counts_as_due_at_its_end(store: Store) -> None:
    await four_states(store)
    lease_end = T0 + timedelta(minutes=11)
    assert ids(await store.browse_tasks(Q, lease_end, TaskState.IN_FLIGHT)) == []
    assert ids(await store.browse_tasks(Q, lease_end, TaskState.DUE)) == ["due", "flying"]
    assert ids(await store.browse_tasks(Q, lease_end - timedelta(microseconds=1), TaskState.IN_FLIGHT)) == [
        "flying"
    ]
    # A day later everything is due, by the time the dispatcher may take each task.
    page = await store.browse_tasks(Q, T0 + timedelta(days=1), TaskState.DUE, limit=2)
    assert ids(page) == ["due", "flying"]
    assert page.next_cursor is not None and page.next_cursor.key == to_micros(lease_end)
    rest = await store.browse_tasks(Q, T0 + timedelta(days=1), TaskState.DUE, after=page.next_cursor)
    assert ids(rest) == ["retry", "later"]


async def test_run_task_before_the_schedule_time_is_in_flight_then_due(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await store.create_task(http_task("tomorrow", at=T0 + timedelta(days=1)), T0)
    await store.claim_task(TaskName(Q, "tomorrow"), T0, LEASE_GRACE)
    assert ids(await store.browse_tasks(Q, T0, TaskState.IN_FLIGHT)) == ["tomorrow"]
    assert ids(await store.browse_tasks(Q, T0, TaskState.SCHEDULED)) == []
    assert ids(await store.browse_tasks(Q, T0 + timedelta(hours=1), TaskState.DUE)) == ["tomorrow"]


async def test_order_is_by_time_then_creation_and_cursors_lose_and_repeat_nothing(store: Store) -> None:
    await store.create_queue(queue(), T0)
    rng = random.Random(7)
    offsets = [rng.choice([1, 2, 3, 5, 8]) for _ in range(23)]  # many ties
    for number, seconds in enumerate(offsets):
        await store.create_task(http_task(f"t{number:02}", at=T0 + timedelta(seconds=seconds)), T0)
    in_order = [f"t{n:02}" for n, _ in sorted(enumerate(offsets), key=lambda pair: (pair[1], pair[0]))]
    assert await everything(store, T0, TaskState.SCHEDULED, 5) == in_order
    assert await everything(store, T0 + timedelta(seconds=10), TaskState.DUE, 4) == in_order
    assert await everything(store, T0 + timedelta(seconds=10), TaskState.DUE, 23) == in_order
    assert await everything(store, T0, TaskState.DUE, 3) == []
    # A cursor of a later moment's page, read at an earlier one: nothing after it is due yet.
    later = await store.browse_tasks(Q, T0 + timedelta(seconds=10), TaskState.DUE, limit=2)
    assert later.next_cursor is not None
    assert ids(await store.browse_tasks(Q, T0, TaskState.DUE, after=later.next_cursor)) == []
    # Half-way through time, each state holds its part, in order.
    now = T0 + timedelta(seconds=3)
    due = [i for i in in_order if offsets[int(i[1:])] <= 3]
    assert await everything(store, now, TaskState.DUE, 2) == due
    assert await everything(store, now, TaskState.SCHEDULED, 2) == in_order[len(due) :]


async def test_in_flight_tasks_sharing_a_lease_end_page_through_once(store: Store) -> None:
    await store.create_queue(queue(), T0)
    lease_end = T0 + timedelta(minutes=11)
    for number in range(6):
        await store.create_task(http_task(f"f{number}"), T0)
    for number in (4, 0, 2, 1, 3):  # one lease end for five of them, whatever the claim order
        await store.claim_task(TaskName(Q, f"f{number}"), T0, LEASE_GRACE)
    await store.claim_task(TaskName(Q, "f5"), T0 + timedelta(microseconds=1), LEASE_GRACE)
    for number in range(3):  # waiting, and due exactly when the leases end
        await store.create_task(http_task(f"w{number}", at=lease_end), T0)
    for limit in (1, 2, 3, 6):
        assert await everything(store, T0, TaskState.IN_FLIGHT, limit) == [f"f{n}" for n in range(6)]
    assert await everything(store, T0, TaskState.SCHEDULED, 2) == ["w0", "w1", "w2"]


async def test_a_page_has_a_cursor_only_when_rows_follow(store: Store) -> None:
    await store.create_queue(queue(), T0)
    for number in range(4):
        await store.create_task(http_task(f"t{number}"), T0)
    page = await store.browse_tasks(Q, T0, TaskState.DUE, limit=4)
    assert (ids(page), page.next_cursor) == (["t0", "t1", "t2", "t3"], None)
    page = await store.browse_tasks(Q, T0, TaskState.DUE, limit=3)
    assert ids(page) == ["t0", "t1", "t2"]
    assert page.next_cursor is not None and page.next_cursor.key == to_micros(T0)
    last = await store.browse_tasks(Q, T0, TaskState.DUE, limit=3, after=page.next_cursor)
    assert (ids(last), last.next_cursor) == (["t3"], None)
    assert BrowseCursor.parse(str(page.next_cursor)) == page.next_cursor


async def test_search_looks_in_id_url_header_values_and_relative_uri_ignoring_case(store: Store) -> None:
    await store.create_queue(queue(), T0)
    for task in (
        http_task("Order-Alpha", url="https://shop.example.com/Orders/Ship"),
        http_task("beta", headers={"X-Tenant": "ACME Corp", "X-Note": 'say "Hi" \\ there'}),
        http_task("gamma", headers={"X-City": "Straße"}),
        http_task("delta", url="https://other.example.org/%41?q=100%_done"),
        app_engine_task("epsilon", "/Work/Item?id=7"),
    ):
        await store.create_task(task, T0)

    async def found(text: str) -> list[str]:
        page = await store.browse_tasks(Q, T0, TaskState.DUE, search=TaskSearch(text))
        return sorted(ids(page))

    assert await found("") == ["Order-Alpha", "beta", "delta", "epsilon", "gamma"]
    assert await found("order-ALPHA") == ["Order-Alpha"]  # the ID
    assert await found("ORDERS/ship") == ["Order-Alpha"]  # the URL
    assert await found("acme corp") == ["beta"]  # a header value
    assert await found('"hi" \\') == ["beta"]  # characters JSON escapes
    assert await found("work/item?ID=7") == ["epsilon"]  # an App Engine relative URI
    assert await found("STRASSE") == ["gamma"]  # folded as str.casefold folds: ß is ss
    assert await found("straße") == ["gamma"]
    assert await found("100%_") == ["delta"]  # no wildcards
    assert await found("x-tenant") == []  # header names are not searched
    assert await found("us-central1") == []  # nor the queue
    assert await found("nowhere") == []
    assert await found("example.") == ["Order-Alpha", "beta", "delta", "gamma"]


async def test_scan_limit_bounds_a_page_and_the_cursor_reads_on(store: Store) -> None:
    await store.create_queue(queue(), T0)
    for number in range(10):
        await store.create_task(
            http_task(f"t{number}", headers={"X-Mark": "hit" if number in (2, 8) else "miss"}), T0
        )
    hit = TaskSearch("HIT")
    first = await store.browse_tasks(Q, T0, TaskState.DUE, search=hit, limit=5, scan_limit=4)
    assert (ids(first), first.scanned) == (["t2"], 4)
    assert first.next_cursor is not None
    second = await store.browse_tasks(
        Q, T0, TaskState.DUE, search=hit, limit=5, scan_limit=4, after=first.next_cursor
    )
    assert (ids(second), second.scanned) == ([], 4)
    assert second.next_cursor is not None and second.next_cursor > first.next_cursor
    third = await store.browse_tasks(
        Q, T0, TaskState.DUE, search=hit, limit=5, scan_limit=4, after=second.next_cursor
    )
    assert (ids(third), third.next_cursor, third.scanned) == (["t8"], None, 2)
    # A page stops at its limit before its scan limit, and at its scan limit without a search.
    one = await store.browse_tasks(Q, T0, TaskState.DUE, search=hit, limit=1)
    assert (ids(one), one.scanned) == (["t2"], 3)
    short = await store.browse_tasks(Q, T0, TaskState.DUE, limit=5, scan_limit=3)
    assert ids(short) == ["t0", "t1", "t2"] and short.next_cursor is not None
    # Everything, through tiny scans.
    assert await everything(store, T0, TaskState.DUE, 5, search=hit, scan_limit=3) == ["t2", "t8"]


async def test_scheduled_and_retrying_tasks_share_their_rows(store: Store) -> None:
    await store.create_queue(queue(), T0)
    for number in range(6):
        await store.create_task(http_task(f"t{number}", at=T0 + timedelta(minutes=number + 1)), T0)
    for number in (1, 4):  # failed once, and wait at their former schedule time
        claimed = await store.claim_task(TaskName(Q, f"t{number}"), T0, LEASE_GRACE)
        await store.finish_attempts([AttemptResult(claimed.name, 1, claimed)], WINDOWS)
    assert await everything(store, T0, TaskState.RETRYING, 1) == ["t1", "t4"]
    assert await everything(store, T0, TaskState.SCHEDULED, 2) == ["t0", "t2", "t3", "t5"]
    page = await store.browse_tasks(Q, T0, TaskState.RETRYING, scan_limit=3)
    assert (ids(page), page.scanned) == (["t1"], 3)
    assert page.next_cursor is not None


async def test_browsing_a_missing_queue_or_an_empty_page_is_refused(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.browse_tasks(Q, T0, TaskState.DUE)
    await store.create_queue(queue(), T0)
    with pytest.raises(ValueError):
        await store.browse_tasks(Q, T0, TaskState.DUE, limit=0)
    with pytest.raises(ValueError):
        await store.browse_tasks(Q, T0, TaskState.DUE, scan_limit=0)


# -- dead letters ---------------------------------------------------------------------------------


async def finish(store: Store, task_id: str, reason: FinishReason, until: datetime, q: QueueName = Q) -> None:
    await store.create_task(http_task(task_id, q=q), T0)
    claimed = await store.claim_task(TaskName(q, task_id), T0, LEASE_GRACE)
    windows = dataclasses.replace(KEEP, history_until=until)
    await store.finish_attempts(
        [AttemptResult(claimed.name, 1, None, finish=reason, finish_time=T0, finished_as=claimed)], windows
    )


async def test_dead_letters_are_counted_per_queue_while_kept(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await store.create_queue(queue(Q2), T0)
    await store.create_queue(queue(QueueName("p", "us-central1", "quiet")), T0)
    week, day = T0 + timedelta(days=7), T0 + timedelta(days=1)
    await finish(store, "a", FinishReason.MAX_ATTEMPTS, week)
    await finish(store, "b", FinishReason.MAX_RETRY_DURATION, week)
    await finish(store, "c", FinishReason.MAX_ATTEMPTS, day)  # kept a day only
    await finish(store, "d", FinishReason.SUCCEEDED, week)
    await finish(store, "e", FinishReason.MAX_ATTEMPTS, week, q=Q2)
    await finish(store, "f", FinishReason.SUCCEEDED, week, q=Q2)
    await store.create_task(http_task("g"), T0)
    await store.delete_task(TaskName(Q, "g"), T0, KEEP)
    assert await store.dead_letter_counts(T0) == {Q: 3, Q2: 1}
    assert await store.dead_letter_counts(T0 + timedelta(days=2)) == {Q: 2, Q2: 1}
    assert await store.dead_letter_counts(T0 + timedelta(days=2), Q) == {Q: 2}
    assert await store.dead_letter_counts(T0, Q2) == {Q2: 1}
    assert await store.dead_letter_counts(T0, QueueName("p", "us-central1", "quiet")) == {}
    assert await store.dead_letter_counts(week) == {}


async def test_dead_letters_are_counted_up_to_the_cap(store: Store) -> None:
    """Exact up to the cap, also when expired rows wait for their prune; more reads as cap + 1."""
    await store.create_queue(queue(), T0)
    await store.create_queue(queue(Q2), T0)
    week, day = T0 + timedelta(days=7), T0 + timedelta(days=1)
    for n in range(3):
        await finish(store, f"kept-{n}", FinishReason.MAX_ATTEMPTS, week)
    for n in range(2):
        await finish(store, f"brief-{n}", FinishReason.MAX_ATTEMPTS, day)
    await finish(store, "other", FinishReason.MAX_RETRY_DURATION, week, q=Q2)
    assert await store.dead_letter_counts(T0, cap=5) == {Q: 5, Q2: 1}
    assert await store.dead_letter_counts(T0, cap=4) == {Q: 5, Q2: 1}  # more than 4
    assert await store.dead_letter_counts(T0, cap=3) == {Q: 4, Q2: 1}  # more than 3
    assert await store.dead_letter_counts(T0, Q, cap=2) == {Q: 3}
    later = T0 + timedelta(days=2)  # the brief ones expired, not pruned
    assert await store.dead_letter_counts(later, cap=3) == {Q: 3, Q2: 1}
    assert await store.dead_letter_counts(later, cap=2) == {Q: 3, Q2: 1}
    assert await store.dead_letter_counts(later, cap=1) == {Q: 2, Q2: 1}
    assert await store.dead_letter_counts(later, Q, cap=1) == {Q: 2}


async def test_dead_letters_of_a_deleted_queue_are_kept_but_not_counted(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await store.create_queue(queue(Q2), T0)
    week = T0 + timedelta(days=7)
    await finish(store, "a", FinishReason.MAX_ATTEMPTS, week)
    await finish(store, "b", FinishReason.MAX_ATTEMPTS, week, q=Q2)
    await store.delete_queue(Q2, T0, KEEP)
    assert await store.dead_letter_counts(T0) == {Q: 1}
    assert await store.dead_letter_counts(T0, Q2) == {}
    page = await store.finished_tasks(Q2, T0, reasons=FAILED_REASONS)
    assert [f.task.name.task_id for f in page.tasks] == ["b"]


# -- outcomes -------------------------------------------------------------------------------------


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


async def test_outcomes_are_summed_over_nodes_per_queue_and_minute(store: Store) -> None:
    await store.add_outcomes("node-a", [OutcomeMinute(Q, minute(0), 1, 2), OutcomeMinute(Q, minute(1), 3, 0)])
    await store.add_outcomes(
        "node-b", [OutcomeMinute(Q, minute(0), 10, 0), OutcomeMinute(Q2, minute(0), 0, 1)]
    )
    await store.add_outcomes("node-a", [OutcomeMinute(Q, minute(0) + timedelta(seconds=59), 1, 0)])
    await store.add_outcomes("node-a", [])
    assert await store.outcomes(minute(0)) == [
        OutcomeMinute(Q, minute(0), 12, 2),
        OutcomeMinute(Q2, minute(0), 0, 1),
        OutcomeMinute(Q, minute(1), 3, 0),
    ]
    assert await store.outcomes(minute(0) + timedelta(seconds=1)) == [OutcomeMinute(Q, minute(1), 3, 0)]
    assert await store.outcomes(minute(-5), Q2) == [OutcomeMinute(Q2, minute(0), 0, 1)]
    assert await store.outcomes(minute(2)) == []


async def test_outcomes_older_than_an_hour_are_dropped(store: Store) -> None:
    await store.add_outcomes("node-a", [OutcomeMinute(Q, minute(0), 1, 0)])
    await store.add_outcomes("node-b", [OutcomeMinute(Q2, minute(1), 2, 0)])
    await store.add_outcomes("node-b", [OutcomeMinute(Q, minute(61), 0, 4)])
    assert await store.outcomes(minute(-100)) == [
        OutcomeMinute(Q2, minute(1), 2, 0),
        OutcomeMinute(Q, minute(61), 0, 4),
    ]
