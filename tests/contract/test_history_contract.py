"""Kept history on every backend: attempts and finished tasks, with why they finished, their
keep time, pages of dead letters, and nothing kept when history is off."""

import dataclasses
from datetime import datetime, timedelta

import pytest
from msgspec.structs import replace

from opentasks.domain.history import FAILED_REASONS, AttemptRecord, FinishReason
from opentasks.domain.names import TaskName
from opentasks.domain.task import AttemptFailure, Task
from opentasks.errors import AlreadyExists, FailedPrecondition, NotFound
from opentasks.storage.base import AttemptResult, Store, Windows
from tests.contract.test_store_contract import T0, WINDOWS, Q, queue, task

KEEP = dataclasses.replace(WINDOWS, history_until=T0 + timedelta(days=7), now=T0)


def record(claimed: Task, status: int, **fields: object) -> AttemptRecord:
    return AttemptRecord(
        task=claimed.name,
        created=claimed.create_time,
        attempt=claimed.dispatch_count,
        dispatch_time=T0,
        duration=timedelta(milliseconds=12, microseconds=5),
        http_status=status,
        **fields,  # type: ignore[arg-type]
    )


async def claimed(store: Store, task_id: str, body: bytes = b"payload") -> Task:
    await store.create_task(task(task_id, body=body), T0)
    [one] = (await store.claim_due_tasks(Q, T0, 1, timedelta(minutes=1))).tasks
    return one


async def test_attempts_and_ends_are_kept_with_what_the_answer_said(store: Store) -> None:
    await store.create_queue(queue(), T0)
    first = await claimed(store, "a")
    failed = record(
        first,
        503,
        detail="busy",
        response_headers=(("Retry-After", "1"), ("X-Trace", "é")),
        response_body=b"\x00\xffbusy",
    )
    retry = replace(first, schedule_time=T0)
    await store.finish_attempts([AttemptResult(first.name, 1, retry, attempt=failed)], KEEP)
    [second] = (await store.claim_due_tasks(Q, T0, 1, timedelta(minutes=1))).tasks
    done = record(second, 200)
    result = AttemptResult(
        second.name,
        2,
        None,
        attempt=done,
        finish=FinishReason.SUCCEEDED,
        finish_time=T0 + timedelta(seconds=1),
        finished_as=replace(second, response_count=1),  # with its last attempt counted
    )
    await store.finish_attempts([result], KEEP)
    ends, attempts = await store.task_history(first.name, T0)
    assert attempts == [failed, done]
    [end] = ends
    assert (end.reason, end.finish_time) == (FinishReason.SUCCEEDED, T0 + timedelta(seconds=1))
    assert end.task.name == first.name
    assert end.task.http_request is not None and end.task.http_request.body == b"payload"
    assert (end.task.dispatch_count, end.task.response_count) == (2, 1)  # as it ended
    assert (await store.task_history(first.name, T0 + timedelta(days=7)))[1] == []  # past its keep time


async def test_deleted_purged_and_failed_tasks_are_kept_and_paged(store: Store) -> None:
    await store.create_queue(queue(), T0)
    for number in range(5):
        one = await claimed(store, f"f{number}")
        end = AttemptResult(
            one.name, 1, None, attempt=record(one, 500), finish=FinishReason.MAX_ATTEMPTS, finish_time=T0
        )
        await store.finish_attempts([end], KEEP)
    await store.create_task(task("deleted"), T0)
    await store.delete_task(TaskName(Q, "deleted"), T0, KEEP)
    await store.create_task(task("purged"), T0)
    await store.purge_queue(Q, T0 + timedelta(seconds=1), KEEP)
    page = await store.finished_tasks(Q, T0, limit=10)
    assert [(f.task.name.task_id, f.reason) for f in page.tasks[:2]] == [
        ("purged", FinishReason.PURGED),
        ("deleted", FinishReason.DELETED),
    ]
    assert page.next_before is None
    failed = await store.finished_tasks(Q, T0, reasons=FAILED_REASONS, limit=2)
    assert [f.task.name.task_id for f in failed.tasks] == ["f4", "f3"]
    assert failed.next_before is not None
    rest = await store.finished_tasks(Q, T0, reasons=FAILED_REASONS, before=failed.next_before, limit=10)
    assert [f.task.name.task_id for f in rest.tasks] == ["f2", "f1", "f0"]
    deleted = await store.finished_tasks(Q, T0, reasons={FinishReason.DELETED})
    assert [f.task.name.task_id for f in deleted.tasks] == ["deleted"]
    assert (await store.finished_tasks(Q, T0 + timedelta(days=8))).tasks == []


async def test_history_outlives_the_queue_and_is_not_kept_when_off(store: Store) -> None:
    await store.create_queue(queue(), T0)
    kept = await claimed(store, "kept")
    end = AttemptResult(
        kept.name, 1, None, attempt=record(kept, 200), finish=FinishReason.SUCCEEDED, finish_time=T0
    )
    await store.finish_attempts([end], KEEP)
    off = await claimed(store, "off")
    end = AttemptResult(
        off.name, 1, None, attempt=record(off, 200), finish=FinishReason.SUCCEEDED, finish_time=T0
    )
    await store.finish_attempts([end], WINDOWS)  # history off: no keep time
    await store.create_task(task("gone"), T0)
    await store.delete_task(TaskName(Q, "gone"), T0, WINDOWS)
    await store.delete_queue(Q, T0, KEEP)
    assert [f.task.name.task_id for f in (await store.finished_tasks(Q, T0)).tasks] == ["kept"]
    assert await store.task_history(off.name, T0) == ([], [])


