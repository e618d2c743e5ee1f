"""IAM policy documents: stored as opaque bytes, versioned by an etag."""

from __future__ import annotations

import hashlib

from opentasks.errors import Aborted


def policy_etag(document: bytes) -> bytes:
    """The etag of a stored policy document (its content hash)."""
    return hashlib.sha256(document).digest()[:8]


def check_etag(current: bytes, expected: bytes) -> None:
    """SetIamPolicy's optimistic concurrency: an etag that is given must match the stored one."""
    if expected and expected != policy_etag(current):
        raise Aborted(
            "The policy changed since its etag was read; read it again with GetIamPolicy and retry."
        )
