"""OpenID discovery on the HTTP port: where handlers fetch the keys that verify OIDC tokens.

The paths mirror Google's (``/oauth2/v3/certs`` JWKS, ``/oauth2/v1/certs`` kid -> PEM
certificate), so ``google.oauth2.id_token.verify_token(..., certs_url=ISSUER + "/oauth2/v1/certs")``
and any JWKS-aware JWT library verify tokens as they would Google's.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from opentasks.credentials.keys import KeyRing

JWKS_PATH = "/oauth2/v3/certs"
PEM_CERTS_PATH = "/oauth2/v1/certs"
CONFIGURATION_PATH = "/.well-known/openid-configuration"
# Keys rotate rarely; a short cache keeps verifiers from refetching per request.
_CACHE = {"Cache-Control": "public, max-age=300"}


def add_routes(app: web.Application, keys: KeyRing, issuer: Callable[[], str]) -> None:
    """Serve the discovery document, the JWKS and the PEM certificates of ``keys``
    (``issuer`` is read per request: it is known once the HTTP port is bound)."""

    async def configuration(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": issuer(),
                "jwks_uri": issuer() + JWKS_PATH,
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"],
            },
            headers=_CACHE,
        )

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(keys.jwks(), headers=_CACHE)

    async def certificates(_: web.Request) -> web.Response:
        return web.json_response(keys.certificates(), headers=_CACHE)

    app.router.add_get(CONFIGURATION_PATH, configuration)
    app.router.add_get(JWKS_PATH, jwks)
    app.router.add_get(PEM_CERTS_PATH, certificates)
