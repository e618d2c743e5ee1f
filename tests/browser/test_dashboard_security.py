"""Hostile task data in a real browser: a task whose ID, URL, headers and body are written to
break out of HTML shows them as text, runs nothing, adds no element, and (the autouse fixture)
causes no Content-Security-Policy violation, since nothing even tries to run."""

from __future__ import annotations

import pytest
from google.cloud import tasks_v2

from tests.browser.conftest import Dashboard

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PARENT = "projects/ui-hostile/locations/us-central1"
QUEUE = f"{PARENT}/queues/hostile"
NOWHERE = "http://127.0.0.1:9"
PAYLOAD = "\"'><script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
URL_PAYLOAD = "%22%3E%3Cscript%3Edocument.title='pwned'%3C/script%3E"


@pytest.fixture(scope="module")
def hostile(client: tasks_v2.CloudTasksClient) -> str:
    client.create_queue(parent=PARENT, queue={"name": QUEUE})
    client.pause_queue(name=QUEUE)  # the task stays as it is
    client.create_task(
        parent=QUEUE,
        task={
            "name": f"{QUEUE}/tasks/hostile-1",
            "http_request": {
                "url": f"{NOWHERE}/{URL_PAYLOAD}",
                "headers": {"X-Hostile": PAYLOAD},
                "body": PAYLOAD.encode(),
            },
        },
    )
    return "hostile-1"


def test_hostile_task_data_is_only_text(ui: Dashboard, hostile: str) -> None:
    for path, search in (
        (f"projects/ui-hostile/locations/us-central1/queues/hostile/tasks/{hostile}", ""),
        ("projects/ui-hostile/locations/us-central1/queues/hostile", ""),
        ("projects/ui-hostile/locations/us-central1/queues/hostile", "?q=%3Cscript%3Ex%3C%2Fscript%3E"),
    ):
        ui.open(path + search)
        ui.find("main.page")
        assert ui.driver.title != "pwned"
        assert ui.all("#app img") == []
        assert ui.driver.execute_script("return document.querySelectorAll('script:not([src])').length") == 0
    ui.open(f"projects/ui-hostile/locations/us-central1/queues/hostile/tasks/{hostile}")
    assert "<script>document.title='pwned'</script>" in ui.text_of("main.page")
    ui.screenshot("hostile-task")
