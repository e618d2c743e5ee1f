"""Rules for the headers a task, or a queue's header overrides, may carry (spec 5.3).

* Names must be RFC 9110 tokens (ASCII letters, digits and ``!#$%&'*+-.^_`|~``).
* Values may hold any character but the controls (U+0000-U+001F except tab, and U+007F);
  non-ASCII characters are allowed and sent as UTF-8 (RFC 9110 obs-text), as aiohttp does.
* Hop-by-hop and message-framing headers (``Connection``, ``Keep-Alive``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade``, ``Expect``, ``Proxy-*``, ``Host``, ``Content-Length``) are
  never forwarded: Cloud Tasks' front end is a proxy that sets them itself. They are dropped at
  CreateTask and from queue header overrides like the other reserved headers, and stripped again
  from every request built for an attempt (:func:`sendable_headers`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from opentasks.errors import InvalidArgument

MAX_HEADERS_BYTES = 80 * 1024

HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
)
_FRAMING_HEADERS = HOP_BY_HOP_HEADERS | {"host", "content-length"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSENDABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def hop_by_hop_header(name: str) -> bool:
    """Headers that concern one connection, not the request: a proxy never forwards them, and
    a task's own ``Transfer-Encoding`` or ``Connection`` could split one request into two."""
    lower = name.lower()
    return lower in HOP_BY_HOP_HEADERS or lower.startswith("proxy-")


def reserved_http_header(name: str) -> bool:
    """Headers an HTTP task (or a queue's header override) cannot set: Cloud Tasks computes
    Host, Content-Length and User-Agent, keeps ``X-Google-*``, ``X-AppEngine-*`` and
    ``X-CloudTasks-*`` for itself, and forwards no hop-by-hop header."""
    lower = name.lower()
    return (
        lower in ("host", "content-length", "user-agent")
        or lower.startswith(("x-google-", "x-appengine-", "x-cloudtasks-"))
        or hop_by_hop_header(lower)
    )


def sendable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without hop-by-hop and framing headers (the HTTP client computes Host and
    Content-Length from the URL and the body); for rows stored before these were refused."""
    dropped = [k for k in headers if _framing(k.lower())]
    if not dropped:  # the usual case: rows stored since these are refused hold none
        return dict(headers)
    return {k: v for k, v in headers.items() if k not in dropped}


def _framing(lower: str) -> bool:
    return lower in _FRAMING_HEADERS or lower.startswith("proxy-")


def check_headers(headers: dict[str, str], label: str = "Task headers") -> dict[str, str]:
    """``headers`` if every name and value can be sent as HTTP, once each, within 80 KB."""
    check_header_pairs(headers.items(), label)
    return headers


def check_header_pairs(pairs: Iterable[tuple[str, str]], label: str) -> None:
    """The checks of :func:`check_headers` on (name, value) pairs, e.g. a list of overrides."""
    seen: dict[str, str] = {}
    size = 0
    for key, value in pairs:
        _check_pair(key, value, label)
        other = seen.setdefault(key.lower(), key)
        if other != key:
            raise InvalidArgument(
                f'Headers "{other}" and "{key}" differ only in case; send each header once.'
            )
        size += len(key) + len(value)
    if size >= MAX_HEADERS_BYTES:
        raise InvalidArgument(f"{label} must be smaller than 80KB in total.")


def _check_pair(key: str, value: str, label: str) -> None:
    if not _TOKEN.fullmatch(key):
        raise InvalidArgument(
            f'{label}: header name "{key!s:.100}" is not a valid HTTP header name (RFC 9110 token: '
            "ASCII letters, digits and !#$%&'*+-.^_`|~)."
        )
    bad = _UNSENDABLE.search(value)
    if bad is not None:
        raise InvalidArgument(
            f'{label}: the value of header "{key}" contains U+{ord(bad.group()):04X}. Header values '
            "must not contain line breaks, other control characters (tab excepted) or lone surrogates."
        )
