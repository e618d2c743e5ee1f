"""Where an HTTP request comes from: the checks that keep web pages of other sites away from
the HTTP port (the REST API, the kept history and the dashboard).

A browser adds ``Sec-Fetch-Site`` and ``Origin`` to what a page sends and no page can change
them, so a page of another site that posts to ``http://localhost:8124`` (cross-site request
forgery) says so, and is refused. A page whose own name was made to resolve to this server (DNS
rebinding) is same-origin in its browser's eyes and need not send either header (browsers send
``Sec-Fetch-*`` only to https and localhost), but it sends its own name as the ``Host``. So
without API tokens the port answers only to names no other site can take: ``localhost``, IP
addresses, and the names the operator lists (``--allowed-host``, e.g. a compose service name).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentasks.errors import PermissionDenied


@dataclass(frozen=True)
class HostPolicy:
    """Which calls the HTTP port refuses for where they come from. ``auth_on``: API tokens are
    required (they guard every name); ``allowed``: host names served without tokens besides
    the local ones (``*`` for any)."""

    auth_on: bool = False
    allowed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, names: Iterable[str], *, auth_on: bool) -> HostPolicy:
        """The policy of ``names`` as the operator spells them (any case, a final dot)."""
        return cls(auth_on=auth_on, allowed=frozenset(host_name(name) for name in names))

    def refusal(self, headers: Mapping[str, str], host: str) -> PermissionDenied | None:
        """Why this call is refused (None when it is not)."""
        if cross_site(headers, host):
            origin = headers.get("Origin") or headers.get("Sec-Fetch-Site", "")
            return PermissionDenied(
                f"Calls from web pages of other sites are refused (this one came from {origin}). "
                "Call the API from a server, a script or the command line."
            )
        if not self.host_allowed(host):
            return PermissionDenied(host_refused(host))
        return None

    def host_allowed(self, host: str) -> bool:
        """True when ``host`` (a Host header) may be served: always with tokens; else a local
        name, an IP address or an allowed name."""
        if self.auth_on or local_host(host) or "*" in self.allowed:
            return True
        return host_name(host) in self.allowed


def host_refused(host: str) -> str:
    """What a call to a name that is not allowed is told."""
    return (
        f"Without API tokens this server answers only at localhost, an IP address or a name "
        f"given with --allowed-host, not at {host_name(host)!r}, so that no web site can reach it "
        "through a host name of its own. Use the server's IP address, start it with "
        f"--allowed-host {host_name(host)}, or with --api-token."
    )


def host_name(host: str) -> str:
    """The name of a Host header, without its port or final dot, in lower case."""
    name = host.strip().lower()
    if name.startswith("["):
        return name[1 : name.find("]")] if "]" in name else ""
    if name.count(":") == 1:
        name = name.split(":")[0]
    return name.rstrip(".")


def cross_site(headers: Mapping[str, str], host: str) -> bool:
    """True when a browser says the request comes from another site: ``Sec-Fetch-Site`` other
    than same-origin (or ``none``: typed by the user), or an ``Origin`` whose host is not the one
    the request was sent to (``host``, or the proxy's ``X-Forwarded-Host``)."""
    fetch_site = headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site and fetch_site not in ("same-origin", "none"):
        return True
    origin = headers.get("Origin", "")
    if not origin:
        return False
    if origin == "null":
        return True
    parts = urlsplit(origin)
    hosts = {host.lower()} | {h.strip().lower() for h in headers.get("X-Forwarded-Host", "").split(",") if h}
    return parts.scheme not in ("http", "https") or parts.netloc.lower() not in hosts


def local_host(host: str) -> bool:
    """True when ``host`` (a Host header, with or without its port) names this server in a way
    no other site can: an IP address, ``localhost`` or a name under ``.localhost`` (which
    browsers resolve to the loopback address themselves). A page of another site that has made
    its own name resolve to this server (DNS rebinding) sends its own name as the Host, which is
    none of these."""
    if not host.strip():  # no Host at all: not a browser
        return True
    name = host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True
