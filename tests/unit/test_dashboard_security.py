"""The dashboard against a hostile visitor: failed logins rate limited, logout revoking the
cookie, hostile data rendered inert, hostile requests answered with a clear 4xx (never a 500,
never a traceback), the security headers on every answer, and no way to act by GET or with a
read-only session."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

import pytest

from opentasks.api.origins import local_host
from opentasks.domain.browse import TaskSearch
from opentasks.domain.queue import QueueState
from opentasks.domain.task import TaskView
from opentasks.service.dashboard import Tab
from opentasks.web.dashboard import CONTENT_SECURITY_POLICY
from opentasks.web.session import (
    LOGIN_BURST,
    MAX_REVOKED,
    SESSION_COOKIE,
    LoginLimiter,
    SessionKeeper,
    client_key,
    safe_next,
)
from tests.unit.test_dashboard_helpers import ONE_ATTEMPT, QUEUE_PATH, Q, Site, dashboard_site

FULL = "full-token-0123456789"
READ = "read-token-0123456789"
HOSTILE = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>{{7*7}}"


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with dashboard_site(tokens=(FULL,), read_only=(READ,)) as opened:
        await opened.world.queue()
        yield opened


@pytest.fixture
async def open_site() -> AsyncIterator[Site]:
    async with dashboard_site() as opened:
        await opened.world.queue()
        yield opened


async def login(site: Site, token: str) -> SimpleCookie:
    async with site.client.post(
        "/ui/login", data={"token": token, "next": "/ui/"}, allow_redirects=False
    ) as response:
        assert response.status == 303, await response.text()
        cookie: SimpleCookie = SimpleCookie()
        for header in response.headers.getall("Set-Cookie"):
            cookie.load(header)
    await site.get("/ui/")  # the CSRF token of the new session
    return cookie


async def try_login(site: Site, token: str) -> tuple[int, str, str | None]:
    async with site.client.post("/ui/login", data={"token": token}, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers.get("Retry-After")


# -- failed logins -----------------------------------------------------------------------------


async def test_failed_logins_are_limited_per_client_in_virtual_time(site: Site) -> None:
    for _ in range(LOGIN_BURST):
        assert (await try_login(site, "guess"))[0] == 401
    status, page, retry_after = await try_login(site, FULL)  # even the right token: not checked
    assert status == 429
    assert retry_after == "12"  # 5 a minute once the burst is spent
    assert "Too many failed logins: try again in 12 seconds." in page
    assert '<form id="login"' in page
    site.world.clock.advance(11)
    assert (await try_login(site, FULL))[0] == 429
    site.world.clock.advance(1)
    assert (await try_login(site, FULL))[0] == 303


async def test_a_refused_login_is_logged_once_per_interval(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(LOGIN_BURST):
        await try_login(site, "guess")
    with caplog.at_level(logging.WARNING, "opentasks.dashboard"):
        for _ in range(5):
            assert (await try_login(site, "guess"))[0] == 429
    refusals = [r for r in caplog.records if "logins refused" in r.getMessage()]
    assert len(refusals) == 1
    assert "127.0.0.1" in refusals[0].getMessage()


async def test_successful_logins_are_not_limited(site: Site) -> None:
    for _ in range(LOGIN_BURST * 2):
        assert (await try_login(site, READ))[0] == 303


def test_the_limiter_holds_every_client_back_together() -> None:
    now = [0.0]
    limiter = LoginLimiter(lambda: now[0], burst=3, per_minute=60, overall_burst=5, overall_per_minute=6)
    for client in ("a", "a", "a", "b", "b"):
        assert limiter.wait(client) == 0
        limiter.failed(client)
    assert limiter.wait("a") == 10  # overall: empty, one back every 10 s
    assert limiter.wait("c") == 10  # a client never seen is held back too
    now[0] = 10
    assert limiter.wait("c") == 0
    limiter.failed("c")
    assert limiter.wait("b") == 10


def test_the_limiter_remembers_a_bounded_number_of_clients() -> None:
    now = [0.0]
    limiter = LoginLimiter(lambda: now[0], burst=2, per_minute=6, overall_burst=10**9, max_clients=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    assert limiter.wait("10.0.3.231") == 10  # the last ones are still held back
    now[0] = 20  # every bucket has refilled: forgotten at the next failure
    limiter.failed("192.0.2.1")
    assert len(limiter) == 1


def test_clients_are_told_apart_by_address_and_ipv6_by_their_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == client_key("not an address") == "-"


# -- sessions ----------------------------------------------------------------------------------


async def test_logging_out_revokes_the_cookie_not_just_deletes_it(site: Site) -> None:
    cookie = await login(site, FULL)
    status, _ = await site.post("/ui/logout", {}, follow=False)
    assert status == 303
    site.client.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie[SESSION_COOKIE].value})
    async with site.client.get("/ui/", allow_redirects=False) as response:
        assert response.status == 303  # a copy of the cookie is no session any more
        assert response.headers["Location"].startswith("/ui/login")


def test_revoked_sessions_are_bounded() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    keeper = SessionKeeper(b"k" * 32, ("t",))
    first = keeper.login("t", now)
    assert first is not None
    keeper.revoke(first, now)
    assert keeper.unseal(keeper.seal(first), now) is None
    for _ in range(MAX_REVOKED + 5):
        other = keeper.login("t", now)
        assert other is not None
        keeper.revoke(other, now)
    assert len(keeper._revoked) <= MAX_REVOKED
    later = now + timedelta(hours=13)  # every revoked session has expired: all forgotten
    keeper.revoke(keeper.login("t", later), later)  # type: ignore[arg-type]
    assert len(keeper._revoked) == 1


async def test_a_login_always_starts_a_new_session(site: Site) -> None:
    one = await login(site, FULL)
    csrf = site.csrf
    two = await login(site, FULL)
    assert one[SESSION_COOKIE].value != two[SESSION_COOKIE].value
    assert site.csrf != csrf  # the CSRF token of the old session is no good for the new one


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/projects/p", "/ui/projects/p"),
        ("/ui/../v2/projects", "/ui/"),
        ("/ui/%2e%2e/v2", "/ui/"),
        ("/ui/./x", "/ui/"),
        ("/ui/x#frag", "/ui/"),
        ("/ui/x?next=//evil.example", "/ui/"),
        ("https://evil.example/ui/", "/ui/"),
        ("/ui/\r\nSet-Cookie: x=1", "/ui/"),
    ],
)
def test_the_next_page_stays_on_the_dashboard(target: str, expected: str) -> None:
    assert safe_next(target) == expected


# -- DNS rebinding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1:8124", True),
        ("127.0.0.1", True),
        ("[::1]:8124", True),
        ("::1", True),
        ("10.1.2.3:80", True),
        ("localhost:8124", True),
        ("LOCALHOST.", True),
        ("tasks.localhost:8124", True),
        ("", True),
        ("evil.example:8124", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io:8124", False),
        ("[evil", False),
    ],
)
def test_names_no_other_site_can_take(host: str, *, local: bool) -> None:
    assert local_host(host) == local


async def test_an_open_dashboard_answers_only_to_local_names(open_site: Site) -> None:
    port = open_site.client.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert (await open_site.get(QUEUE_PATH, headers={"Host": host}))[0] == 200
    status, page = await open_site.get(QUEUE_PATH, headers={"Host": f"rebound.evil.example:{port}"})
    assert status == 403
    assert "--api-token" in page
    assert 'name="csrf"' not in page and "emails" not in page  # neither the token nor any data
    status, _ = await open_site.post(
        QUEUE_PATH, {"action": "pause"}, headers={"Host": f"rebound.evil.example:{port}"}
    )
    assert status == 403
    assert (await open_site.world.queues.get_queue(Q)).state == QueueState.RUNNING


async def test_an_open_dashboard_answers_to_the_allowed_names() -> None:
    async with dashboard_site(allowed_hosts=frozenset({"tasks.internal"})) as opened:
        await opened.world.queue()
        assert (await opened.get(QUEUE_PATH, headers={"Host": "tasks.internal:8124"}))[0] == 200
        status, page = await opened.get(QUEUE_PATH, headers={"Host": "other.internal:8124"})
        assert status == 403 and "--allowed-host other.internal" in page


async def test_with_tokens_any_name_reaches_the_login(site: Site) -> None:
    status, page = await site.get("/ui/login", headers={"Host": "tasks.example.com"})
    assert status == 200 and '<form id="login"' in page


# -- acting: POST, CSRF token, full access -----------------------------------------------------


async def test_no_get_changes_anything(open_site: Site) -> None:
    task = await open_site.world.task(after_s=60)
    for path in (
        f"{QUEUE_PATH}?action=pause",
        f"{QUEUE_PATH}?action=purge",
        f"{QUEUE_PATH}/bulk?action=delete&scope=all&tab=scheduled",
        f"{QUEUE_PATH}/tasks/{task.name.task_id}?action=delete",
        "/ui/logout",
    ):
        status, _ = await open_site.get(path)
        assert status in (200, 404, 405), path
    assert (await open_site.world.queues.get_queue(Q)).state == QueueState.RUNNING
    assert await open_site.world.tasks.get_task(task.name, TaskView.BASIC)


@pytest.mark.parametrize(
    ("suffix", "form"),
    [
        ("", {"action": "pause"}),
        ("", {"action": "resume"}),
        ("", {"action": "purge"}),
        ("", {"action": "save", "max_attempts": "3"}),
        ("/bulk", {"action": "delete", "scope": "all", "tab": "scheduled"}),
        ("/bulk", {"action": "run", "task": "t1", "tab": "scheduled"}),
        ("/bulk", {"action": "redrive", "scope": "all", "tab": "failed"}),
        ("/tasks/t1", {"action": "run"}),
        ("/tasks/t1", {"action": "delete"}),
        ("/tasks/t1", {"action": "redrive"}),
    ],
)
async def test_a_read_only_session_cannot_act_through_any_route(
    site: Site, suffix: str, form: dict[str, str]
) -> None:
    task = await site.world.task(name="t1", after_s=60)
    await login(site, READ)
    assert site.csrf
    status, page = await site.post(QUEUE_PATH + suffix, form)  # a valid CSRF token
    assert status == 403
    assert "read-only" in page
    queue = await site.world.queues.get_queue(Q)
    assert queue.state == QueueState.RUNNING and queue.retry_config.max_attempts == 100
    assert (await site.world.tasks.get_task(task.name, TaskView.BASIC)).dispatch_count == 0


@pytest.mark.parametrize("path", [QUEUE_PATH, f"{QUEUE_PATH}/bulk", f"{QUEUE_PATH}/tasks/t1", "/ui/logout"])
async def test_every_post_needs_the_session_s_csrf_token(open_site: Site, path: str) -> None:
    await open_site.world.task(name="t1", after_s=60)
    await open_site.get(QUEUE_PATH)
    form = {"action": "delete", "scope": "all", "tab": "scheduled"}
    status, _ = await open_site.post(path, form, csrf=False)
    assert status == 403
    status, _ = await open_site.post(path, {**form, "csrf": "x" * 32}, csrf=False)
    assert status == 403
    assert len((await open_site.world.service.tasks_page(Q, *_scheduled())).rows) == 1


def _scheduled() -> tuple[Tab, TaskSearch, str]:
    return Tab.SCHEDULED, TaskSearch(""), ""


# -- hostile data is shown as text -------------------------------------------------------------


async def test_hostile_task_data_is_escaped_everywhere() -> None:
    async with dashboard_site() as open_site:
        await open_site.world.queue(retry_config=ONE_ATTEMPT)
        await _hostile_task_data_is_escaped(open_site)


async def _hostile_task_data_is_escaped(open_site: Site) -> None:
    world = open_site.world
    url = "https://h.example/%22%3E%3Cscript%3Ealert(1)%3C/script%3E"
    world.pusher.scripts[url] = []
    task = await world.task(url, headers={"X-Evil": HOSTILE}, body=HOSTILE.encode(), name="evil")
    dead = await world.dead_letter("dead", body=HOSTILE.encode())
    pages = [
        f"{QUEUE_PATH}/tasks/{task.name.task_id}",
        f"{QUEUE_PATH}/tasks/{dead.task_id}",
        f"{QUEUE_PATH}?tab=failed",
        f"{QUEUE_PATH}?tab=failed&fragment=tasks",
        f"{QUEUE_PATH}?q=" + HOSTILE.replace("#", "%23").replace("&", "%26"),
        "/ui/<script>alert(1)</script>",
        f"{QUEUE_PATH}?tab=" + HOSTILE.replace("#", "%23").replace("&", "%26"),
    ]
    for path in pages:
        _, page = await open_site.get(path)
        _assert_inert(page, path, shown="tab=failed" not in path)
    # a flash message that quotes what was posted
    _, page = await open_site.post(f"{QUEUE_PATH}/bulk", {"action": HOSTILE, "task": "evil"})
    _assert_inert(page, "bulk flash")
    _, page = await open_site.post(QUEUE_PATH, {"action": "save", "max_attempts": HOSTILE[:39]})
    _assert_inert(page, "settings error")


def _assert_inert(page: str, where: str, *, shown: bool = True) -> None:
    assert "<script>alert" not in page, where
    assert "<img" not in page, where
    if shown:  # as text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page or "%3Cscript%3E" in page, where


# -- hostile requests get a clear 4xx ----------------------------------------------------------

BAD_GETS = [
    (f"{QUEUE_PATH}?tab=nope", 400),
    (f"{QUEUE_PATH}?tab=%00", 400),
    (f"{QUEUE_PATH}?cursor=AAAA", 400),
    (f"{QUEUE_PATH}?cursor=" + "A" * 5000, 400),
    (f"{QUEUE_PATH}?cursor=%FF%FE", 400),
    (f"{QUEUE_PATH}?q=" + "x" * 5000, 400),
    (f"{QUEUE_PATH}?fragment=tasks&cursor=%7B%7D", 400),
    (f"{QUEUE_PATH}?fragment=live&tab=x", 400),
    (f"{QUEUE_PATH}?page_size=-1&limit=99999999999999999999", 200),
    ("/ui/projects/p/locations/l/queues/" + "a" * 3000, 404),
    ("/ui/projects/%00/locations/l/queues/q", 404),
    ("/ui/projects/p/locations/l/queues/%E2%98%83", 404),
    (f"{QUEUE_PATH}/tasks/%00", 404),
    (f"{QUEUE_PATH}/tasks/..%2F..%2F", 404),
    (f"{QUEUE_PATH}/tasks/" + "t" * 3000, 404),
    ("/ui/projects/p/locations/l/queues/none/tasks/x", 404),
    ("/ui/%FF", 404),
    ("/ui/static/nope.js", 404),
]


@pytest.mark.parametrize(("path", "status"), BAD_GETS)
async def test_hostile_pages_get_a_clear_answer(
    open_site: Site, caplog: pytest.LogCaptureFixture, path: str, status: int
) -> None:
    with caplog.at_level(logging.WARNING):
        async with open_site.client.get(path, allow_redirects=False) as response:
            assert response.status == status, await response.text()
            _assert_secured(response.headers)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


BAD_POSTS = [
    (QUEUE_PATH, {"action": "save", "max_dispatches_per_second": "nan"}, 200),
    (QUEUE_PATH, {"action": "save", "max_dispatches_per_second": "1e400"}, 200),
    (QUEUE_PATH, {"action": "save", "max_dispatches_per_second": "-inf"}, 200),
    (QUEUE_PATH, {"action": "save", "max_attempts": "99999999999999999999"}, 200),
    (QUEUE_PATH, {"action": "save", "max_attempts": "1_000"}, 200),
    (QUEUE_PATH, {"action": "save", "max_attempts": "\u0663"}, 200),  # ARABIC-INDIC DIGIT THREE
    (QUEUE_PATH, {"action": "save", "max_backoff": "99999999999999999999999s"}, 200),
    (QUEUE_PATH, {"action": "save", "max_backoff": "1e20"}, 200),
    (QUEUE_PATH, {"action": "save", "min_backoff": ""}, 200),
    (QUEUE_PATH, {"action": "nope"}, 400),
    (QUEUE_PATH, {}, 400),
    (f"{QUEUE_PATH}/bulk", {"action": "run", "task": "x", "tab": "nope"}, 400),
    (f"{QUEUE_PATH}/bulk", {"action": "run", "scope": "all", "q": "x" * 500}, 400),
    (f"{QUEUE_PATH}/tasks/t1", {"action": "nope"}, 400),
    (f"{QUEUE_PATH}/tasks/" + "a" * 600, {"action": "run"}, 404),
    ("/ui/projects/p/locations/l/queues/none", {"action": "save", "max_attempts": "3"}, 404),
]


@pytest.mark.parametrize(("path", "form", "status"), BAD_POSTS)
async def test_hostile_forms_get_a_clear_answer(
    open_site: Site, caplog: pytest.LogCaptureFixture, path: str, form: dict[str, str], status: int
) -> None:
    await open_site.world.task(name="t1", after_s=60)
    await open_site.get(QUEUE_PATH)
    with caplog.at_level(logging.WARNING):
        got, page = await open_site.post(path, form, follow=False)
    assert got == status, page
    if status == 200:  # the settings form again, saying what is wrong
        assert 'class="flash error"' in page
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    queue = await open_site.world.queues.get_queue(Q)
    assert queue.retry_config.max_attempts == 100 and queue.state == QueueState.RUNNING


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"\xff\xfe=\xff", "application/x-www-form-urlencoded", 400, "not UTF-8"),
        (b"a=1&" * 6000, "application/x-www-form-urlencoded", 400, "Max number of fields"),
        (b"a=" + b"x" * (1024 * 1024 - 1), "application/x-www-form-urlencoded", 413, "at most"),
        (b'{"action": "pause"}', "application/json", 400, "x-www-form-urlencoded"),
        (b"action=pause", "text/plain", 400, "x-www-form-urlencoded"),
        (
            b"--b\r\nContent-Disposition: form-data; name=action\r\n\r\npause\r\n--b--",
            "multipart/form-data; boundary=b",
            400,
            "x-www-form-urlencoded",
        ),
    ],
)
async def test_hostile_bodies_get_a_clear_answer(
    open_site: Site, body: bytes, content_type: str, status: int, says: str
) -> None:
    await open_site.get(QUEUE_PATH)
    async with open_site.client.post(
        QUEUE_PATH,
        data=io.BytesIO(body),
        headers={"Content-Type": content_type, "X-CSRF-Token": open_site.csrf},
    ) as response:
        assert response.status == status
        assert says in await response.text()
    assert (await open_site.world.queues.get_queue(Q)).state == QueueState.RUNNING


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", QUEUE_PATH, "GET, HEAD, POST"),
        ("DELETE", f"{QUEUE_PATH}/tasks/t1", "GET, HEAD, POST"),
        ("PATCH", "/ui/", "GET, HEAD"),
        ("OPTIONS", "/ui/login", "GET, HEAD, POST"),
        ("GET", "/ui/logout", "POST"),
        ("HEAD", f"{QUEUE_PATH}/bulk", "POST"),
        ("POST", "/ui/", "GET, HEAD"),
        ("POST", "/ui/static/app.js", "GET, HEAD"),
    ],
)
async def test_a_method_a_page_does_not_take_gets_405(site: Site, method: str, path: str, allow: str) -> None:
    for logged_in in (False, True):
        if logged_in:
            await login(site, FULL)
        async with site.client.request(method, path, allow_redirects=False) as response:
            assert response.status == 405, (method, path, logged_in)
            assert response.headers["Allow"] == allow
            _assert_secured(response.headers)
            if method != "HEAD":
                page = await response.text()
                assert "Method not allowed" in page
                assert ('<form id="logout"' in page) == logged_in


async def test_an_unknown_page_asks_a_stranger_to_log_in(site: Site) -> None:
    async with site.client.get("/ui/nope", allow_redirects=False) as response:
        assert response.status == 303
    async with site.client.post("/ui/nope", allow_redirects=False) as response:
        assert response.status == 401
    await login(site, FULL)
    async with site.client.get("/ui/nope", allow_redirects=False) as response:
        assert response.status == 404


# -- headers -----------------------------------------------------------------------------------


def _assert_secured(headers: object) -> None:
    get = headers.get  # type: ignore[attr-defined]
    assert get("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert get("X-Content-Type-Options") == "nosniff"
    assert get("X-Frame-Options") == "DENY"
    assert get("Referrer-Policy") == "no-referrer"
    if (get("Content-Type") or "").startswith("text/html"):
        assert get("Cache-Control") == "no-store"


async def test_every_answer_carries_the_security_headers(site: Site) -> None:
    async def check(method: str, path: str, **options: object) -> int:
        async with site.client.request(method, path, allow_redirects=False, **options) as response:  # type: ignore[arg-type]
            _assert_secured(response.headers)
            return response.status

    assert await check("GET", "/ui") == 301
    assert await check("GET", "/ui/") == 303
    assert await check("GET", "/ui/login") == 200
    assert await check("GET", "/ui/static/app.js") == 200
    assert await check("GET", "/ui/static/nope") == 404
    assert await check("GET", "/ui/?fragment=queues", headers={"HX-Request": "true"}) == 401
    assert await check("POST", "/ui/login", data={"token": "x"}) == 401
    assert await check("POST", "/ui/login", data={"token": "x"}, headers={"Origin": "null"}) == 403
    for _ in range(LOGIN_BURST):
        await check("POST", "/ui/login", data={"token": "x"})
    assert await check("POST", "/ui/login", data={"token": "x"}) == 429
    site.world.clock.advance(3600)
    await login(site, FULL)
    for path in ("/ui/", QUEUE_PATH, f"{QUEUE_PATH}?fragment=live", "/ui/nope", f"{QUEUE_PATH}/tasks/none"):
        await check("GET", path)
    assert await check("POST", QUEUE_PATH, data={"action": "pause"}) == 403  # no CSRF token
