"""Who may use the dashboard: logging in with API tokens, the session cookie, read-only
sessions, CSRF tokens and cross-site requests."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import pytest

from opentasks.domain.queue import QueueState
from opentasks.web.session import SESSION_COOKIE
from tests.unit.test_dashboard_helpers import QUEUE_PATH, Q, Site, World, dashboard_site

FULL = "full-token-0123456789"
READ = "read-token-0123456789"


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


async def login(site: Site, token: str, **headers: str) -> SimpleCookie:
    await site.get("/ui/login")
    async with site.client.post(
        "/ui/login", data={"token": token, "next": QUEUE_PATH}, allow_redirects=False, headers=headers
    ) as response:
        assert response.status == 303, await response.text()
        assert response.headers["Location"] == QUEUE_PATH
        cookie: SimpleCookie = SimpleCookie()
        for header in response.headers.getall("Set-Cookie"):
            cookie.load(header)
        return cookie


async def test_pages_ask_for_a_login_when_tokens_are_configured(site: Site) -> None:
    async with site.client.get(f"{QUEUE_PATH}?tab=failed", allow_redirects=False) as response:
        assert response.status == 303
        assert (
            response.headers["Location"]
            == "/ui/login?next=%2Fui%2Fprojects%2Fproj%2Flocations%2Floc%2Fqueues%2Femails%3Ftab%3Dfailed"
        )
    status, page = await site.get("/ui/login")
    assert status == 200
    assert '<form id="login"' in page and 'name="token"' in page
    assert 'id="queues"' not in page


async def test_a_live_region_polled_after_logout_is_sent_to_the_login(site: Site) -> None:
    async with site.client.get("/ui/?fragment=queues", headers={"HX-Request": "true"}) as response:
        assert response.status == 401
        assert response.headers["HX-Redirect"] == "/ui/login"


async def test_a_wrong_token_is_refused(site: Site) -> None:
    await site.get("/ui/login")
    status, page = await site.post("/ui/login", {"token": "guess"}, csrf=False)
    assert status == 401
    assert '<div class="flash error" role="alert">That token is not one this server accepts.</div>' in page
    async with site.client.get("/ui/", allow_redirects=False) as response:
        assert response.status == 303


async def test_logging_in_sets_a_strict_session_cookie(site: Site) -> None:
    cookie = await login(site, FULL)
    morsel = cookie[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/ui/"
    assert not morsel["secure"]  # plain HTTP here
    assert FULL not in morsel.value
    assert int(morsel["max-age"]) == 12 * 3600
    status, page = await site.get(QUEUE_PATH)
    assert status == 200
    assert '<form id="logout"' in page and "full access" in page


async def test_the_cookie_is_secure_behind_a_tls_proxy(site: Site) -> None:
    cookie = await login(site, FULL, **{"X-Forwarded-Proto": "https"})
    assert cookie[SESSION_COOKIE]["secure"] is True


async def test_logging_out_ends_the_session(site: Site) -> None:
    await login(site, FULL)
    await site.get("/ui/")
    async with site.client.post("/ui/logout", data={"csrf": site.csrf}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/ui/login"
    async with site.client.get("/ui/", allow_redirects=False) as response:
        assert response.status == 303


async def test_a_session_ends_after_12_hours(site: Site) -> None:
    await login(site, FULL)
    assert (await site.get("/ui/"))[0] == 200
    site.world.clock.advance(12 * 3600 + 1)
    async with site.client.get("/ui/", allow_redirects=False) as response:
        assert response.status == 303


async def test_a_session_ends_when_its_token_is_removed(site: Site) -> None:
    cookie = await login(site, FULL)
    async with dashboard_site(tokens=("another-token",), world=World()) as restarted:
        restarted.client.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie[SESSION_COOKIE].value})
        async with restarted.client.get("/ui/", allow_redirects=False) as response:
            assert response.status == 303  # same key, but the token is gone


async def test_a_session_is_valid_on_every_node_sharing_the_key(site: Site) -> None:
    cookie = await login(site, FULL)
    async with dashboard_site(tokens=(FULL,), world=World()) as other_node:
        other_node.client.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie[SESSION_COOKIE].value})
        async with other_node.client.get("/ui/", allow_redirects=False) as response:
            assert response.status == 200


async def test_a_tampered_cookie_is_no_session(site: Site) -> None:
    cookie = await login(site, READ)
    body, signature = cookie[SESSION_COOKIE].value.split(".")
    forged = body.replace(body[3], "A" if body[3] != "A" else "B", 1) + "." + signature
    site.client.session.cookie_jar.clear()
    site.client.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie[SESSION_COOKIE].value})
    async with site.client.get("/ui/", allow_redirects=False) as response:
        assert response.status == 200  # the genuine value, set the same way
    site.client.session.cookie_jar.clear()
    site.client.session.cookie_jar.update_cookies({SESSION_COOKIE: forged})
    async with site.client.get("/ui/", allow_redirects=False) as response:
        assert response.status == 303


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/v2/projects", "/ui/\\evil"]
)
async def test_the_login_never_sends_anyone_elsewhere(site: Site, target: str) -> None:
    await site.get("/ui/login")
    async with site.client.post(
        "/ui/login", data={"token": FULL, "next": target}, allow_redirects=False
    ) as response:
        assert response.headers["Location"] == "/ui/"


async def test_a_read_only_session_sees_everything_and_changes_nothing(site: Site) -> None:
    task = await site.world.task()
    await login(site, READ)
    _, page = await site.get(QUEUE_PATH)
    assert "read-only" in page
    assert re.findall(r'name="action" value="(\w+)"', page) == []
    assert 'class="bulkbar"' not in page and 'type="checkbox"' not in page
    _, task_page = await site.get(f"{QUEUE_PATH}/tasks/{task.name.task_id}")
    assert 'id="task-request"' in task_page
    assert re.findall(r'name="action" value="(\w+)"', task_page) == []
    for path, form in (
        (QUEUE_PATH, {"action": "pause"}),
        (QUEUE_PATH, {"action": "save", "max_attempts": "3"}),
        (f"{QUEUE_PATH}/bulk", {"action": "delete", "scope": "all", "tab": "due"}),
        (f"{QUEUE_PATH}/tasks/{task.name.task_id}", {"action": "delete"}),
    ):
        status, refused = await site.post(path, form)  # with a valid CSRF token
        assert status == 403, path
        assert "read-only" in refused
    assert (await site.world.queues.get_queue(Q)).state == QueueState.RUNNING
    assert (await site.world.queues.get_queue(Q)).retry_config.max_attempts == 100


async def test_a_full_session_acts(site: Site) -> None:
    await login(site, FULL)
    await site.get(QUEUE_PATH)
    status, _page = await site.post(QUEUE_PATH, {"action": "pause"})
    assert status == 200
    assert (await site.world.queues.get_queue(Q)).state == QueueState.PAUSED


# -- CSRF and cross-site requests (with authentication off too) --------------------------------


async def test_auth_off_gives_every_visitor_full_access(open_site: Site) -> None:
    status, page = await open_site.get(QUEUE_PATH)
    assert status == 200
    assert 'value="pause"' in page
    assert '<form id="logout"' not in page


async def test_a_post_without_the_csrf_token_is_refused(open_site: Site) -> None:
    await open_site.get(QUEUE_PATH)
    status, page = await open_site.post(QUEUE_PATH, {"action": "pause"}, csrf=False)
    assert status == 403
    assert "security token" in page
    status, _ = await open_site.post(QUEUE_PATH, {"action": "pause", "csrf": "forged"}, csrf=False)
    assert status == 403
    assert (await open_site.world.queues.get_queue(Q)).state == QueueState.RUNNING


async def test_the_csrf_token_also_comes_as_a_header(open_site: Site) -> None:
    await open_site.get(QUEUE_PATH)
    status, _ = await open_site.post(
        QUEUE_PATH, {"action": "pause"}, csrf=False, headers={"X-CSRF-Token": open_site.csrf}
    )
    assert status == 200
    assert (await open_site.world.queues.get_queue(Q)).state == QueueState.PAUSED


async def test_a_post_without_a_session_is_refused(open_site: Site) -> None:
    await open_site.get(QUEUE_PATH)
    token = open_site.csrf
    open_site.client.session.cookie_jar.clear()
    status, _ = await open_site.post(QUEUE_PATH, {"action": "pause", "csrf": token}, csrf=False)
    assert status == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_a_cross_site_post_is_refused_even_with_the_token(
    open_site: Site, headers: dict[str, str]
) -> None:
    await open_site.get(QUEUE_PATH)
    status, page = await open_site.post(QUEUE_PATH, {"action": "pause"}, headers=headers)
    assert status == 403
    assert "another site" in page
    assert (await open_site.world.queues.get_queue(Q)).state == QueueState.RUNNING


async def test_a_same_origin_post_is_accepted(open_site: Site) -> None:
    await open_site.get(QUEUE_PATH)
    host = f"{open_site.client.host}:{open_site.client.port}"
    headers = {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    status, _ = await open_site.post(QUEUE_PATH, {"action": "pause"}, headers=headers)
    assert status == 200


async def test_a_cross_site_login_is_refused(site: Site) -> None:
    status, _ = await site.post(
        "/ui/login", {"token": FULL}, csrf=False, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403


async def test_a_form_that_is_not_a_form_is_refused(open_site: Site) -> None:
    await open_site.get(QUEUE_PATH)
    async with open_site.client.post(
        QUEUE_PATH, data=b'{"action": "pause"}', headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
