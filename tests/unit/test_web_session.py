"""Dashboard sessions, CSRF tokens and same-origin checks (pure)."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opentasks.api.origins import HostPolicy, cross_site, local_host
from opentasks.config import ConfigError, Settings
from opentasks.web.session import (
    Access,
    Flash,
    Session,
    SessionKeeper,
    request_is_tls,
    safe_next,
)

KEY = b"s" * 32
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def keeper(tokens: tuple[str, ...] = ("full",), read_only: tuple[str, ...] = ("look",)) -> SessionKeeper:
    return SessionKeeper(KEY, tokens, read_only)


def test_a_token_opens_a_session_at_its_level() -> None:
    assert (session := keeper().login("full", NOW)) is not None and session.access == Access.FULL
    assert (session := keeper().login(" look ", NOW)) is not None and session.access == Access.READ
    assert keeper().login("nope", NOW) is None
    assert keeper().login("", NOW) is None
    assert keeper(tokens=("same",), read_only=("same",)).login("same", NOW).access == Access.FULL  # type: ignore[union-attr]


def test_a_sealed_session_opens_again_until_it_expires() -> None:
    session = keeper().login("full", NOW)
    assert session is not None
    sealed = keeper().seal(session)
    assert "full" not in sealed
    assert keeper().unseal(sealed, NOW + timedelta(hours=11)) == session
    assert keeper().unseal(sealed, NOW + timedelta(hours=12)) is None


def test_a_session_needs_its_token_still_configured_at_its_level() -> None:
    sealed = keeper().seal(keeper().login("full", NOW))  # type: ignore[arg-type]
    assert keeper(tokens=("other",)).unseal(sealed, NOW) is None
    assert keeper(tokens=(), read_only=("full",)).unseal(sealed, NOW) is None  # demoted: log in again
    assert SessionKeeper(b"x" * 32, ("full",)).unseal(sealed, NOW) is None  # another key


def test_forged_and_malformed_cookies_are_no_session() -> None:
    k = keeper()
    sealed = k.seal(Session(Access.READ, int(NOW.timestamp()) + 60, "f", "n"))
    body, signature = sealed.split(".")
    for value in (
        "",
        ".",
        "a.b.c",
        body + ".",
        "x" * 5000,
        body + "." + signature[:-2] + "AA",
        "!!." + signature,
    ):
        assert k.unseal(value, NOW) is None, value


def test_an_open_session_is_full_access_and_needs_no_token() -> None:
    k = SessionKeeper(KEY)
    assert not k.auth_on
    session = k.open_session(NOW)
    assert session.access == Access.FULL
    assert k.unseal(k.seal(session), NOW) == session
    assert keeper().unseal(k.seal(session), NOW) is None  # tokens configured since: log in


def test_csrf_tokens_belong_to_one_session() -> None:
    k = keeper()
    one, two = k.login("full", NOW), k.login("full", NOW)
    assert one is not None and two is not None
    assert k.csrf_valid(one, k.csrf_token(one))
    assert not k.csrf_valid(two, k.csrf_token(one))
    assert not k.csrf_valid(one, "")


def test_flash_messages_are_signed_and_short_lived() -> None:
    k = keeper()
    sealed = k.seal_flash(Flash("ok", "Done."), NOW)
    assert k.unseal_flash(sealed, NOW) == Flash("ok", "Done.")
    assert k.unseal_flash(sealed, NOW + timedelta(minutes=2)) is None
    assert k.unseal(sealed, NOW) is None  # a flash is no session
    assert k.unseal_flash(k.seal(k.open_session(NOW)), NOW) is None


def test_cross_site_requests_are_recognised() -> None:
    host = "tasks.internal:8124"
    assert not cross_site({}, host)
    assert not cross_site({"Sec-Fetch-Site": "same-origin", "Origin": "http://tasks.internal:8124"}, host)
    assert not cross_site({"Sec-Fetch-Site": "none"}, host)
    assert cross_site({"Sec-Fetch-Site": "cross-site"}, host)
    assert cross_site({"Sec-Fetch-Site": "same-site"}, host)
    assert cross_site({"Origin": "http://evil.example"}, host)
    assert cross_site({"Origin": "null"}, host)
    assert cross_site({"Origin": "http://tasks.internal:9999"}, host)
    proxied = {"Origin": "https://tasks.example.com", "X-Forwarded-Host": "tasks.example.com"}
    assert not cross_site(proxied, "127.0.0.1:8124")


def test_tls_is_seen_directly_or_through_a_proxy() -> None:
    assert request_is_tls(True, {})
    assert request_is_tls(False, {"X-Forwarded-Proto": "https"})
    assert request_is_tls(False, {"X-Forwarded-Proto": "HTTPS, http"})
    assert not request_is_tls(False, {"X-Forwarded-Proto": "http"})


def test_only_dashboard_paths_are_followed_after_a_login() -> None:
    assert (
        safe_next("/ui/projects/p/locations/l/queues/q?tab=failed")
        == "/ui/projects/p/locations/l/queues/q?tab=failed"
    )
    for target in (
        "",
        "/v2/x",
        "//evil.example",
        "https://evil.example/ui/",
        "/ui//evil",
        "/ui/\\x",
        "/ui/\nx",
    ):
        assert safe_next(target) == "/ui/", target


def test_host_policy_of_the_http_port() -> None:
    tokenless, allowed = HostPolicy(), HostPolicy(allowed=frozenset({"opentasks"}))
    rebound = {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"}
    assert tokenless.refusal(rebound, "evil.example") is not None
    assert tokenless.refusal({}, "evil.example:8124") is not None  # plain GETs carry no header
    assert HostPolicy(auth_on=True).refusal(rebound, "evil.example") is None  # tokens guard it
    assert tokenless.refusal({}, "opentasks:8124") is not None
    assert allowed.refusal({}, "OpenTasks.:8124") is None  # the name, in any case, any port
    assert allowed.refusal({}, "other:8124") is not None
    assert HostPolicy(allowed=frozenset({"*"})).refusal({}, "other:8124") is None
    assert tokenless.refusal({"Sec-Fetch-Mode": "cors"}, "127.0.0.1:8124") is None
    assert tokenless.refusal({}, "[::1]:8124") is None
    forged = HostPolicy(auth_on=True).refusal({"Origin": "http://evil.example"}, "127.0.0.1:8124")
    assert forged is not None and "http://evil.example" in forged.message
    refused = tokenless.refusal({}, "tasks.internal:8124")
    assert refused is not None and "--allowed-host tasks.internal" in refused.message


_LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_NAMES = (
    st.lists(_LABELS, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not local_host(name) and name != "localhost")
)


def _spelled(name: str, data: st.DataObject) -> str:
    """``name`` as a Host header may carry it: any case, a final dot, a port."""
    cased = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
    dot = "." if data.draw(st.booleans()) else ""
    port = data.draw(st.sampled_from(["", ":80", ":8124", ":65535"]))
    return cased + dot + port


@given(name=_NAMES, data=st.data())
def test_any_spelling_of_an_allowed_name_is_served_and_of_others_refused(
    name: str, data: st.DataObject
) -> None:
    host = _spelled(name, data)
    operator = _spelled(name, data).split(":")[0]  # as given to --allowed-host
    assert HostPolicy.of([operator], auth_on=False).refusal({}, host) is None
    assert HostPolicy.of(["other.invalid"], auth_on=False).refusal({}, host) is not None
    assert HostPolicy.of([], auth_on=True).refusal({}, host) is None


@given(name=_NAMES)
def test_allowed_host_settings_take_names_and_refuse_urls(name: str) -> None:
    assert Settings(allowed_hosts=(name, name + ".", "*")).allowed_hosts
    for wrong in (f"http://{name}", f"{name}:8124", f"{name}/x", f"{name} x", ""):
        with pytest.raises(ConfigError, match="--allowed-host takes a host name"):
            Settings(allowed_hosts=(wrong,))
