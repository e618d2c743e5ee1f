"""opentasks: a self-hosted, durable server for the Google Cloud Tasks API v2.

``opentasks.client()`` and ``opentasks.async_client()`` return official clients wired to a
running server (see :mod:`opentasks.clients`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so that importing opentasks stays cheap and free of side effects.
    if name in ("client", "async_client"):
        from opentasks import clients  # noqa: PLC0415

        return getattr(clients, name)
    raise AttributeError(f"module 'opentasks' has no attribute {name!r}")
