"""Credentials for dispatched requests: OIDC ID tokens signed with the server's key, and the
configured opaque OAuth bearer tokens (spec section 6)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import jwt

from opentasks.credentials.base import CredentialError
from opentasks.credentials.keys import KeyRing
from opentasks.domain.outbound import OutboundRequest

TOKEN_LIFETIME = timedelta(hours=1)
# A cached token is reused while it has at least this long to live (signing costs ~1 ms).
_REUSE_MARGIN = timedelta(minutes=55)


@dataclass
class TokenMinter:
    """Makes the ``Authorization`` value of signed attempts.

    Attributes:
        keys: the signing keys (the newest signs).
        issuer: the ``iss`` claim, and the base URL that publishes the keys.
        oauth_tokens: service account email -> opaque bearer token; ``*`` matches any account.
    """

    keys: KeyRing
    issuer: str
    oauth_tokens: Mapping[str, str] = field(default_factory=dict)
    _cache: dict[tuple[str, str, str], tuple[datetime, str]] = field(default_factory=dict, repr=False)

    def authorization(self, request: OutboundRequest, now: datetime) -> str:
        """``Bearer <token>`` for the OIDC or OAuth token ``request`` names."""
        if request.oidc_token is not None:
            token = request.oidc_token
            return "Bearer " + self.oidc(token.service_account_email, token.audience or request.url, now)
        assert request.oauth_token is not None, "only signed requests need a credential"
        return "Bearer " + self.oauth(request.oauth_token.service_account_email)

    def oidc(self, service_account_email: str, audience: str, now: datetime) -> str:
        """An RS256 ID token for ``service_account_email`` with audience ``audience``."""
        key = self.keys.signing_key
        cache_key = (service_account_email, audience, key.kid)
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] - now >= _REUSE_MARGIN and cached[0] - now <= TOKEN_LIFETIME:
            return cached[1]
        issued = int(now.timestamp())
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "azp": subject_id(service_account_email),
            "sub": subject_id(service_account_email),
            "email": service_account_email,
            "email_verified": True,
            "iat": issued,
            "exp": issued + int(TOKEN_LIFETIME.total_seconds()),
        }
        token = jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = (now + TOKEN_LIFETIME, token)
        return token

    def oauth(self, service_account_email: str) -> str:
        """The configured bearer token of ``service_account_email``."""
        token = self.oauth_tokens.get(service_account_email) or self.oauth_tokens.get("*")
        if not token:
            raise CredentialError(
                f"No OAuth token is configured for {service_account_email}; start the server with "
                f"--oauth-token {service_account_email}=TOKEN (or --oauth-token '*=TOKEN')."
            )
        return token


def subject_id(email: str) -> str:
    """A stable 21-digit numeric ID for a service account (Google's ``sub`` looks like this)."""
    digest = int.from_bytes(hashlib.sha256(email.encode()).digest()[:8], "big")
    return str(10**20 + digest % (9 * 10**20))


def parse_oauth_tokens(entries: list[str]) -> dict[str, str]:
    """``["sa@p.iam.gserviceaccount.com=TOKEN", "*=TOKEN"]`` -> a map."""
    tokens: dict[str, str] = {}
    for entry in entries:
        email, sep, token = entry.partition("=")
        if not sep or not email.strip() or not token:
            raise ValueError("--oauth-token takes EMAIL=TOKEN (or *=TOKEN for any account)")
        tokens[email.strip()] = token
    return tokens
