"""The dashboard in a real browser, on a server without tokens: what an operator sees and does,
each change checked through the Cloud Tasks API with the official client."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import tasks_v2
from selenium.webdriver.common.by import By

from tests.browser.conftest import Dashboard
from tests.integration.handlers import HandlerProcess

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PARENT = "projects/ui/locations/us-central1"
XSS = "<img src=x onerror=alert(1)>"
TABS = ("due", "scheduled", "retrying", "in_flight", "succeeded", "failed", "deleted")
NOWHERE = "http://127.0.0.1:9/never"  # tasks of paused queues only: never sent


def make_queue(
    client: tasks_v2.CloudTasksClient, queue_id: str, *, paused: bool = False, **fields: Any
) -> str:
    name = f"{PARENT}/queues/{queue_id}"
    client.create_queue(parent=PARENT, queue={"name": name, **fields})
    if paused:
        client.pause_queue(name=name)
    return name


def add_task(client: tasks_v2.CloudTasksClient, queue: str, task_id: str, **request: Any) -> None:
    client.create_task(
        parent=queue, task={"name": f"{queue}/tasks/{task_id}", "http_request": {"url": NOWHERE, **request}}
    )


def open_queue(ui: Dashboard, queue_id: str) -> None:
    """From the overview, follow the queue's row to its page."""
    ui.open()
    ui.click(f'table#queues tr[data-queue="{queue_id}"] a.queue-link')
    ui.find("#queue-state")


def open_tab(ui: Dashboard, state: str) -> None:
    ui.click(f'a.tab[data-state="{state}"]')
    ui.find(f'a.tab.active[data-state="{state}"]')


def state_of(client: tasks_v2.CloudTasksClient, queue: str) -> tasks_v2.Queue.State:
    return client.get_queue(name=queue).state


def test_the_overview_lists_every_queue_with_its_state_and_dead_letters(
    ui: Dashboard, client: tasks_v2.CloudTasksClient, handler: HandlerProcess
) -> None:
    emails = make_queue(client, "emails")
    for n in range(8):
        add_task(client, emails, f"welcome-{n}", url=handler.url(f"/emails/welcome/{n}"))
    orders = make_queue(client, "orders", retry_config={"max_attempts": 1})
    for n in range(5):
        add_task(client, orders, f"order-{n}", url=handler.url(f"/orders/{n}/confirm"))
    add_task(client, orders, "order-5", url=handler.url("/plan/500"))
    later = datetime.now(UTC) + timedelta(hours=1)
    for n in range(4):
        request = {"url": handler.url(f"/invoices/{n}"), "http_method": tasks_v2.HttpMethod.PUT}
        task = {"name": f"{orders}/tasks/invoice-{n}", "http_request": request}
        client.create_task(parent=orders, task={**task, "schedule_time": later + timedelta(minutes=n)})
    webhooks = make_queue(client, "webhooks", paused=True)
    for n in range(3):
        add_task(client, webhooks, f"hook-{n}", url=handler.url(f"/hooks/{n}"))
    assert len(handler.take(14)) == 14

    ui.open()
    row = 'table#queues tr[data-queue="{}"]'.format
    assert ui.find(row("emails")).get_attribute("data-queue-name") == emails
    ui.wait_text(f"{row('orders')} a.dead-link", "1")  # the overview refreshes itself every 2 s
    assert "PAUSED" in ui.text_of(row("webhooks"))
    assert "RUNNING" in ui.text_of(row("emails"))

    ui.click(f"{row('orders')} a.queue-link")
    open_tab(ui, "scheduled")
    assert [r.get_attribute("data-task-id") for r in ui.all("tr[data-task-id]")] == [
        f"invoice-{n}" for n in range(4)
    ]
    assert "PUT" in ui.text_of('tr[data-task-id="invoice-0"]')
    ui.screenshot("queue")


def test_the_overview_charts_recent_outcomes(ui: Dashboard) -> None:
    ui.open()
    row = 'table#queues tr[data-queue="{}"]'.format  # the attempts of the test above
    ui.until(
        lambda _: (
            ui.all(f"{row('emails')} svg rect.bar-ok") and ui.all(f"{row('orders')} svg rect.bar-failed")
        ),
        "no bars for the attempts of the last minutes",
        timeout_s=20,  # counts reach the store every 10 s, the overview is polled every 2 s
    )
    ui.screenshot("overview")


def test_pausing_and_resuming_a_queue_in_the_page_reaches_the_api(
    ui: Dashboard, client: tasks_v2.CloudTasksClient
) -> None:
    queue = make_queue(client, "pausing")
    open_queue(ui, "pausing")
    assert ui.text_of("#queue-state") == "RUNNING"

    ui.press("pause")
    ui.wait_text("#queue-state", "PAUSED")
    assert state_of(client, queue) == tasks_v2.Queue.State.PAUSED
    assert "paused" in ui.text_of(".flash")

    ui.press("resume")
    ui.wait_text("#queue-state", "RUNNING")
    assert state_of(client, queue) == tasks_v2.Queue.State.RUNNING


