"""Opaque page tokens for the List RPCs.

A token carries the cursor and a fingerprint of the request's other parameters, so that
changing them mid-listing is caught, as Cloud Tasks requires.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from opentasks.errors import InvalidArgument


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
    try:
        data = json.loads(base64.urlsafe_b64decode(page_token.encode("ascii")))
        cursor, token_fingerprint = data["c"], data["f"]
    except (ValueError, KeyError, TypeError, UnicodeEncodeError):
        raise InvalidArgument("page_token is not a token returned by a previous List call.") from None
    if token_fingerprint != _hash(fingerprint):
        raise InvalidArgument("The request's parameters changed since page_token was issued; start again.")
    return PageRequest(size, cursor)


def next_page_token(cursor: str | int | None, *, fingerprint: str) -> str:
    """A token that continues after ``cursor``, or "" when there is no next page."""
    if cursor is None:
        return ""
    raw = json.dumps({"c": cursor, "f": _hash(fingerprint)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def _hash(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
