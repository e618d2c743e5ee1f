"""Dashboard sessions: logging in with an API token, the signed session cookie, CSRF tokens and
the check that a state-changing request comes from the dashboard itself.

The cookie holds ``{access, expiry, token fingerprint, nonce}`` signed with HMAC-SHA256 under a
key derived from the store's page-token key, which every node sharing the store has, so a
session opened on one node is valid on all. The fingerprint is an HMAC of the token: a session
ends when its token leaves the configuration, and the cookie never reveals the token. With no
tokens configured (authentication off) every visitor gets an open session with full access; it
still carries the nonce that CSRF tokens are made from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

SESSION_COOKIE = "opentasks_session"
FLASH_COOKIE = "opentasks_flash"
COOKIE_PATH = "/ui/"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SESSION_LIFETIME = timedelta(hours=12)
FLASH_LIFETIME = timedelta(minutes=1)
MAX_COOKIE_CHARS = 2048
OPEN = "open"  # the fingerprint of a session opened while authentication was off


class Access(Enum):
    """What a session may do."""

    READ = "read"  # look only
    FULL = "full"  # look and act


@dataclass(frozen=True)
class Session:
    """A visitor's session: what it may do, until when (seconds since the epoch), which token
    opened it (its fingerprint) and the random nonce its CSRF token is made from."""

    access: Access
    expires: int
    fingerprint: str
    nonce: str

    @property
    def can_act(self) -> bool:
        return self.access == Access.FULL


@dataclass(frozen=True)
class Flash:
    """A message shown once on the next page: ``kind`` is ``ok`` or ``error``."""

    kind: str
    text: str


class SessionKeeper:
    """Opens, seals and checks sessions for one configuration of tokens.

    ``key`` is the store's page-token key; the keeper derives its own keys from it, one per
    purpose, so a value signed for one purpose is never accepted for another.
    """

    def __init__(
        self, key: bytes, tokens: tuple[str, ...] = (), read_only_tokens: tuple[str, ...] = ()
    ) -> None:
        self._signing = _derive(key, b"dashboard session")
        self._fingerprinting = _derive(key, b"dashboard token fingerprint")
        self._csrf = _derive(key, b"dashboard csrf")
        self._flash = _derive(key, b"dashboard flash")
        self._tokens = tokens
        self._read_only = read_only_tokens
        self._known = {self._fingerprint(t): Access.FULL for t in tokens} | {
            self._fingerprint(t): Access.READ for t in read_only_tokens if t not in tokens
        }

    @property
    def auth_on(self) -> bool:
        """True when tokens are configured, so visitors must log in."""
        return bool(self._known)

    def login(self, token: str, now: datetime) -> Session | None:
        """A new session for ``token``, or None if no configured token matches it."""
        access = _access_of(token.strip(), self._tokens, self._read_only)
        if access is None:
            return None
        return self._new(access, self._fingerprint(token.strip()), now)

    def open_session(self, now: datetime) -> Session:
        """A session with full access for a server without tokens."""
        return self._new(Access.FULL, OPEN, now)

    def _new(self, access: Access, fingerprint: str, now: datetime) -> Session:
        expires = int((now + SESSION_LIFETIME).timestamp())
        return Session(access, expires, fingerprint, secrets.token_urlsafe(16))

    def seal(self, session: Session) -> str:
        """The cookie value of ``session``."""
        payload = {
            "a": session.access.value,
            "e": session.expires,
            "f": session.fingerprint,
            "n": session.nonce,
        }
        return _sign(self._signing, payload)

    def unseal(self, value: str, now: datetime) -> Session | None:
        """The session a cookie holds, if it is signed by this key, not expired, and (with
        authentication on) opened by a token that is still configured, at its access level."""
        payload = _verify(self._signing, value)
        if payload is None:
            return None
        try:
            session = Session(Access(payload["a"]), int(payload["e"]), str(payload["f"]), str(payload["n"]))
        except (KeyError, ValueError, TypeError):
            return None
        if session.expires <= now.timestamp():
            return None
        if not self.auth_on:
            return Session(Access.FULL, session.expires, session.fingerprint, session.nonce)
        if self._known.get(session.fingerprint) != session.access:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """The token every state-changing request of ``session`` must carry."""
        digest = hmac.new(self._csrf, session.nonce.encode(), hashlib.sha256).digest()
        return _b64(digest[:24])

    def csrf_valid(self, session: Session, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf_token(session).encode())

    def seal_flash(self, flash: Flash, now: datetime) -> str:
        expires = int((now + FLASH_LIFETIME).timestamp())
        return _sign(self._flash, {"k": flash.kind, "t": flash.text[:500], "e": expires})

    def unseal_flash(self, value: str, now: datetime) -> Flash | None:
        payload = _verify(self._flash, value)
        if payload is None or not isinstance(payload.get("e"), int) or payload["e"] <= now.timestamp():
            return None
        kind, text = payload.get("k"), payload.get("t")
        if kind not in ("ok", "error") or not isinstance(text, str):
            return None
        return Flash(kind, text)

    def _fingerprint(self, token: str) -> str:
        return _b64(hmac.new(self._fingerprinting, token.encode(), hashlib.sha256).digest()[:18])


def _access_of(token: str, full: tuple[str, ...], read_only: tuple[str, ...]) -> Access | None:
    """The access ``token`` grants, compared in constant time against every configured token."""
    if not token:
        return None
    found_full = found_read = False
    for candidate in full:
        found_full |= hmac.compare_digest(token.encode(), candidate.encode())
    for candidate in read_only:
        found_read |= hmac.compare_digest(token.encode(), candidate.encode())
    if found_full:
        return Access.FULL
    return Access.READ if found_read else None


def _derive(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, b"opentasks " + purpose, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: Mapping[str, object]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signature = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def _verify(key: bytes, value: str) -> dict[str, Any] | None:
    if len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
        return None
    body, signature = value.split(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


# -- where a request comes from ----------------------------------------------------------------


def cross_site(headers: Mapping[str, str], host: str) -> bool:
    """True when a browser says the request comes from another site: ``Sec-Fetch-Site`` other
    than same-origin (or ``none``: typed by the user), or an ``Origin`` whose host is not the one
    the request was sent to (``host``, or the proxy's ``X-Forwarded-Host``)."""
    fetch_site = headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site and fetch_site not in ("same-origin", "none"):
        return True
    origin = headers.get("Origin", "")
    if not origin:
        return False
    if origin == "null":
        return True
    parts = urlsplit(origin)
    hosts = {host.lower()} | {h.strip().lower() for h in headers.get("X-Forwarded-Host", "").split(",") if h}
    return parts.scheme not in ("http", "https") or parts.netloc.lower() not in hosts


def request_is_tls(secure: bool, headers: Mapping[str, str]) -> bool:
    """True when the request came over TLS, to this server or to a proxy in front of it."""
    forwarded = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return secure or forwarded == "https"


def safe_next(target: str) -> str:
    """``target`` if it is a dashboard path on this server (no open redirect), else ``/ui/``."""
    if (
        target.startswith(COOKIE_PATH)
        and "//" not in target
        and "\\" not in target
        and all(32 < ord(c) < 127 for c in target)
    ):
        return target
    return COOKIE_PATH
