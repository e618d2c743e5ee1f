"""Where an HTTP request comes from, as browsers tell it: the checks that keep web pages of
other sites away from the HTTP port (the REST API, the kept history and the dashboard).

A browser adds ``Sec-Fetch-Site`` and ``Origin`` to what a page sends and no page can change
them; the official clients, gcloud and curl send neither. So a page of another site that posts
to ``http://localhost:8124`` (cross-site request forgery) says so, and is refused. A page whose
own name was made to resolve to this server (DNS rebinding) is same-origin in its browser's
eyes, but it sends its own name as the ``Host``: without API tokens a browser is served only
under a name no other site can take.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from opentasks.errors import PermissionDenied


def browser_refusal(headers: Mapping[str, str], host: str, *, auth_on: bool) -> PermissionDenied | None:
    """Why a call to the HTTP API is refused because of where a browser says it comes from
    (None when it is not refused)."""
    if cross_site(headers, host):
        origin = headers.get("Origin") or headers.get("Sec-Fetch-Site", "")
        return PermissionDenied(
            f"Calls from web pages of other sites are refused (this one came from {origin}). "
            "Call the API from a server, a script or the command line."
        )
    if not auth_on and from_browser(headers) and not local_host(host):
        return PermissionDenied(
            f"Without API tokens this server answers browsers only at localhost or an IP "
            f"address, not at {host!r}, so that no web site can reach it through a host name of "
            "its own. Use the server's IP address, or start it with --api-token."
        )
    return None


def from_browser(headers: Mapping[str, str]) -> bool:
    """True when a browser sent the request (it adds headers no page can set or remove)."""
    return any(name in headers for name in ("Sec-Fetch-Site", "Sec-Fetch-Mode", "Origin"))


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
    name = host.strip().lower()
    if not name:  # no Host at all: not a browser
        return True
    if name.startswith("["):  # [::1]:8124
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.split(":")[0]
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True
