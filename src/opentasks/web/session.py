"""Dashboard sessions: logging in with an API token, the signed session cookie, CSRF tokens and
the check that a state-changing request comes from the dashboard itself.

The cookie holds ``{access, expiry, token fingerprint, nonce}`` signed with HMAC-SHA256 under a
key derived from the store's page-token key, which every node sharing the store has, so a
session opened on one node is valid on all. The fingerprint is an HMAC of the token: a session
ends when its token leaves the configuration, and the cookie never reveals the token. With no
tokens configured (authentication off) every visitor gets an open session with full access; it
still carries the nonce that CSRF tokens are made from.

Logging out revokes the session's nonce on the node that served the logout (a bounded list kept
until the session would have expired), so a copy of the cookie is refused there afterwards.
Failed logins are limited per client and in all by :class:`LoginLimiter`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

SESSION_COOKIE = "opentasks_session"
FLASH_COOKIE = "opentasks_flash"
COOKIE_PATH = "/ui/"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SESSION_LIFETIME = timedelta(hours=12)
FLASH_LIFETIME = timedelta(minutes=1)
MAX_COOKIE_CHARS = 2048
MAX_REVOKED = 10_000  # logged-out sessions remembered (until they would have expired)
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
        self._comparing = _derive(key, b"dashboard token comparison")
        self._full_digests = tuple(self._digest(t) for t in tokens)
        self._read_digests = tuple(self._digest(t) for t in read_only_tokens)
        self._known = {self._fingerprint(t): Access.FULL for t in tokens} | {
            self._fingerprint(t): Access.READ for t in read_only_tokens if t not in tokens
        }
        self._revoked: dict[str, int] = {}  # nonce -> when the session would have expired

    @property
    def auth_on(self) -> bool:
        """True when tokens are configured, so visitors must log in."""
        return bool(self._known)

    def login(self, token: str, now: datetime) -> Session | None:
        """A new session for ``token``, or None if no configured token matches it."""
        access = self._access_of(token.strip())
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
        if session.expires <= now.timestamp() or session.nonce in self._revoked:
            return None
        if not self.auth_on:
            return Session(Access.FULL, session.expires, session.fingerprint, session.nonce)
        if self._known.get(session.fingerprint) != session.access:
            return None
        return session

    def revoke(self, session: Session, now: datetime) -> None:
        """End ``session``: its cookie is refused from now on, by this keeper. At most
        :data:`MAX_REVOKED` are remembered: the expired are forgotten first, then the oldest."""
        if not session.nonce:
            return
        if len(self._revoked) >= MAX_REVOKED:
            moment = now.timestamp()
            self._revoked = {n: e for n, e in self._revoked.items() if e > moment}
            while len(self._revoked) >= MAX_REVOKED:
                del self._revoked[next(iter(self._revoked))]
        self._revoked[session.nonce] = session.expires

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

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._comparing, token.encode(), hashlib.sha256).digest()

    def _access_of(self, token: str) -> Access | None:
        """The access ``token`` grants. Its HMAC is compared with every configured token's, each
        comparison in constant time over 32 bytes, so the time taken depends neither on how much
        of a token was guessed right nor on the tokens' lengths."""
        if not token:
            return None
        presented = self._digest(token)
        found_full = found_read = False
        for candidate in self._full_digests:
            found_full |= hmac.compare_digest(presented, candidate)
        for candidate in self._read_digests:
            found_read |= hmac.compare_digest(presented, candidate)
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


def request_is_tls(secure: bool, headers: Mapping[str, str]) -> bool:
    """True when the request came over TLS, to this server or to a proxy in front of it."""
    forwarded = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return secure or forwarded == "https"


def safe_next(target: str) -> str:
    """``target`` if it is a dashboard path on this server (no open redirect), else ``/ui/``:
    printable ASCII only, no ``//`` or backslash (another host to a browser), no ``.`` or ``..``
    segment (out of ``/ui/`` once the browser resolves it), no fragment."""
    path = target.split("?", 1)[0]
    segments = path.lower().replace("%2e", ".").split("/")
    if (
        target.startswith(COOKIE_PATH)
        and "//" not in target
        and "\\" not in target
        and "#" not in target
        and all(32 < ord(c) < 127 for c in target)
        and "." not in segments
        and ".." not in segments
    ):
        return target
    return COOKIE_PATH


# -- failed logins -----------------------------------------------------------------------------

LOGIN_BURST = 10  # failed logins one client may make in a row...
LOGIN_PER_MINUTE = 5.0  # ...and then this many a minute
OVERALL_LOGIN_BURST = 100  # the same for all clients together
OVERALL_LOGIN_PER_MINUTE = 60.0
MAX_LOGIN_CLIENTS = 10_000  # clients remembered; beyond it the longest untouched are forgotten


class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``per_second``, on a monotonic clock."""

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.at = now

    def level(self, now: float) -> float:
        return min(self.capacity, self.tokens + max(now - self.at, 0.0) * self.per_second)

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        level = self.level(now)
        return 0.0 if level >= 1 else (1 - level) / self.per_second

    def take(self, now: float) -> None:
        self.tokens, self.at = max(self.level(now) - 1, 0.0), now


class LoginLimiter:
    """Limits failed dashboard logins: per client (its IP address; an IPv6 client by its /64) and
    from all clients together, each a token bucket refilled on the injected monotonic clock.

    Only failures take a token. While a bucket is empty every login attempt is refused before
    the token is even compared, so a guesser learns nothing more until the wait is over. At most
    ``max_clients`` clients are remembered: those whose bucket has refilled are forgotten first,
    then the longest untouched (the overall bucket still holds them back).
    """

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        burst: int = LOGIN_BURST,
        per_minute: float = LOGIN_PER_MINUTE,
        overall_burst: int = OVERALL_LOGIN_BURST,
        overall_per_minute: float = OVERALL_LOGIN_PER_MINUTE,
        max_clients: int = MAX_LOGIN_CLIENTS,
    ) -> None:
        self._monotonic = monotonic
        self._burst = burst
        self._rate = per_minute / 60
        self._max_clients = max_clients
        self._clients: OrderedDict[str, _Bucket] = OrderedDict()
        self._overall = _Bucket(overall_burst, overall_per_minute / 60, monotonic())

    def __len__(self) -> int:
        """How many clients are remembered."""
        return len(self._clients)

    def wait(self, client: str) -> int:
        """Whole seconds before ``client`` may try to log in again (0: now)."""
        now = self._monotonic()
        bucket = self._clients.get(client)
        seconds = max(self._overall.wait(now), bucket.wait(now) if bucket is not None else 0.0)
        return math.ceil(seconds)

    def failed(self, client: str) -> None:
        """Count a failed login of ``client``."""
        now = self._monotonic()
        self._overall.take(now)
        bucket = self._clients.pop(client, None) or _Bucket(self._burst, self._rate, now)
        bucket.take(now)
        self._clients[client] = bucket  # the most recently touched last
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._clients:
            oldest = next(iter(self._clients.values()))
            if oldest.level(now) < oldest.capacity and len(self._clients) <= self._max_clients:
                return
            self._clients.popitem(last=False)


def client_key(remote: str | None) -> str:
    """Who a login comes from, for :class:`LoginLimiter`: the IP address, an IPv6 address by
    its /64 (one host usually has all of it), anything else (a Unix socket) as one client."""
    try:
        address = ipaddress.ip_address((remote or "").split("%")[0])
    except ValueError:
        return "-"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
