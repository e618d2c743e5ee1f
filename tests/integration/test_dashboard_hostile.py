"""The dashboard of a real server (API tokens on) against hostile HTTP: malformed paths, query
strings, forms, bodies and methods, sent raw. Every answer is a 4xx (or a page) with the
dashboard's security headers, nothing changes, and the server logs no error or traceback.
Failed logins end in 429 with Retry-After."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from google.cloud import tasks_v2

import opentasks
from opentasks.testing import ServerProcess
from tests.integration.conftest import sqlite_server

pytestmark = pytest.mark.integration
FULL = "hostile-full-token"
READ = "hostile-read-token"
PARENT = "projects/hostile/locations/here"
QUEUE = f"{PARENT}/queues/q1"
PAGE = f"/ui/{QUEUE}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-hostile")


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[ServerProcess]:
    with sqlite_server(
        folder, "--api-token", FULL, "--api-read-only-token", READ, "--no-dispatch"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> tasks_v2.CloudTasksClient:
    client = opentasks.client(server.address, api_token=FULL)
    client.create_queue(parent=PARENT, queue={"name": QUEUE})
    client.create_task(
        parent=QUEUE, task={"name": f"{QUEUE}/tasks/t1", "http_request": {"url": "http://127.0.0.1:9/"}}
    )
    return client


class Browser:
    """Raw HTTP to the server, keeping the session cookie and the last page's CSRF token."""

    def __init__(self, server: ServerProcess, source: str = "127.0.0.1") -> None:
        self.netloc = urllib.parse.urlsplit(server.rest_url).netloc
        self.source = source  # the client address the login limiter sees
        self.cookie = ""
        self.csrf = ""

    def send(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, str]:
        connection = http.client.HTTPConnection(self.netloc, timeout=10, source_address=(self.source, 0))
        try:
            sent = {"Cookie": self.cookie} if self.cookie else {}
            sent |= headers or {}
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        for value in response.headers.get_all("Set-Cookie") or []:
            if value.startswith("opentasks_session="):
                self.cookie = value.split(";")[0]
        found = re.search(r'name="csrf" value="([^"]*)"', text)
        if found:
            self.csrf = unescape(found[1])
        return response.status, response.headers, text

    def form(
        self, path: str, fields: dict[str, str], *, csrf: bool = True
    ) -> tuple[int, http.client.HTTPMessage, str]:
        data = fields | ({"csrf": self.csrf} if csrf else {})
        return self.send(
            "POST",
            path,
            urllib.parse.urlencode(data).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )

    def log_in(self, token: str) -> None:
        status, _, _ = self.form("/ui/login", {"token": token}, csrf=False)
        assert status == 303
        assert self.send("GET", PAGE)[0] == 200


def secured(headers: http.client.HTTPMessage) -> None:
    assert "frame-ancestors 'none'" in (headers["Content-Security-Policy"] or "")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


HOSTILE_GETS = [
    f"{PAGE}?tab=%3Cscript%3E",
    f"{PAGE}?cursor=%FF%00",
    f"{PAGE}?q=" + "%F0%9F%92%A9" * 300,
    f"{PAGE}?fragment=tasks&cursor=" + "A" * 4000,
    f"{PAGE}?tab=due&tab=failed&q=a&q=b",
    f"/ui/{PARENT}/queues/" + "%E2%80%AE" * 100,
    f"/ui/{PARENT}/queues/q1/tasks/%2e%2e%2f%2e%2e",
    f"/ui/{PARENT}/queues/q1/tasks/" + "x" * 4000,
    "/ui/projects/%00/locations/%0d%0a/queues/%20",
    "/ui/static/%2e%2e%2fapp.js",
    "/ui//ui//",
    "/ui/login?next=%0d%0aLocation:%20https://evil.example",
]


def test_hostile_requests_get_a_4xx_with_the_headers_and_no_error_logged(
    server: ServerProcess, admin: tasks_v2.CloudTasksClient, folder: Path
) -> None:
    browser = Browser(server)
    browser.log_in(FULL)
    for path in HOSTILE_GETS:
        status, headers, _ = browser.send("GET", path)
        assert status < 500, path
        secured(headers)
        assert "evil.example" not in (headers["Location"] or ""), path
    for body, content_type in (
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
        (b"action=pause&" * 10000, "application/x-www-form-urlencoded"),
        (b"x" * (2 * 1024 * 1024), "application/x-www-form-urlencoded"),
        (b"action=purge&csrf=" + browser.csrf.encode(), "text/plain"),
        (b"action=purge&csrf=" + browser.csrf.encode(), "multipart/form-data; boundary=x"),
    ):
        status, headers, _ = browser.send("POST", PAGE, body, {"Content-Type": content_type})
        assert 400 <= status < 500, (body[:20], content_type)
        secured(headers)
    for fields in (
        {"action": "save", "max_dispatches_per_second": "NaN"},
        {"action": "save", "max_attempts": "9" * 30},
        {"action": "save", "max_backoff": "1e999s"},
        {"action": "bogus"},
    ):
        status, headers, _ = browser.form(PAGE, fields)
        assert status in (200, 400), fields
        secured(headers)
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, _ = browser.send(method, PAGE)
        assert status == 405
        assert headers["Allow"] == "GET, HEAD, POST"
    assert admin.get_queue(name=QUEUE).state == tasks_v2.Queue.State.RUNNING
    assert admin.get_task(name=f"{QUEUE}/tasks/t1")

    viewer = Browser(server)
    viewer.log_in(READ)
    for path, fields in (
        (PAGE, {"action": "purge"}),
        (f"{PAGE}/bulk", {"action": "delete", "scope": "all", "tab": "scheduled"}),
        (f"{PAGE}/tasks/t1", {"action": "delete"}),
    ):
        assert viewer.form(path, fields)[0] == 403
    assert admin.get_task(name=f"{QUEUE}/tasks/t1")

    log = (folder / "server.log").read_text()
    assert "Traceback" not in log
    assert " ERROR " not in log


def test_failed_logins_end_in_429(server: ServerProcess, admin: tasks_v2.CloudTasksClient) -> None:
    stranger = Browser(server, "127.0.0.2")  # limited alone: the other tests' logins still work
    statuses = [stranger.form("/ui/login", {"token": f"guess-{i}"}, csrf=False)[0] for i in range(11)]
    assert statuses == [401] * 10 + [429]
    status, headers, page = stranger.form("/ui/login", {"token": FULL}, csrf=False)
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 12
    assert "Too many failed logins" in page
    secured(headers)
    assert Browser(server).form("/ui/login", {"token": FULL}, csrf=False)[0] == 303  # another client
