"""What the API knows of the call in progress besides its request message: the gRPC metadata
or HTTP headers it came with, lower-cased. Bound once per call by the transport."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar

# opentasks extension: set to "true" by ``opentasks apply -f queue.yaml`` on CreateQueue and
# UpdateQueue, so the queue keeps its bucket_size and the longer task-name reuse window.
QUEUE_YAML_HEADER = "x-opentasks-queue-yaml"

_headers: ContextVar[Mapping[str, str] | None] = ContextVar("opentasks_call_headers", default=None)


def bind(pairs: Iterable[tuple[str, str | bytes]]) -> None:
    """Record the metadata of the call running in this context (binary values are skipped)."""
    _headers.set({key.lower(): value for key, value in pairs if isinstance(value, str)})


def headers() -> Mapping[str, str]:
    """Every header or metadata value of the current call."""
    return _headers.get() or {}


def header(name: str) -> str:
    """A header or metadata value of the current call ('' when absent); ``name`` lower-case."""
    headers = _headers.get()
    return "" if headers is None else headers.get(name, "")


def from_queue_yaml() -> bool:
    return header(QUEUE_YAML_HEADER).lower() == "true"
