"""Signing keys, OIDC tokens, OAuth tokens, the handler-side verifier and API authentication."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from opentasks.api.auth import ApiAuth
from opentasks.clock import FakeClock
from opentasks.credentials.base import CredentialError
from opentasks.credentials.keys import KeyRing, add_key, retire_key
from opentasks.credentials.tokens import TokenMinter, subject_id
from opentasks.domain.outbound import OutboundRequest
from opentasks.domain.queue import OAuthToken, OidcToken
from opentasks.errors import PermissionDenied, Unauthenticated
from opentasks.verify import InvalidToken, TokenVerifier

EMAIL = "worker@proj.iam.gserviceaccount.com"
ISSUER = "http://127.0.0.1:8124"


def ring(tmp_path: Path, clock: FakeClock | None = None) -> KeyRing:
    keys = KeyRing(tmp_path / "keys", clock=clock or FakeClock(), reload_interval=0)
    keys.load()
    return keys


def decode(token: str, keys: KeyRing, audience: str) -> dict[str, Any]:
    jwk = next(k for k in keys.jwks()["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=audience, issuer=ISSUER
    )
    return claims


def test_a_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = ring(tmp_path).signing_key.kid
    assert ring(tmp_path).signing_key.kid == first
    assert (tmp_path / "keys" / f"{first}.pem").stat().st_mode & 0o777 == 0o600


def test_rotation_publishes_both_keys_and_signs_with_the_new_one(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    old = keys.signing_key.kid
    new = add_key(tmp_path / "keys").kid
    assert keys.signing_key.kid == new
    assert {k["kid"] for k in keys.jwks()["keys"]} == {old, new}
    assert set(keys.certificates()) == {old, new}
    retire_key(tmp_path / "keys", old)
    assert [k.kid for k in keys.keys] == [new]
    with pytest.raises(ValueError, match="only signing key"):
        retire_key(tmp_path / "keys", new)


def test_oidc_token_claims(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    minter = TokenMinter(keys, ISSUER)
    request = OutboundRequest("POST", "https://h/x?y=1", {}, b"", 10, oidc_token=OidcToken(EMAIL))
    header = minter.authorization(request, now)
    claims = decode(header.removeprefix("Bearer "), keys, audience="https://h/x?y=1")
    assert claims == {
        "iss": ISSUER,
        "aud": "https://h/x?y=1",  # no audience: the task's full URL
        "azp": subject_id(EMAIL),
        "sub": subject_id(EMAIL),
        "email": EMAIL,
        "email_verified": True,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + 3600,
    }
    assert len(subject_id(EMAIL)) == 21


def test_tokens_are_reused_for_five_minutes_then_minted_again(tmp_path: Path) -> None:
    minter = TokenMinter(ring(tmp_path), ISSUER)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = minter.oidc(EMAIL, "aud", now)
    assert minter.oidc(EMAIL, "aud", now + timedelta(minutes=5)) == first
    assert minter.oidc(EMAIL, "aud", now + timedelta(minutes=5, seconds=1)) != first
    assert minter.oidc(EMAIL, "other", now) != first


def test_oauth_tokens_come_from_configuration(tmp_path: Path) -> None:
    minter = TokenMinter(ring(tmp_path), ISSUER, {EMAIL: "opaque-1"})
    request = OutboundRequest("POST", "https://h/", {}, b"", 10, oauth_token=OAuthToken(EMAIL, "scope"))
    assert minter.authorization(request, datetime.now(UTC)) == "Bearer opaque-1"
    with pytest.raises(CredentialError, match="--oauth-token other@x=TOKEN"):
        minter.oauth("other@x")
    assert TokenMinter(minter.keys, ISSUER, {"*": "any"}).oauth("other@x") == "any"


class _StaticKeys:
    """Stands in for PyJWKClient: the keys of a ring, without HTTP."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        kid = jwt.get_unverified_header(token)["kid"]
        return jwt.PyJWK(next(k for k in self._keys.jwks()["keys"] if k["kid"] == kid))


def verifier(keys: KeyRing, audience: str = "https://h/x") -> TokenVerifier:
    checker = TokenVerifier(audience=audience, issuer=ISSUER)
    checker._keys = _StaticKeys(keys)  # type: ignore[assignment]
    return checker


def test_verifier_accepts_our_tokens_and_rejects_others(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    token = TokenMinter(keys, ISSUER).oidc(EMAIL, "https://h/x", datetime.now(UTC))
    assert verifier(keys).verify(f"Bearer {token}").email == EMAIL
    with pytest.raises(InvalidToken, match="Audience"):
        verifier(keys, audience="https://other/").verify(token)
    with pytest.raises(InvalidToken, match="no bearer token"):
        verifier(keys).verify("")
    stale = TokenMinter(keys, ISSUER).oidc(EMAIL, "https://h/x", datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(InvalidToken, match="expired"):
        verifier(keys).verify(stale)
    wrong_issuer = TokenMinter(keys, "https://evil").oidc(EMAIL, "https://h/x", datetime.now(UTC))
    with pytest.raises(InvalidToken, match="issuer"):
        verifier(keys).verify(wrong_issuer)


def test_flask_and_fastapi_helpers(tmp_path: Path) -> None:
    import flask  # noqa: PLC0415
    from fastapi import Depends, FastAPI  # noqa: PLC0415
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from opentasks.verify import fastapi_dependency, flask_required  # noqa: PLC0415

    keys = ring(tmp_path)
    token = TokenMinter(keys, ISSUER).oidc(EMAIL, "https://h/x", datetime.now(UTC))
    check = verifier(keys)

    flask_app = flask.Flask(__name__)

    @flask_app.post("/task")
    @flask_required(check)
    def flask_view() -> str:
        return str(flask.g.task_caller)

    web = flask_app.test_client()
    assert web.post("/task", headers={"Authorization": f"Bearer {token}"}).text == EMAIL
    assert web.post("/task").status_code == 401

    api = FastAPI()

    @api.post("/task")
    def fastapi_view(caller: str = Depends(fastapi_dependency(check))) -> str:
        return caller

    client = TestClient(api)
    assert client.post("/task", headers={"Authorization": f"Bearer {token}"}).json() == EMAIL
    refused = client.post("/task", headers={"Authorization": "Bearer junk"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"


def test_api_auth() -> None:
    auth = ApiAuth(tokens=("admin-token",), read_only_tokens=("viewer-token",))
    auth.check({"authorization": "Bearer admin-token"}, "create_task")
    auth.check({"x-goog-api-key": "admin-token"}, "delete_queue")
    auth.check({}, "create_task", query_key="admin-token")
    auth.check({"authorization": "Bearer viewer-token"}, "list_tasks")
    with pytest.raises(PermissionDenied, match="CreateTask needs a full-access token"):
        auth.check({"authorization": "Bearer viewer-token"}, "create_task")
    with pytest.raises(Unauthenticated, match="missing an API credential"):
        auth.check({}, "get_queue")
    with pytest.raises(Unauthenticated, match="invalid authentication credentials"):
        auth.check({"authorization": "Bearer guess"}, "get_queue")