async def test_a_void_result_keeps_its_attempt_but_finishes_nothing(store: Store) -> None:
    await store.create_queue(queue(), T0)
    first = await claimed(store, "a")
    await store.claim_task(first.name, T0, timedelta(minutes=1))  # RunTask: the first claim's result is void
    failure = record(first, 0, failure=AttemptFailure.TIMEOUT)
    void = AttemptResult(first.name, 1, None, attempt=failure, finish=FinishReason.SUCCEEDED, finish_time=T0)
    await store.finish_attempts([void], KEEP)
    ends, attempts = await store.task_history(first.name, T0)
    assert (ends, attempts) == ([], [failure])
    assert await store.get_task(first.name, T0)


async def dead_letter(store: Store, task_id: str, windows: Windows = KEEP) -> Task:
    one = await claimed(store, task_id)
    end = AttemptResult(
        one.name, 1, None, attempt=record(one, 500), finish=FinishReason.MAX_ATTEMPTS, finish_time=T0
    )
    await store.finish_attempts([end], windows)
    return one


async def end_key(store: Store, name: TaskName, now: datetime = T0) -> int:
    """The key of the latest kept end of ``name``."""
    ends, _ = await store.task_history(name, now)
    return ends[-1].key


async def test_a_dead_letter_is_redriven_once_and_then_is_no_dead_letter(store: Store) -> None:
    await store.create_queue(queue(), T0)
    for task_id in ("d0", "d1", "d2"):
        await dead_letter(store, task_id)
    letter = TaskName(Q, "d1")
    later = T0 + timedelta(seconds=5)
    key = await end_key(store, letter)
    again = await store.redrive_task(letter, key, task("again-1", body=b"payload"), later)
    assert again.name == TaskName(Q, "again-1")
    assert (await store.get_task(again.name, later)).name == again.name

    [end], _ = await store.task_history(letter, later)
    assert (end.reason, end.redriven_as, end.redrive_time) == (FinishReason.MAX_ATTEMPTS, "again-1", later)
    assert not end.dead_letter
    dead = await store.finished_tasks(Q, later, reasons=FAILED_REASONS)
    assert [f.task.name.task_id for f in dead.tasks] == ["d2", "d0"]
    assert (await store.finished_tasks(Q, later, reasons={FinishReason.MAX_ATTEMPTS})).tasks == dead.tasks
    every = await store.finished_tasks(Q, later)
    assert [(f.task.name.task_id, f.redriven_as) for f in every.tasks] == [
        ("d2", None),
        ("d1", "again-1"),
        ("d0", None),
    ]
    assert await store.dead_letter_counts(later) == {Q: 2}

    with pytest.raises(FailedPrecondition, match="already redriven as task again-1"):
        await store.redrive_task(letter, key, task("again-2"), later)
    with pytest.raises(NotFound, match="not a kept dead letter"):
        await store.redrive_task(TaskName(Q, "nothing"), key, task("again-3"), later)
    with pytest.raises(NotFound, match="not a kept dead letter"):  # another name's end
        await store.redrive_task(TaskName(Q, "d0"), key, task("again-3"), later)
    for refused in ("again-2", "again-3"):
        with pytest.raises(NotFound):
            await store.get_task(TaskName(Q, refused), later)


async def test_each_failed_end_of_one_name_is_a_dead_letter_of_its_own(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await dead_letter(store, "n")
    again = T0 + timedelta(hours=2)  # the name is free again
    await store.create_task(task("n", at=again), again)
    [second] = (await store.claim_due_tasks(Q, again, 1, timedelta(minutes=1))).tasks
    end = AttemptResult(
        second.name, 1, None, attempt=record(second, 500), finish=FinishReason.MAX_ATTEMPTS, finish_time=again
    )
    await store.finish_attempts([end], KEEP)
    older, newer = (await store.task_history(second.name, again))[0]
    assert older.key != newer.key and older.dead_letter and newer.dead_letter
    await store.redrive_task(second.name, newer.key, task("from-newer", at=again), again)
    assert await store.dead_letter_counts(again) == {Q: 1}
    await store.redrive_task(second.name, older.key, task("from-older", at=again), again)
    ends, _ = await store.task_history(second.name, again)
    assert [e.redriven_as for e in ends] == ["from-older", "from-newer"]
    assert await store.dead_letter_counts(again) == {}


async def test_a_redrive_that_cannot_create_its_task_leaves_the_dead_letter(store: Store) -> None:
    await store.create_queue(queue(), T0)
    await dead_letter(store, "d0")
    await store.create_task(task("taken"), T0)
    key = await end_key(store, TaskName(Q, "d0"))
    with pytest.raises(AlreadyExists):
        await store.redrive_task(TaskName(Q, "d0"), key, task("taken"), T0)
    [end], _ = await store.task_history(TaskName(Q, "d0"), T0)
    assert end.dead_letter
    assert await store.dead_letter_counts(T0) == {Q: 1}


async def test_only_a_failed_end_is_redriven(store: Store) -> None:
    await store.create_queue(queue(), T0)
    done = await claimed(store, "ok")
    end = AttemptResult(
        done.name, 1, None, attempt=record(done, 200), finish=FinishReason.SUCCEEDED, finish_time=T0
    )
    await store.finish_attempts([end], KEEP)
    with pytest.raises(NotFound, match="not a kept dead letter"):
        await store.redrive_task(done.name, await end_key(store, done.name), task("again"), T0)
    await dead_letter(store, "old")
    key = await end_key(store, TaskName(Q, "old"))
    with pytest.raises(NotFound, match="not a kept dead letter"):  # past its keep time
        await store.redrive_task(TaskName(Q, "old"), key, task("again"), T0 + timedelta(days=8))