def test_purge_asks_first(ui: Dashboard, client: tasks_v2.CloudTasksClient) -> None:
    queue = make_queue(client, "purging", paused=True)
    for n in range(3):
        add_task(client, queue, f"t{n}")
    open_queue(ui, "purging")
    ui.find('tr[data-task-id="t2"]')

    ui.press("purge", confirm=False)
    assert len(list(client.list_tasks(parent=queue))) == 3
    ui.press("purge", confirm=True)
    ui.find(".flash")
    assert "purged" in ui.text_of(".flash")
    ui.until(lambda _: not list(client.list_tasks(parent=queue)), "the queue kept its tasks")


def test_the_selected_tasks_buttons_wait_for_a_tick(ui: Dashboard, client: tasks_v2.CloudTasksClient) -> None:
    queue = make_queue(client, "ticking", paused=True)
    for n in range(2):
        add_task(client, queue, f"t{n}")
    open_queue(ui, "ticking")
    ui.find('tr[data-task-id="t1"]')
    run = 'form#bulk button[data-needs-selection][value="run"]'
    ui.until(lambda _: not ui.find(run).is_enabled(), "Run now is enabled with nothing ticked")
    assert not ui.find('form#bulk button[data-needs-selection][value="delete"]').is_enabled()
    assert ui.text_of("form#bulk .selected-count") == "None selected"

    ui.click('tr[data-task-id="t0"] input[name=task]')
    ui.until(lambda _: ui.find(run).is_enabled(), "Run now stayed disabled with a task ticked")
    assert ui.text_of("form#bulk .selected-count") == "1 selected"
    ui.click("form#bulk input.select-all")
    ui.wait_text("form#bulk .selected-count", "2 selected")
    ui.click("form#bulk input.select-all")
    ui.wait_text("form#bulk .selected-count", "None selected")
    assert not ui.find(run).is_enabled()


def test_a_dead_letter_is_found_explained_and_redriven(
    ui: Dashboard, client: tasks_v2.CloudTasksClient, handler: HandlerProcess
) -> None:
    handler.set_status("dead-letter", 500)
    retry = {
        "max_attempts": 2,
        "min_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(milliseconds=100),
    }
    queue = make_queue(client, "dead-letters", retry_config=retry)
    request = {"url": handler.url("/switch/dead-letter"), "body": b'{"order": 7}'}
    client.create_task(parent=queue, task={"name": f"{queue}/tasks/doomed", "http_request": request})
    assert [r.path for r in handler.take(2)] == ["/switch/dead-letter"] * 2

    open_queue(ui, "dead-letters")
    open_tab(ui, "failed")
    ui.find('tr[data-task-id="doomed"]')  # the table is refreshed every 2 s
    ui.screenshot("queue-failed")
    ui.click('tr[data-task-id="doomed"] a.task-link')

    assert "/switch/dead-letter" in ui.text_of("#task-request")
    attempts = ui.until(lambda _: len(found := ui.all("#attempts li.attempt")) == 2 and found)
    assert [a.find_element(By.CSS_SELECTOR, ".status-code").text for a in attempts] == ["500", "500"]
    assert ui.text_of("#task-finish") == "max_attempts"
    ui.screenshot("task")

    handler.set_status("dead-letter", 200)
    ui.press("redrive")
    [again] = handler.take(1)
    assert (again.path, again.body) == ("/switch/dead-letter", b'{"order": 7}')
    created = again.header("X-CloudTasks-TaskName")
    assert created not in (None, "doomed")
    ui.find(".flash")
    ui.until(lambda d: d.current_url.endswith(f"/tasks/{created}"), "not on the new task's page")

    ui.open(f"{queue}/tasks/doomed")  # the dead letter now names the task it became, once
    assert ui.text_of("#task-redriven").startswith(f"· redriven as {created}")
    assert ui.absent('button[value="redrive"]')
    ui.screenshot("task-redriven")
    open_queue(ui, "dead-letters")
    open_tab(ui, "failed")
    assert ui.absent('tr[data-task-id="doomed"]')  # no longer a dead letter


def test_an_unreachable_handler_is_told_in_words_and_the_task_waits_for_its_retry(
    ui: Dashboard, client: tasks_v2.CloudTasksClient
) -> None:
    retry = {"max_attempts": 5, "min_backoff": timedelta(minutes=5), "max_backoff": timedelta(minutes=5)}
    queue = make_queue(client, "unreachable", retry_config=retry)
    add_task(client, queue, "nobody-home")  # NOWHERE: a closed local port
    ui.until(lambda _: client.get_task(name=f"{queue}/tasks/nobody-home").dispatch_count == 1)

    ui.open(f"{queue}/tasks/nobody-home")
    attempt = ui.find("#attempts li.attempt")
    assert attempt.find_element(By.CSS_SELECTOR, ".status-code").text == "unreachable"
    assert attempt.find_element(By.CSS_SELECTOR, ".failure-label").text == "Connection refused"
    assert ui.text_of("#task-state") == "RETRYING"  # not in flight: the attempt has ended
    ui.click("#attempts details.attempt-detail summary")
    assert ui.text_of("#attempts .raw-error")  # the raw error, on demand
    ui.screenshot("task-unreachable")


