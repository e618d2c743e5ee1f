"""The web dashboard in process: pages, fragments, actions, escaping, cursors and bad input."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html import unescape

import pytest

from opentasks.domain.history import FinishedTask, FinishReason
from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.queue import QueueState, RetryConfig
from opentasks.domain.task import AttemptOutcome, TaskView
from opentasks.errors import NotFound
from opentasks.service import dashboard
from opentasks.service.dashboard import TaskDetail
from opentasks.web.dashboard import CONTENT_SECURITY_POLICY
from tests.contract.test_store_contract import task
from tests.unit.test_dashboard_helpers import ONE_ATTEMPT, QUEUE_PATH, Q, Site, dashboard_site

TABS = ("due", "scheduled", "retrying", "in_flight", "succeeded", "failed", "deleted")


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with dashboard_site() as opened:
        yield opened


def task_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-task-id="([^"]+)"', page)


def flashes(page: str) -> list[str]:
    return [unescape(m) for m in re.findall(r'<div class="flash[^"]*"[^>]*>([^<]*)</div>', page)]


def error_flashes(page: str) -> list[str]:
    return [unescape(m) for m in re.findall(r'<div class="flash error"[^>]*>([^<]*)</div>', page)]


# -- pages -------------------------------------------------------------------------------------


async def test_the_overview_lists_every_queue_with_its_numbers(site: Site) -> None:
    world = site.world
    await world.queue(retry_config=ONE_ATTEMPT)
    other = QueueName("proj", "loc", "thumbs")
    await world.queue(other)
    await world.queues.pause_queue(other)
    await world.task()  # due
    await world.task(after_s=60)  # scheduled
    await world.dead_letter("lost")
    await world.outcomes(Q, (3, 1), (5, 0))
    status, page = await site.get("/ui/")
    assert status == 200
    row = re.search(r'<tr data-queue="emails".*?</tr>', page, re.S)
    assert row is not None
    assert "RUNNING" in row[0]
    assert 'class="bar-ok"' in row[0] and 'class="bar-failed"' in row[0]  # the chart
    assert f'href="{QUEUE_PATH}?tab=failed"' in row[0]  # dead letters link to the failed tab
    assert re.search(r'<tr data-queue="thumbs".*?PAUSED', page, re.S)


async def test_the_overview_without_queues_says_how_to_make_one(site: Site) -> None:
    status, page = await site.get("/ui/")
    assert status == 200
    assert "No queues yet" in page
    assert 'id="queues"' not in page


async def test_the_overview_fragment_is_the_live_section_alone(site: Site) -> None:
    await site.world.queue()
    status, fragment = await site.get("/ui/?fragment=queues")
    assert status == 200
    assert fragment.lstrip().startswith('<section id="queues-live"')
    assert "<html" not in fragment
    assert 'hx-trigger="every 2s"' in fragment


async def test_every_tab_of_a_queue_renders(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    await site.world.task()
    await site.world.dead_letter("gone")
    for tab in TABS:
        status, page = await site.get(f"{QUEUE_PATH}?tab={tab}")
        assert status == 200, tab
        assert f'class="tab active" data-state="{tab}"' in page
        for other in TABS:
            assert f'data-state="{other}"' in page
        assert '<span id="queue-state" class="state state-running">RUNNING</span>' in page
    _, failed = await site.get(f"{QUEUE_PATH}?tab=failed")
    assert task_ids(failed) == ["gone"]
    assert f'<a class="task-link mono" href="{QUEUE_PATH}/tasks/gone">' in failed


async def test_tasks_land_in_the_tab_of_their_state(site: Site) -> None:
    world = site.world
    await world.queue(retry_config=RetryConfig(max_attempts=5))
    due = await world.task("https://h.example/due")
    later = await world.task("https://h.example/later", after_s=3600)
    world.pusher.scripts["https://h.example/retry"] = [AttemptOutcome(http_status=503)]
    retry = await world.task("https://h.example/retry")
    world.pusher.hold = True
    await world.dispatcher.run_once()
    await world.pusher.release(0)  # due and retry are now in flight
    _, in_flight = await site.get(f"{QUEUE_PATH}?tab=in_flight")
    assert sorted(task_ids(in_flight)) == sorted([due.name.task_id, retry.name.task_id])
    await world.pusher.release(2)
    await world.dispatcher.settle()
    _, retrying = await site.get(f"{QUEUE_PATH}?tab=retrying")
    assert task_ids(retrying) == [retry.name.task_id]
    _, scheduled = await site.get(f"{QUEUE_PATH}?tab=scheduled")
    assert task_ids(scheduled) == [later.name.task_id]
    _, succeeded = await site.get(f"{QUEUE_PATH}?tab=succeeded")
    assert task_ids(succeeded) == [due.name.task_id]


async def test_the_queue_fragments_are_their_sections(site: Site) -> None:
    await site.world.queue()
    await site.world.task()
    _, live = await site.get(f"{QUEUE_PATH}?fragment=live")
    assert live.lstrip().startswith('<section id="queue-live"')
    assert 'id="queue-state"' in live
    _, tasks = await site.get(f"{QUEUE_PATH}?tab=due&fragment=tasks")
    assert tasks.lstrip().startswith('<div id="tasks-live"')
    assert len(task_ids(tasks)) == 1


async def test_a_live_task_shows_its_request(site: Site) -> None:
    await site.world.queue()
    task = await site.world.task(
        "https://h.example/hook?x=1", headers={"X-Tenant": "acme"}, body=b'{"user":7,"tags":["a"]}'
    )
    status, page = await site.get(f"{QUEUE_PATH}/tasks/{task.name.task_id}")
    assert status == 200
    request = page[page.index('id="task-request"') :]
    assert "https://h.example/hook?x=1" in request
    assert "X-Tenant" in request and "acme" in request
    assert "body-json" in request and "&#34;user&#34;: 7,\n  &#34;tags&#34;: [" in request
    assert f'href="{QUEUE_PATH}"' in page  # the task links to its queue
    assert '<span id="task-state" class="state state-due">DUE</span>' in page
    assert 'value="run"' in page and 'value="delete"' in page and 'value="redrive"' not in page


async def test_a_binary_body_is_shown_in_hex_and_text_as_text(site: Site) -> None:
    await site.world.queue()
    binary = await site.world.task(body=bytes(range(20)))
    text = await site.world.task(body=b"plain words, not JSON")
    _, page = await site.get(f"{QUEUE_PATH}/tasks/{binary.name.task_id}")
    assert "body-hex" in page and "00000000  00 01 02 03" in page
    _, page = await site.get(f"{QUEUE_PATH}/tasks/{text.name.task_id}")
    assert "body-text" in page and "plain words, not JSON" in page


async def test_a_dead_letter_shows_its_end_and_attempts(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    name = await site.world.dead_letter("doomed", status=503, body=b"upstream down")
    status, page = await site.get(f"{QUEUE_PATH}/tasks/{name.task_id}")
    assert status == 200
    assert re.search(r'id="task-finish"[^>]*>max_attempts<', page)
    attempts = re.findall(r'<li class="attempt [^"]*".*?</li>', page, re.S)
    assert len(attempts) == 1 and "503" in attempts[0] and "upstream down" in attempts[0]
    assert 'value="redrive"' in page and 'value="run"' not in page
    assert f'href="{QUEUE_PATH}?tab=failed"' in page


async def test_missing_queues_tasks_and_pages_are_404_pages(site: Site) -> None:
    await site.world.queue()
    for path in (
        "/ui/projects/proj/locations/loc/queues/nope",
        "/ui/projects/proj/locations/loc/queues/bad_id!",
        f"{QUEUE_PATH}/tasks/nope",
        "/ui/projects/proj/locations/loc/queues/nope/tasks/t",
        "/ui/no/such/page",
    ):
        status, page = await site.get(path)
        assert status == 404, path
        assert "<h1>Not found</h1>" in page


@pytest.mark.parametrize(
    "query",
    [
        "tab=nope",
        "tab=due&cursor=garbage",
        "tab=due&cursor=1.2.3",
        "tab=failed&cursor=-5",
        "tab=failed&cursor=abc",
        "q=" + "x" * 201,
    ],
)
async def test_bad_parameters_are_400_pages_not_500(site: Site, query: str) -> None:
    await site.world.queue()
    status, page = await site.get(f"{QUEUE_PATH}?{query}")
    assert status == 400
    assert "<h1>Bad request</h1>" in page


# -- pages of tasks ----------------------------------------------------------------------------


async def test_cursor_pages_walk_a_tab_without_gaps_or_repeats(site: Site) -> None:
    await site.world.queue()
    made = {(await site.world.task(after_s=10 + i)).name.task_id for i in range(120)}
    seen: list[str] = []
    path = f"{QUEUE_PATH}?tab=scheduled"
    pages = 0
    while path:
        status, page = await site.get(path)
        assert status == 200
        seen += task_ids(page)
        pages += 1
        found = re.search(r'class="btn btn-small next-page" rel="next" href="([^"]+)"', page)
        path = found[1].replace("&amp;", "&") if found else ""
    assert pages == 3
    assert len(seen) == 120 and set(seen) == made


async def test_history_tabs_page_by_cursor_too(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    for i in range(60):
        await site.world.dead_letter(f"t{i}")
    _, first = await site.get(f"{QUEUE_PATH}?tab=failed")
    assert len(task_ids(first)) == 50
    found = re.search(r'rel="next" href="([^"]+)"', first)
    assert found is not None
    _, second = await site.get(found[1].replace("&amp;", "&"))
    assert len(task_ids(second)) == 10
    assert not set(task_ids(first)) & set(task_ids(second))


async def test_search_finds_tasks_by_url_header_and_id(site: Site) -> None:
    await site.world.queue()
    await site.world.task("https://h.example/invoices/1")
    tagged = await site.world.task("https://h.example/other", headers={"X-Tenant": "Acme-Corp"})
    await site.world.task("https://h.example/invoices/2", name="named-task")
    _, page = await site.get(f"{QUEUE_PATH}?tab=due&q=invoices")
    assert len(task_ids(page)) == 2
    _, page = await site.get(f"{QUEUE_PATH}?tab=due&q=acme-corp")
    assert task_ids(page) == [tagged.name.task_id]
    _, page = await site.get(f"{QUEUE_PATH}?tab=due&q=named")
    assert task_ids(page) == ["named-task"]
    assert 'value="named"' in page  # the search box keeps the text


async def test_search_in_a_history_tab(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    await site.world.dead_letter("alpha")
    await site.world.dead_letter("beta")
    _, page = await site.get(f"{QUEUE_PATH}?tab=failed&q=ALPHA")
    assert task_ids(page) == ["alpha"]


# -- escaping ----------------------------------------------------------------------------------

NASTY = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


async def test_nothing_from_a_task_becomes_html(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    url = 'https://h.example/x?a=<script>alert(1)</script>&b="><img src=x onerror=alert(2)>'
    site.world.pusher.scripts[url] = [AttemptOutcome(http_status=500, response_body=NASTY.encode())]
    task = await site.world.task(url, headers={"X-Evil": NASTY}, body=NASTY.encode())
    _, queue_page = await site.get(f"{QUEUE_PATH}?tab=due&q=" + "%3Cscript%3E")
    await site.world.step()
    _, task_page = await site.get(f"{QUEUE_PATH}/tasks/{task.name.task_id}")
    _, failed_page = await site.get(f"{QUEUE_PATH}?tab=failed")
    for page in (queue_page, task_page, failed_page):
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "onerror=alert(2)>" not in page or "&lt;img" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in task_page
    assert "&lt;img src=x onerror=alert(2)&gt;" in task_page
    assert "&lt;script&gt;" in queue_page  # the search text, echoed


async def test_pages_carry_no_inline_script_or_style(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    name = await site.world.dead_letter("x")
    for path in ("/ui/", QUEUE_PATH, f"{QUEUE_PATH}/tasks/{name.task_id}", "/ui/nope"):
        _, page = await site.get(path)
        assert " style=" not in page and "<style" not in page, path
        assert re.findall(r"<script(?![^>]*\bsrc=)", page) == [], path
        assert " on" not in re.sub(r'"[^"]*"', '""', page).replace(" only", ""), path  # no onclick=...
        assert '"allowEval":false' in page and '"allowScriptTags":false' in page
        assert '"includeIndicatorStyles":false' in page


# -- security headers and static files ---------------------------------------------------------


async def test_every_ui_response_carries_the_security_headers(site: Site) -> None:
    await site.world.queue()
    for path in ("/ui/", QUEUE_PATH, "/ui/nope", "/ui/static/app.css", "/ui/static/nope.js", "/ui"):
        async with site.client.get(path, allow_redirects=False) as response:
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_pages_are_not_cached_and_static_files_are(site: Site) -> None:
    async with site.client.get("/ui/") as response:
        assert response.headers["Cache-Control"] == "no-store"
        page = await response.text()
    htmx = re.search(r'src="(/ui/static/vendor/htmx\.min\.js\?v=[0-9a-f]+)"', page)
    assert htmx is not None
    async with site.client.get(htmx[1]) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert "immutable" in response.headers["Cache-Control"]
        etag = response.headers["ETag"]
        assert b"htmx" in await response.read()
    async with site.client.get(htmx[1], headers={"If-None-Match": etag}) as response:
        assert response.status == 304
    async with site.client.get("/ui/static/vendor/htmx.LICENSE") as response:
        assert response.status == 200 and "BSD" in await response.text()


async def test_ui_without_a_slash_goes_to_the_overview(site: Site) -> None:
    async with site.client.get("/ui", allow_redirects=False) as response:
        assert response.status == 301
        assert response.headers["Location"] == "/ui/"


# -- queue actions -----------------------------------------------------------------------------


async def test_pause_resume_and_purge(site: Site) -> None:
    await site.world.queue()
    await site.world.task()
    await site.get(QUEUE_PATH)
    status, page = await site.post(QUEUE_PATH, {"action": "pause"})
    assert status == 200
    assert '<span id="queue-state" class="state state-paused">PAUSED</span>' in page
    assert flashes(page) == ["Queue emails paused: no task is sent until it is resumed."]
    assert (await site.world.queues.get_queue(Q)).state == QueueState.PAUSED
    _, page = await site.post(QUEUE_PATH, {"action": "resume"})
    assert "RUNNING</span>" in page
    site.world.clock.advance(1)  # purge removes the tasks created before it
    _, page = await site.post(QUEUE_PATH, {"action": "purge"})
    assert "purged" in flashes(page)[0]
    assert task_ids(page) == []


async def test_the_flash_is_shown_once(site: Site) -> None:
    await site.world.queue()
    await site.get(QUEUE_PATH)
    _, page = await site.post(QUEUE_PATH, {"action": "pause"})
    assert flashes(page)
    _, again = await site.get(QUEUE_PATH)
    assert flashes(again) == []


async def test_saving_settings_changes_only_what_was_edited(site: Site) -> None:
    await site.world.queue()
    _, page = await site.get(QUEUE_PATH)
    form = dict(re.findall(r'<input id="f-[a-z_]+" name="([a-z_]+)" value="([^"]*)"', page))
    assert form["max_dispatches_per_second"] == "500" and form["min_backoff"] == "0.1s"
    form |= {"max_dispatches_per_second": "7.5", "max_attempts": "4", "max_backoff": "120"}
    status, page = await site.post(QUEUE_PATH, {"action": "save", **form})
    assert status == 200
    assert flashes(page) == ["Settings saved (max_dispatches_per_second, max_attempts, max_backoff)."]
    queue = await site.world.queues.get_queue(Q)
    assert queue.rate_limits.max_dispatches_per_second == 7.5
    assert queue.rate_limits.max_burst_size == 10  # derived from the new rate, as on Cloud Tasks
    assert queue.retry_config.max_attempts == 4
    assert (
        queue.retry_config.max_backoff is not None and queue.retry_config.max_backoff.total_seconds() == 120
    )
    assert 'name="max_dispatches_per_second" value="7.5"' in page


async def test_settings_are_checked_by_the_api_and_the_input_stays(site: Site) -> None:
    await site.world.queue()
    await site.get(QUEUE_PATH)
    status, page = await site.post(QUEUE_PATH, {"action": "save", "min_backoff": "50s", "max_backoff": "10s"})
    assert status == 200
    assert error_flashes(page) == [
        "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff."
    ]
    assert 'name="min_backoff" value="50s"' in page  # what was typed is still there
    status, page = await site.post(QUEUE_PATH, {"action": "save", "max_dispatches_per_second": "fast"})
    assert error_flashes(page) == ["max_dispatches_per_second: 'fast' is not a number."]
    _, page = await site.post(QUEUE_PATH, {"action": "save", "max_dispatches_per_second": "9999"})
    assert error_flashes(page) == ["RateLimits.maxDispatchesPerSecond must be less than or equal to 500."]
    assert (await site.world.queues.get_queue(Q)).rate_limits.max_dispatches_per_second == 500


async def test_the_burst_is_set_only_on_queue_yaml_queues(site: Site) -> None:
    await site.world.queue()
    _, page = await site.get(QUEUE_PATH)
    assert re.search(r'name="max_burst_size" value="100"[^>]*readonly', page)
    _, page = await site.post(QUEUE_PATH, {"action": "save", "max_burst_size": "3"})
    assert "max_burst_size is derived from max_dispatches_per_second" in error_flashes(page)[0]


async def test_nothing_to_save(site: Site) -> None:
    await site.world.queue()
    await site.get(QUEUE_PATH)
    _, page = await site.post(QUEUE_PATH, {"action": "save", "max_attempts": "100"})
    assert flashes(page) == ["Nothing changed."]


async def test_a_queue_action_on_a_deleted_queue_is_a_flash_or_404(site: Site) -> None:
    await site.world.queue()
    await site.get(QUEUE_PATH)
    await site.world.queues.delete_queue(Q)
    status, _ = await site.post(QUEUE_PATH, {"action": "pause"}, follow=False)
    assert status == 303  # the flash says why; the page it goes to is a 404
    status, _page = await site.get(QUEUE_PATH)
    assert status == 404


async def test_an_unknown_action_is_a_400_page(site: Site) -> None:
    await site.world.queue()
    await site.get(QUEUE_PATH)
    status, _ = await site.post(QUEUE_PATH, {"action": "explode"})
    assert status == 400


# -- task actions ------------------------------------------------------------------------------


async def test_run_a_task_now(site: Site) -> None:
    await site.world.queue()
    task = await site.world.task(after_s=3600)
    await site.get(f"{QUEUE_PATH}/tasks/{task.name.task_id}")
    status, page = await site.post(f"{QUEUE_PATH}/tasks/{task.name.task_id}", {"action": "run"})
    assert status == 200
    assert flashes(page) == [f"Task {task.name.task_id} sent now (attempt 1)."]
    await site.world.dispatcher.settle()
    assert len(site.world.pusher.sent) == 1


async def test_delete_a_task(site: Site) -> None:
    await site.world.queue()
    task = await site.world.task()
    await site.get(f"{QUEUE_PATH}/tasks/{task.name.task_id}")
    _, page = await site.post(f"{QUEUE_PATH}/tasks/{task.name.task_id}", {"action": "delete"})
    assert flashes(page) == [f"Task {task.name.task_id} deleted."]
    with pytest.raises(NotFound):
        await site.world.tasks.get_task(task.name, TaskView.BASIC)
    _, finished = await site.get(f"{QUEUE_PATH}/tasks/{task.name.task_id}")
    assert re.search(r'id="task-finish"[^>]*>deleted<', finished)


async def test_redrive_a_dead_letter(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    name = await site.world.dead_letter("bounced")
    await site.get(f"{QUEUE_PATH}/tasks/bounced")
    status, page = await site.post(f"{QUEUE_PATH}/tasks/bounced", {"action": "redrive"})
    assert status == 200
    message = flashes(page)[0]
    assert message.startswith("Task bounced redriven as the new task ")
    new_id = message.rsplit(" ", 1)[1].rstrip(".")
    assert (await site.world.tasks.get_task(TaskName(Q, new_id), TaskView.FULL)).http_request is not None
    assert name.task_id in page or new_id in page


async def test_service_errors_are_flashes_not_500s(site: Site) -> None:
    await site.world.queue()
    task = await site.world.task()
    await site.get(f"{QUEUE_PATH}/tasks/{task.name.task_id}")
    await site.world.tasks.delete_task(task.name)
    _, page = await site.post(f"{QUEUE_PATH}/tasks/{task.name.task_id}", {"action": "run"}, follow=True)
    assert error_flashes(page)  # NOT_FOUND from RunTask, shown on the task page (now finished)
    _, page = await site.post(f"{QUEUE_PATH}/tasks/{task.name.task_id}", {"action": "redrive"})
    assert "is not a kept dead letter" in error_flashes(page)[0]


# -- bulk actions ------------------------------------------------------------------------------


async def test_bulk_delete_and_run_the_selected_tasks(site: Site) -> None:
    await site.world.queue()
    tasks = [await site.world.task(after_s=100) for _ in range(4)]
    await site.get(f"{QUEUE_PATH}?tab=scheduled")
    chosen = [("task", t.name.task_id) for t in tasks[:2]]
    form = [("action", "delete"), ("scope", "selected"), ("tab", "scheduled"), ("q", ""), *chosen]
    _, page = await site.post(f"{QUEUE_PATH}/bulk", form)
    assert flashes(page) == ["Deleted 2 tasks."]
    assert sorted(task_ids(page)) == sorted(t.name.task_id for t in tasks[2:])
    form = [("action", "run"), ("scope", "selected"), ("tab", "scheduled"), ("task", tasks[2].name.task_id)]
    _, page = await site.post(f"{QUEUE_PATH}/bulk", form)
    assert flashes(page) == ["Sent 1 task now."]
    await site.world.dispatcher.settle()
    assert len(site.world.pusher.sent) == 1


async def test_bulk_with_nothing_selected_says_so(site: Site) -> None:
    await site.world.queue()
    await site.get(QUEUE_PATH)
    _, page = await site.post(f"{QUEUE_PATH}/bulk", {"action": "delete", "scope": "selected", "tab": "due"})
    assert error_flashes(page) == ["Select tasks first (the boxes on the left)."]


async def test_bulk_all_matching_acts_on_the_tab_and_search(site: Site) -> None:
    await site.world.queue()
    for i in range(3):
        await site.world.task(f"https://h.example/invoices/{i}")
    keep = await site.world.task("https://h.example/keep")
    await site.get(QUEUE_PATH)
    form = {"action": "delete", "scope": "all", "tab": "due", "q": "invoices"}
    _, page = await site.post(f"{QUEUE_PATH}/bulk", form)
    assert flashes(page) == ["Deleted 3 tasks."]
    _, page = await site.get(f"{QUEUE_PATH}?tab=due")
    assert task_ids(page) == [keep.name.task_id]


async def test_bulk_all_is_bounded_and_says_more_remain(site: Site) -> None:
    await site.world.queue()
    for _ in range(1003):
        await site.world.task(after_s=50)
    await site.get(QUEUE_PATH)
    _, page = await site.post(f"{QUEUE_PATH}/bulk", {"action": "delete", "scope": "all", "tab": "scheduled"})
    assert flashes(page) == [
        "Deleted 1,000 tasks. More tasks match: at most 1,000 are done per click; press again to go on."
    ]
    _, page = await site.post(f"{QUEUE_PATH}/bulk", {"action": "delete", "scope": "all", "tab": "scheduled"})
    assert flashes(page) == ["Deleted 3 tasks."]


async def test_bulk_redrive_every_dead_letter(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    for name in ("a", "b"):
        await site.world.dead_letter(name)
    await site.get(f"{QUEUE_PATH}?tab=failed")
    _, page = await site.post(f"{QUEUE_PATH}/bulk", {"action": "redrive", "scope": "all", "tab": "failed"})
    assert flashes(page) == ["Redrove 2 tasks."]
    _, due = await site.get(f"{QUEUE_PATH}?tab=due")
    assert len(task_ids(due)) == 2


async def test_bulk_redrive_all_sends_each_dead_letter_once_past_the_bulk_limit(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "BULK_LIMIT", 2)
    await site.world.queue(retry_config=ONE_ATTEMPT)
    for name in ("a", "b", "c"):
        await site.world.dead_letter(name)
    await site.get(f"{QUEUE_PATH}?tab=failed")
    every = {"action": "redrive", "scope": "all", "tab": "failed"}
    _, page = await site.post(f"{QUEUE_PATH}/bulk", every)
    assert flashes(page)[0].startswith("Redrove 2 tasks. More tasks match")
    _, page = await site.post(f"{QUEUE_PATH}/bulk", every)
    assert flashes(page) == ["Redrove 1 task."]
    assert task_ids(page) == []  # no dead letter left in the Failed tab
    _, due = await site.get(f"{QUEUE_PATH}?tab=due")
    assert len(task_ids(due)) == 3
    _, page = await site.post(f"{QUEUE_PATH}/bulk", every)
    assert len(task_ids((await site.get(f"{QUEUE_PATH}?tab=due"))[1])) == 3  # nothing sent twice


async def test_a_redriven_dead_letter_links_its_new_task_and_is_not_redriven_again(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    await site.world.dead_letter("bounced")
    await site.get(f"{QUEUE_PATH}/tasks/bounced")
    _, page = await site.post(f"{QUEUE_PATH}/tasks/bounced", {"action": "redrive"})
    new_id = flashes(page)[0].rsplit(" ", 1)[1].rstrip(".")
    _, page = await site.get(f"{QUEUE_PATH}/tasks/bounced")
    assert re.search(rf'id="task-redriven".*href="[^"]*/tasks/{new_id}"', page)
    assert 'value="redrive"' not in page
    _, page = await site.post(f"{QUEUE_PATH}/tasks/bounced", {"action": "redrive"})
    assert error_flashes(page) == [f"Dead letter bounced of {Q} was already redriven as task {new_id}."]


async def test_a_bulk_action_that_does_not_fit_the_tab_is_refused(site: Site) -> None:
    await site.world.queue()
    await site.get(QUEUE_PATH)
    _, page = await site.post(f"{QUEUE_PATH}/bulk", {"action": "redrive", "scope": "all", "tab": "due"})
    assert error_flashes(page) == ["'redrive' does not apply to the tasks of the due tab."]


async def test_bulk_buttons_follow_the_tab(site: Site) -> None:
    await site.world.queue()
    _, due = await site.get(f"{QUEUE_PATH}?tab=due")
    assert 'name="action" value="run"' in due and 'name="action" value="delete"' in due
    assert 'hx-confirm="Delete the selected tasks?"' in due
    _, failed = await site.get(f"{QUEUE_PATH}?tab=failed")
    assert 'name="action" value="redrive"' in failed
    _, succeeded = await site.get(f"{QUEUE_PATH}?tab=succeeded")
    assert 'class="bulkbar"' not in succeeded


async def test_a_live_region_that_fails_reloads_its_page(site: Site) -> None:
    await site.world.queue()
    await site.world.queues.delete_queue(Q)
    async with site.client.get(f"{QUEUE_PATH}?fragment=live", headers={"HX-Request": "true"}) as response:
        assert response.status == 404
        assert response.headers["HX-Refresh"] == "true"


async def test_a_searched_history_tab_pages_exactly(site: Site) -> None:
    await site.world.queue(retry_config=ONE_ATTEMPT)
    for i in range(120):
        await site.world.dead_letter(f"{'match' if i % 2 else 'other'}-{i}")
    seen: list[str] = []
    path = f"{QUEUE_PATH}?tab=failed&q=match"
    while path:
        _, page = await site.get(path)
        assert len(task_ids(page)) <= 50
        seen += task_ids(page)
        found = re.search(r'rel="next" href="([^"]+)"', page)
        path = unescape(found[1]) if found else ""
    assert sorted(seen) == sorted(f"match-{i}" for i in range(1, 120, 2))


def test_a_name_is_a_dead_letter_while_any_failed_end_of_it_waits() -> None:
    """As redriving the name takes its latest failed end not yet redriven."""
    when = datetime(2026, 1, 1, tzinfo=UTC)
    waiting = FinishedTask(task("n"), FinishReason.MAX_ATTEMPTS, when, key=1)
    redriven = FinishedTask(task("n"), FinishReason.MAX_ATTEMPTS, when, "again", when, key=2)
    detail = TaskDetail(TaskName(Q, "n"), None, None, [waiting, redriven], [])
    assert detail.dead_letter
    assert not TaskDetail(TaskName(Q, "n"), None, None, [redriven], []).dead_letter
    assert detail.redriven_to(redriven) == TaskName(Q, "again") and detail.redriven_to(waiting) is None
