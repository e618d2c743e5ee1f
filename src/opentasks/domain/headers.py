"""Rules for the headers a task, or a queue's header overrides, may carry (spec 5.3)."""

from __future__ import annotations

from collections.abc import Iterable

from opentasks.errors import InvalidArgument

MAX_HEADERS_BYTES = 80 * 1024


def reserved_http_header(name: str) -> bool:
    """Headers an HTTP task (or a queue's header override) cannot set: Cloud Tasks computes
    Host, Content-Length and User-Agent, and keeps ``X-Google-*``, ``X-AppEngine-*`` and
    ``X-CloudTasks-*`` for itself."""
    lower = name.lower()
    return lower in ("host", "content-length", "user-agent") or lower.startswith(
        ("x-google-", "x-appengine-", "x-cloudtasks-")
    )


def check_headers(headers: dict[str, str], label: str = "Task headers") -> dict[str, str]:
    """``headers`` if every name and value can be sent as HTTP, once each, within 80 KB."""
    check_header_pairs(headers.items(), label)
    return headers


def check_header_pairs(pairs: Iterable[tuple[str, str]], label: str) -> None:
    """The checks of :func:`check_headers` on (name, value) pairs, e.g. a list of overrides."""
    seen: dict[str, str] = {}
    size = 0
    for key, value in pairs:
        if not key or any(c in key for c in " \t\r\n:"):
            raise InvalidArgument(f'Header name "{key}" is not a valid HTTP header name.')
        other = seen.setdefault(key.lower(), key)
        if other != key:
            raise InvalidArgument(
                f'Headers "{other}" and "{key}" differ only in case; send each header once.'
            )
        if "\r" in value or "\n" in value:
            raise InvalidArgument("Header values must not contain line breaks.")
        size += len(key) + len(value)
    if size >= MAX_HEADERS_BYTES:
        raise InvalidArgument(f"{label} must be smaller than 80KB in total.")
