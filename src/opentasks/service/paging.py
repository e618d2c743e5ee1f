"""Opaque, signed page tokens for the List RPCs.

A token carries the cursor and a fingerprint of the request's other parameters, so that
changing them mid-listing is caught, as Cloud Tasks requires. Tokens are signed with HMAC-SHA256
so a caller cannot forge a cursor: only tokens this server issued are read back. The key is
random per process unless :func:`set_signing_key` installs a stable one, so by default a token
does not survive a restart (the caller gets INVALID_ARGUMENT and lists again from the start).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from opentasks.errors import InvalidArgument

_MAX_TOKEN_LENGTH = 2048
_MAX_INT_CURSOR = 2**63 - 1
_MAX_STR_CURSOR = 1024
_MAC_BYTES = 16
_key = bytearray(secrets.token_bytes(32))  # replaced in place by set_signing_key

BAD_TOKEN = "page_token is not a token returned by a previous List call."


def set_signing_key(key: bytes) -> None:
    """Sign and check tokens with ``key`` (e.g. one derived from a stable secret, so that tokens
    survive a restart). Tokens signed with the previous key stop being accepted."""
    if len(key) < 16:
        raise ValueError("a page-token signing key needs at least 16 bytes")
    _key[:] = key


@dataclass(frozen=True)
class PageRequest:
    """A validated ``page_size`` / ``page_token`` pair."""

    size: int
    cursor: str | int | None


def page_request(page_size: int, page_token: str, *, max_size: int, fingerprint: str) -> PageRequest:
    """Check the paging fields of a List request; size 0 means the maximum, larger sizes are capped."""
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative.")
    size = min(page_size or max_size, max_size)
    if not page_token:
        return PageRequest(size, None)
    cursor, token_fingerprint = _read(page_token)
    if not hmac.compare_digest(token_fingerprint, _hash(fingerprint)):
        raise InvalidArgument("The request's parameters changed since page_token was issued; start again.")
    return PageRequest(size, cursor)


def next_page_token(cursor: str | int | None, *, fingerprint: str) -> str:
    """A token that continues after ``cursor``, or "" when there is no next page."""
    if cursor is None:
        return ""
    payload = json.dumps({"c": cursor, "f": _hash(fingerprint)}, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(payload))}"


def _read(token: str) -> tuple[str | int, str]:
    """The cursor and fingerprint hash of a token this server signed; anything else is refused."""
    if len(token) > _MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidArgument(BAD_TOKEN)
    encoded_payload, encoded_mac = token.split(".")
    try:
        payload = _unb64(encoded_payload)
        mac = _unb64(encoded_mac)
    except (ValueError, binascii.Error):
        raise InvalidArgument(BAD_TOKEN) from None
    if not hmac.compare_digest(mac, _mac(payload)):
        raise InvalidArgument(BAD_TOKEN)
    try:
        data = json.loads(payload)
        cursor, token_fingerprint = data["c"], data["f"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(BAD_TOKEN) from None
    if not _valid_cursor(cursor) or not isinstance(token_fingerprint, str):
        raise InvalidArgument(BAD_TOKEN)
    return cursor, token_fingerprint


def _valid_cursor(cursor: object) -> bool:
    if isinstance(cursor, bool):
        return False
    if isinstance(cursor, int):
        return 0 <= cursor <= _MAX_INT_CURSOR
    return isinstance(cursor, str) and 0 < len(cursor) <= _MAX_STR_CURSOR


def _mac(payload: bytes) -> bytes:
    return hmac.new(bytes(_key), payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hash(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