def test_a_setting_the_api_refuses_shows_its_message_and_a_valid_one_is_applied(
    ui: Dashboard, client: tasks_v2.CloudTasksClient
) -> None:
    queue = make_queue(client, "settings")
    before = client.get_queue(name=queue)
    open_queue(ui, "settings")

    fill(ui, max_attempts="-5")
    ui.press("save", within="form#queue-settings")
    assert "maxAttempts must be greater or equal to -1" in ui.text_of(".flash.error")
    refused = ui.find("form#queue-settings input[name=max_attempts]")
    assert refused.get_attribute("aria-invalid") == "true"  # the field is marked, in the form's words
    assert ui.text_of("form#queue-settings #e-max_attempts") == "Max attempts must be greater or equal to -1."
    assert ui.find("form#queue-settings input[name=min_backoff]").get_attribute("aria-invalid") is None
    ui.screenshot("queue-settings-refused")
    assert client.get_queue(name=queue).retry_config == before.retry_config

    fill(ui, max_attempts="7", max_dispatches_per_second="3", min_backoff="0.5s")
    ui.press("save", within="form#queue-settings")
    ui.wait_text(".flash", "Settings saved")
    assert ui.absent(".flash.error")
    after = client.get_queue(name=queue)
    assert after.retry_config.max_attempts == 7
    assert after.rate_limits.max_dispatches_per_second == 3
    assert after.retry_config.min_backoff == timedelta(seconds=0.5)
    assert ui.find("form#queue-settings input[name=max_attempts]").get_attribute("value") == "7"


def fill(ui: Dashboard, **values: str) -> None:
    """Type ``values`` into the settings form's inputs of those names."""
    for name, value in values.items():
        field = ui.find(f"form#queue-settings input[name={name}]")
        field.clear()
        field.send_keys(value)


def test_no_page_breaks_the_content_security_policy(ui: Dashboard, client: tasks_v2.CloudTasksClient) -> None:
    with urllib.request.urlopen(ui.base, timeout=10) as answer:
        policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy

    queue = make_queue(client, "csp", paused=True)
    add_task(client, queue, "t1", body=b'{"a": [1, 2]}', headers={"Content-Type": "application/json"})
    ui.open()
    ui.find("table#queues")
    assert ui.csp_violations() == []
    open_queue(ui, "csp")
    assert ui.csp_violations() == []
    for state in TABS:
        open_tab(ui, state)
        assert ui.csp_violations() == [], state
    open_tab(ui, "due")
    ui.click('tr[data-task-id="t1"] a.task-link')
    ui.find("#task-request")
    assert ui.csp_violations() == []
    ui.open("no/such/page")
    ui.find("main")
    assert ui.csp_violations() == []

    # The check sees violations: an inline script is refused, and reported.
    ui.driver.execute_script(
        "const s = document.createElement('script');"
        " s.textContent = 'window.inlineRan = true'; document.head.appendChild(s);"
    )
    ui.until(lambda _: ui.csp_violations(), "the refused inline script was not reported")
    assert ui.driver.execute_script("return window.inlineRan === undefined")


def test_markup_in_a_task_is_shown_as_text(ui: Dashboard, client: tasks_v2.CloudTasksClient) -> None:
    queue = make_queue(client, "markup", paused=True)
    request = {"url": f"http://127.0.0.1:9/{XSS}", "headers": {"X-Markup": XSS}, "body": XSS.encode()}
    client.create_task(parent=queue, task={"name": f"{queue}/tasks/xss", "http_request": request})
    assert client.get_task(name=f"{queue}/tasks/xss").dispatch_count == 0

    open_queue(ui, "markup")
    assert XSS in ui.text_of('tr[data-task-id="xss"]')
    assert_inert(ui)
    ui.click('tr[data-task-id="xss"] a.task-link')
    assert ui.text_of("#task-request").count(XSS) == 3  # the URL, the header and the body
    assert_inert(ui)
    ui.screenshot("task-markup")

    open_queue(ui, "markup")
    ui.find("form#search input[name=q]").send_keys(XSS)
    ui.click("form#search button[type=submit]")
    ui.until(lambda d: "q=" in d.current_url, "the search was not sent")
    assert XSS in ui.text_of('tr[data-task-id="xss"]')
    assert ui.find("form#search input[name=q]").get_attribute("value") == XSS
    assert_inert(ui)
    assert client.get_task(name=f"{queue}/tasks/xss").dispatch_count == 0  # looking sent nothing


def assert_inert(ui: Dashboard) -> None:
    """No element was made of the markup, so no handler of it can run, and no alert is open."""
    assert ui.driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert not ui.alert_open()
