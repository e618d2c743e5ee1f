"""Official Cloud Tasks clients wired to opentasks, or to Google when no emulator is named.

Application code can call :func:`client` everywhere: with ``CLOUD_TASKS_EMULATOR_HOST`` set
(the variable Firebase's SDKs use, e.g. ``localhost:8123``) it talks to opentasks; without it,
to Cloud Tasks with the application's default credentials. One environment variable switches.
"""

from __future__ import annotations

import os

import grpc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

EMULATOR_HOST = "CLOUD_TASKS_EMULATOR_HOST"
REST_URL = "OPENTASKS_REST_URL"


def client(endpoint: str | None = None, *, transport: str = "grpc") -> tasks_v2.CloudTasksClient:
    """A ``CloudTasksClient`` for opentasks at ``endpoint`` (``host:port`` of the gRPC API).

    Without ``endpoint``, ``CLOUD_TASKS_EMULATOR_HOST`` is used; if that is unset too, the
    client talks to Google Cloud Tasks. With ``transport="rest"`` the REST API is used: its URL
    is ``OPENTASKS_REST_URL`` if set, else the gRPC endpoint's host with the port after it
    (``opentasks serve`` defaults to 8123 for gRPC and 8124 for HTTP).
    """
    target = endpoint or os.environ.get(EMULATOR_HOST)
    if not target:
        return tasks_v2.CloudTasksClient(transport=transport)
    if transport == "rest":
        return tasks_v2.CloudTasksClient(
            transport="rest",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=rest_url(target)),
        )
    channel = grpc.insecure_channel(target)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def async_client(endpoint: str | None = None) -> tasks_v2.CloudTasksAsyncClient:
    """The asyncio twin of :func:`client` (gRPC)."""
    target = endpoint or os.environ.get(EMULATOR_HOST)
    if not target:
        return tasks_v2.CloudTasksAsyncClient()
    channel = grpc.aio.insecure_channel(target)
    return tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))


def rest_url(grpc_endpoint: str) -> str:
    """The REST base URL that goes with a gRPC endpoint (``OPENTASKS_REST_URL`` wins)."""
    configured = os.environ.get(REST_URL)
    if configured:
        return configured
    host, _, port = grpc_endpoint.removeprefix("http://").rpartition(":")
    return f"http://{host}:{int(port) + 1}"
