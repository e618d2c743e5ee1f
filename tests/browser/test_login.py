"""The dashboard of a server with API tokens: it asks for one; a read-only token shows the pages
without their actions and cannot act even by a forged request; a full token acts."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from google.cloud import tasks_v2

import opentasks
from opentasks.testing import ServerProcess
from tests.browser.conftest import Dashboard
from tests.integration.conftest import sqlite_server

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PARENT = "projects/ui-auth/locations/us-central1"
QUEUE = f"{PARENT}/queues/guarded"
HELD = f"{PARENT}/queues/held"  # paused, with a task
NOWHERE = "http://127.0.0.1:9/never"
FULL = "full-dashboard-token"
VIEWER = "viewer-dashboard-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("browser-auth")
    with sqlite_server(folder, "--api-token", FULL, "--api-read-only-token", VIEWER) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> tasks_v2.CloudTasksClient:
    """A client with the full token; the queues the tests look at exist."""
    admin = opentasks.client(server.address, api_token=FULL)
    admin.create_queue(parent=PARENT, queue={"name": QUEUE})
    admin.create_queue(parent=PARENT, queue={"name": HELD})
    admin.pause_queue(name=HELD)
    admin.create_task(parent=HELD, task={"name": f"{HELD}/tasks/t1", "http_request": {"url": NOWHERE}})
    return admin


def submit_token(ui: Dashboard, token: str) -> None:
    ui.find("form#login input[name=token]").send_keys(token)
    ui.click("form#login button[type=submit]")


def log_in(ui: Dashboard, token: str) -> None:
    ui.open()
    submit_token(ui, token)
    ui.find("table#queues")
    ui.find("form#logout")


def log_out(ui: Dashboard) -> None:
    ui.click("form#logout button[type=submit]")
    ui.find("form#login")


def open_queue(ui: Dashboard, queue_id: str) -> None:
    ui.click(f'table#queues tr[data-queue="{queue_id}"] a.queue-link')
    ui.find("#queue-state")


def test_the_dashboard_asks_for_a_token(ui: Dashboard, client: tasks_v2.CloudTasksClient) -> None:
    ui.open()
    ui.find("form#login input[name=token]")
    assert ui.absent("table#queues")
    ui.until(lambda d: "/ui/login" in d.current_url, "not sent to the login page")
    ui.screenshot("login")


def test_a_wrong_token_is_refused_with_a_message(ui: Dashboard, client: tasks_v2.CloudTasksClient) -> None:
    form = urllib.parse.urlencode({"token": "not-a-token", "next": "/ui/"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:  # the server itself explains
        urllib.request.urlopen(urllib.request.Request(f"{ui.base}login", data=form), timeout=10)
    assert refused.value.code == 401
    assert "not one this server accepts" in refused.value.read().decode()
    refused.value.close()

    ui.open()
    submit_token(ui, "not-a-token")
    assert ui.absent("table#queues")
    assert "not one this server accepts" in ui.text_of(".flash.error")
    ui.find("form#login")
    ui.screenshot("login-refused")


def test_a_read_only_token_shows_pages_without_actions_and_cannot_act(
    ui: Dashboard, client: tasks_v2.CloudTasksClient
) -> None:
    log_in(ui, VIEWER)
    assert "read-only" in ui.text_of("header")
    open_queue(ui, "guarded")
    assert ui.text_of("#queue-state") == "RUNNING"
    assert ui.absent('button[name="action"]')
    assert not ui.find("form#queue-settings input[name=max_attempts]").is_enabled()
    ui.screenshot("queue-read-only")

    # The page's own CSRF token, sent by the page itself: still refused.
    assert forged_post(ui, {"action": "pause"}) == 403
    assert forged_post(ui, {"action": "save", "max_attempts": "3"}) == 403
    assert client.get_queue(name=QUEUE).state == tasks_v2.Queue.State.RUNNING
    assert client.get_queue(name=QUEUE).retry_config.max_attempts != 3

    ui.open()
    open_queue(ui, "held")
    ui.click('tr[data-task-id="t1"] a.task-link')
    ui.find("#task-request")
    assert ui.absent('button[name="action"]')
    assert forged_post(ui, {"action": "delete"}) == 403
    assert [t.name for t in client.list_tasks(parent=HELD)] == [f"{HELD}/tasks/t1"]
    log_out(ui)


def forged_post(ui: Dashboard, fields: dict[str, str]) -> int:
    """The status of a POST to the current page with ``fields`` and the page's CSRF token, sent
    by the page as a script would."""
    status: int = ui.driver.execute_script(
        "const csrf = document.querySelector('input[name=csrf]').value;"
        " const fields = Object.assign({csrf}, arguments[0]);"
        " return fetch(location.pathname, {method: 'POST', body: new URLSearchParams(fields),"
        " credentials: 'same-origin'}).then(answer => answer.status);",
        fields,
    )
    return status


def test_a_full_token_pauses_the_queue(ui: Dashboard, client: tasks_v2.CloudTasksClient) -> None:
    log_in(ui, FULL)
    assert "full access" in ui.text_of("header")
    open_queue(ui, "guarded")
    ui.press("pause")
    ui.wait_text("#queue-state", "PAUSED")
    assert client.get_queue(name=QUEUE).state == tasks_v2.Queue.State.PAUSED
    log_out(ui)
