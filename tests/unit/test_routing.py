"""App Engine routes, queue-level HTTP targets and the dispatch target policy (pure)."""

import pytest

from opentasks.domain.queue import (
    AppEngineRouting,
    HttpMethod,
    HttpTarget,
    OAuthToken,
    OidcToken,
    UriOverride,
    UriOverrideEnforceMode,
    UriScheme,
)
from opentasks.domain.routing import (
    AppEngineRoutes,
    apply_http_target,
    buffer_url,
    override_url,
    parse_service_routes,
)
from opentasks.domain.target_policy import TargetDenied, TargetPolicy
from opentasks.domain.task import HttpRequest
from opentasks.errors import FailedPrecondition, InvalidArgument

ROUTES = AppEngineRoutes(
    "http://127.0.0.1:8080",
    parse_service_routes(["worker=http://127.0.0.1:8081/", "v2.worker=http://127.0.0.1:8082"]),
)


@pytest.mark.parametrize(
    ("routing", "url"),
    [
        (None, "http://127.0.0.1:8080"),
        (AppEngineRouting(service="default"), "http://127.0.0.1:8080"),
        (AppEngineRouting(service="worker"), "http://127.0.0.1:8081"),
        (AppEngineRouting(service="worker", version="v2"), "http://127.0.0.1:8082"),
        (AppEngineRouting(service="worker", version="v3"), "http://127.0.0.1:8081"),
        (AppEngineRouting(service="billing"), "http://127.0.0.1:8080"),
    ],
)
def test_app_engine_routes_pick_the_most_specific_entry(routing: AppEngineRouting | None, url: str) -> None:
    assert ROUTES.base_url(routing) == url


def test_app_engine_host_is_the_resolved_host_and_port() -> None:
    assert ROUTES.host(AppEngineRouting(service="worker", version="v2")) == "127.0.0.1:8082"


def test_service_routes_must_be_service_equals_url() -> None:
    with pytest.raises(InvalidArgument, match="SERVICE=URL"):
        parse_service_routes(["worker:8081"])


@pytest.mark.parametrize(
    ("override", "url"),
    [
        (UriOverride(host="b.example"), "https://b.example/p?q=1"),
        (UriOverride(scheme=UriScheme.HTTP, port=8080), "http://a.example:8080/p?q=1"),
        (UriOverride(path="/new", query=""), "https://a.example/new"),
        (UriOverride(path="new"), "https://a.example/new?q=1"),
        (UriOverride(query="x=2"), "https://a.example/p?x=2"),
        (
            UriOverride(host="b.example", path="/x", enforce_mode=UriOverrideEnforceMode.IF_NOT_EXISTS),
            "https://a.example/p?q=1",
        ),
    ],
)
def test_uri_override(override: UriOverride, url: str) -> None:
    assert override_url("https://a.example/p?q=1", override) == url


def test_if_not_exists_fills_only_missing_parts() -> None:
    override = UriOverride(port=9000, path="/fill", enforce_mode=UriOverrideEnforceMode.IF_NOT_EXISTS)
    assert override_url("http://h/", override) == "http://h:9000/fill"
    assert override_url("http://h:81/", UriOverride(port=0)) == "http://h/"


def test_queue_target_overrides_method_headers_and_token() -> None:
    request = HttpRequest(
        url="https://a.example/p",
        http_method=HttpMethod.POST,
        headers={"content-type": "text/plain", "X-Keep": "1"},
        body=b"data",
        oauth_token=OAuthToken("task@p.iam.gserviceaccount.com", "s"),
    )
    target = HttpTarget(
        uri_override=UriOverride(host="b.example"),
        http_method=HttpMethod.GET,
        header_overrides=(("Content-Type", "application/json"), ("X-CloudTasks-TaskName", "forged")),
        oidc_token=OidcToken("queue@p.iam.gserviceaccount.com", "aud"),
    )
    applied = apply_http_target(request, target)
    assert applied.url == "https://b.example/p"
    assert (applied.http_method, applied.body) == (HttpMethod.GET, b"")  # GET has no body
    assert applied.headers == {"X-Keep": "1", "Content-Type": "application/json"}
    assert (applied.oidc_token, applied.oauth_token) == (target.oidc_token, None)
    assert apply_http_target(request, None) is request


def test_buffer_url_needs_a_host_override() -> None:
    target = HttpTarget(uri_override=UriOverride(host="h.example", path="/buffered", port=8443))
    assert buffer_url(target) == "https://h.example:8443/buffered"
    with pytest.raises(FailedPrecondition, match=r"uriOverride\.host"):
        buffer_url(HttpTarget())


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./x",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://100.100.100.200/latest/meta-data/",
    ],
)
def test_metadata_and_link_local_targets_are_denied_by_default(url: str) -> None:
    with pytest.raises(TargetDenied, match="is not allowed on this server"):
        TargetPolicy().check_url(url)


def test_allow_and_deny_lists() -> None:
    policy = TargetPolicy(deny=("10.0.0.0/8", "*.corp.example"), allow=())
    policy.check_url("http://127.0.0.1:8080/")
    with pytest.raises(TargetDenied):
        policy.check_url("http://10.1.2.3/")
    with pytest.raises(TargetDenied):
        policy.check_url("https://intranet.corp.example/")
    only = TargetPolicy(allow=("127.0.0.0/8", "*.example.com"))
    only.check_url("https://api.example.com/x")
    with pytest.raises(TargetDenied):
        only.check_url("https://example.org/")
    with pytest.raises(TargetDenied):  # deny wins over allow
        TargetPolicy(allow=("169.254.0.0/16",)).check_url("http://169.254.169.254/")


def test_resolved_addresses_are_checked_against_the_deny_list() -> None:
    policy = TargetPolicy()
    policy.check_address("handler.example", "203.0.113.7")
    with pytest.raises(TargetDenied, match=r"rebind\.example \(169\.254\.169\.254\)"):
        policy.check_address("rebind.example", "169.254.169.254")


def test_bad_policy_entries_fail_at_once() -> None:
    with pytest.raises(ValueError, match="neither a network"):
        TargetPolicy(deny=("http://x/",))
