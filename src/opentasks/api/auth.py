"""API authentication: bearer tokens or API keys, checked on gRPC metadata and HTTP headers.

A caller sends ``Authorization: Bearer TOKEN`` or ``x-goog-api-key: TOKEN`` (REST also takes
``?key=TOKEN``). Full-access tokens may call every RPC; read-only tokens only the ones that
change nothing. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentasks.errors import PermissionDenied, Unauthenticated

# RPCs a read-only token may call (the coroutine names of CloudTasksApi).
READ_ONLY_RPCS = frozenset(
    {
        "get_queue",
        "list_queues",
        "get_task",
        "list_tasks",
        "get_iam_policy",
        "test_iam_permissions",
        "get_cmek_config",
        "list_locations",
        "get_location",
        "get_operation",
    }
)


@dataclass(frozen=True)
class ApiAuth:
    """The tokens a server accepts. With neither set, every call is refused."""

    tokens: tuple[str, ...] = ()
    read_only_tokens: tuple[str, ...] = ()

    def check(self, headers: Mapping[str, str], rpc: str, query_key: str = "") -> None:
        """Raise UNAUTHENTICATED without a valid credential, PERMISSION_DENIED when a read-only
        token calls an RPC that changes something."""
        presented = _credential(headers) or query_key
        if not presented:
            raise Unauthenticated(
                "Request is missing an API credential. This server requires one: send "
                "'Authorization: Bearer <token>' or 'x-goog-api-key: <token>'."
            )
        if _known(presented, self.tokens):
            return
        if _known(presented, self.read_only_tokens):
            if rpc in READ_ONLY_RPCS:
                return
            raise PermissionDenied(
                f"The credential is read-only; {_rpc_title(rpc)} needs a full-access token."
            )
        raise Unauthenticated("Request had invalid authentication credentials.")


def _credential(headers: Mapping[str, str]) -> str:
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-goog-api-key", "").strip()


def _known(presented: str, tokens: Iterable[str]) -> bool:
    found = False
    for token in tokens:  # no early exit: the time taken says nothing about which token matched
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found


def _rpc_title(rpc: str) -> str:
    return "".join(part.title() for part in rpc.split("_"))
