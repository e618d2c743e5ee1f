"""Where an opentasks server's APIs are, from the one ``host:port`` a user gives.

The HTTP port (``--http-port``, 8124 by default) serves everything: REST, and gRPC relayed to
the gRPC server. So ``CLOUD_TASKS_EMULATOR_HOST=127.0.0.1:8124`` serves every client, gRPC,
REST and Firebase's alike. The dedicated gRPC port (``--port``, 8123) serves gRPC alone; given
that one, the REST API is taken to be on the next port, as the defaults have it.
"""

from __future__ import annotations

import os
import socket

REST_URL = "OPENTASKS_REST_URL"


def rest_url(endpoint: str) -> str:
    """The REST API's base URL for the server at ``endpoint`` (``host:port``, or an
    ``http://`` URL): ``$OPENTASKS_REST_URL`` if set; the endpoint itself when it answers
    HTTP/1.1 (the shared HTTP port); else the next port (a dedicated gRPC port)."""
    configured = os.environ.get(REST_URL)
    if configured:
        return configured.rstrip("/")
    endpoint = host_port(endpoint)
    host, _, port = endpoint.rpartition(":")
    if not port.isdigit() or speaks_http1(endpoint):
        return f"http://{endpoint}"
    return f"http://{host}:{int(port) + 1}"


def host_port(endpoint: str) -> str:
    """``endpoint`` without an ``http://`` scheme or a trailing slash."""
    return endpoint.removeprefix("http://").rstrip("/")


def speaks_http1(endpoint: str, timeout_s: float = 1.0) -> bool:
    """Whether an HTTP/1.1 server (such as opentasks' HTTP port) listens at ``host:port``."""
    host, _, port = endpoint.rpartition(":")
    if not port.isdigit():
        return False
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s) as sock:
            sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return sock.recv(8).startswith(b"HTTP/1.")
    except OSError:
        return False
