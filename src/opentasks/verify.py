"""Verify that a request really comes from the task queue: for handlers of OIDC-signed tasks.

opentasks signs each attempt of a task with an ``oidc_token`` with its own key and publishes the
keys at ``<issuer>/oauth2/v3/certs``, as Google does for Cloud Tasks. A handler checks the
token's signature, audience, issuer, expiry and ``email_verified``, and learns which service
account the task was created for::

    from opentasks.verify import TokenVerifier, flask_required

    verifier = TokenVerifier(audience="https://worker.example/tasks", issuer="http://127.0.0.1:8124")

    @app.post("/tasks")
    @flask_required(verifier)
    def handle():
        ...  # flask.g.task_caller is the service account email

The same verifier checks Google's own tokens with ``issuer="https://accounts.google.com"`` and
``jwks_url="https://www.googleapis.com/oauth2/v3/certs"``. Flask and FastAPI are imported only
by their helpers.
"""

# No `from __future__ import annotations` here: FastAPI reads the dependency's annotations at
# run time, and they name a class imported inside the helper.

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jwt

F = TypeVar("F", bound=Callable[..., Any])
JWKS_PATH = "/oauth2/v3/certs"


class InvalidToken(Exception):
    """The request carries no valid token from the queue; the message says why."""


@dataclass(frozen=True)
class Caller:
    """Who a verified token speaks for."""

    email: str
    subject: str
    claims: dict[str, Any] = field(repr=False)


class TokenVerifier:
    """Checks OIDC tokens against one audience (or several) and one issuer (or several).

    Args:
        audience: the ``aud`` the handler expects: the task's ``oidc_token.audience``, or its URL.
        issuer: the issuer(s) to accept; the keys are fetched from the first one's
            ``/oauth2/v3/certs`` unless ``jwks_url`` says otherwise.
        jwks_url: where the signing keys are published.
        leeway: seconds of clock difference tolerated on ``exp`` and ``iat``.
    """

    def __init__(
        self,
        *,
        audience: str | Sequence[str],
        issuer: str | Sequence[str],
        jwks_url: str | None = None,
        leeway: float = 30.0,
    ) -> None:
        self.audience = [audience] if isinstance(audience, str) else list(audience)
        self.issuers = [issuer] if isinstance(issuer, str) else list(issuer)
        if not self.audience or not self.issuers:
            raise ValueError("TokenVerifier needs an audience and an issuer")
        url = jwks_url or self.issuers[0].rstrip("/") + JWKS_PATH
        self._keys = jwt.PyJWKClient(url, cache_keys=True, lifespan=300)
        self._leeway = leeway

    def verify(self, authorization: str) -> Caller:
        """Check ``authorization`` (``Bearer <token>`` or the bare token); the caller if valid."""
        token = authorization.removeprefix("Bearer ").removeprefix("bearer ").strip()
        if not token:
            raise InvalidToken("no bearer token: the request did not come from the task queue")
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuers,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "email"]},
            )
        except jwt.PyJWKClientError as error:
            raise InvalidToken(f"cannot get the signing key: {error}") from None
        except jwt.InvalidTokenError as error:
            raise InvalidToken(f"invalid token: {error}") from None
        if claims.get("email_verified") is not True:
            raise InvalidToken("invalid token: email_verified is not true")
        return Caller(email=str(claims["email"]), subject=str(claims.get("sub", "")), claims=claims)


def flask_required(verifier: TokenVerifier) -> Callable[[F], F]:
    """A Flask view decorator: 401 without a valid token; ``flask.g.task_caller`` holds the email."""
    import flask  # noqa: PLC0415 - only Flask users need Flask

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                caller = verifier.verify(flask.request.headers.get("Authorization", ""))
            except InvalidToken as error:
                return flask.Response(str(error), status=401, headers={"WWW-Authenticate": "Bearer"})
            flask.g.task_caller = caller.email
            return view(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorate


def fastapi_dependency(verifier: TokenVerifier) -> Callable[..., str]:
    """A FastAPI dependency returning the caller's email (401 without a valid token)::

    @app.post("/tasks")
    def handle(caller: str = Depends(fastapi_dependency(verifier))): ...
    """
    from fastapi import HTTPException, Request  # noqa: PLC0415 - only FastAPI users need FastAPI

    def task_caller(request: Request) -> str:
        try:
            return verifier.verify(request.headers.get("authorization", "")).email
        except InvalidToken as error:
            raise HTTPException(401, str(error), headers={"WWW-Authenticate": "Bearer"}) from None

    return task_caller
