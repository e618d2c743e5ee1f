"""Official Cloud Tasks clients wired to opentasks, or to Google when no emulator is named.

Application code can call :func:`client` everywhere: with ``CLOUD_TASKS_EMULATOR_HOST`` set
(the variable Firebase's SDKs use, e.g. ``localhost:8124``, the server's HTTP port, which
serves gRPC, REST and Firebase's calls alike) it talks to opentasks; without it, to Cloud Tasks
with the application's default credentials. One environment variable switches.
"""

from __future__ import annotations

import os
from typing import Any

import grpc
from google.api_core.client_options import ClientOptions
from google.auth.api_key import Credentials as ApiKeyCredentials
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

from opentasks import endpoints

EMULATOR_HOST = "CLOUD_TASKS_EMULATOR_HOST"
REST_URL = "OPENTASKS_REST_URL"
API_TOKEN = "OPENTASKS_API_TOKEN"


def client(
    endpoint: str | None = None, *, transport: str = "grpc", api_token: str | None = None
) -> tasks_v2.CloudTasksClient:
    """A ``CloudTasksClient`` for opentasks at ``endpoint`` (``host:port``: the server's HTTP
    port, which serves gRPC and REST, or its dedicated gRPC port).

    Without ``endpoint``, ``CLOUD_TASKS_EMULATOR_HOST`` is used; if that is unset too, the
    client talks to Google Cloud Tasks. With ``transport="rest"`` the REST API is used: its URL
    is ``OPENTASKS_REST_URL`` if set, else the endpoint itself when it is the HTTP port, else
    the port after it (``opentasks serve`` defaults to 8124 for HTTP and 8123 for gRPC alone).
    ``api_token`` (default ``OPENTASKS_API_TOKEN``) is sent on every call to a server that
    requires one.
    """
    target = endpoint or os.environ.get(EMULATOR_HOST)
    if not target:
        return tasks_v2.CloudTasksClient(transport=transport)
    token = api_token if api_token is not None else os.environ.get(API_TOKEN, "")
    if transport == "rest":
        return tasks_v2.CloudTasksClient(
            transport="rest",
            credentials=rest_credentials(token),
            client_options=ClientOptions(api_endpoint=rest_url(target)),
        )
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel(target, token)))


def async_client(
    endpoint: str | None = None, *, api_token: str | None = None
) -> tasks_v2.CloudTasksAsyncClient:
    """The asyncio twin of :func:`client` (gRPC)."""
    target = endpoint or os.environ.get(EMULATOR_HOST)
    if not target:
        return tasks_v2.CloudTasksAsyncClient()
    token = api_token if api_token is not None else os.environ.get(API_TOKEN, "")
    return tasks_v2.CloudTasksAsyncClient(
        transport=CloudTasksGrpcAsyncIOTransport(channel=aio_channel(target, token))
    )


def rest_credentials(token: str) -> Credentials:
    """What a REST client of opentasks sends: the API token as an API key, or nothing."""
    return ApiKeyCredentials(token) if token else AnonymousCredentials()  # type: ignore[no-untyped-call]


def channel(endpoint: str, token: str) -> grpc.Channel:
    """An insecure gRPC channel to opentasks at ``endpoint``, sending ``token`` if any."""
    return with_token(grpc.insecure_channel(endpoints.host_port(endpoint)), token)


def aio_channel(endpoint: str, token: str) -> grpc.aio.Channel:
    """The asyncio twin of :func:`channel`."""
    interceptors = [AsyncBearer(token)] if token else None
    return grpc.aio.insecure_channel(endpoints.host_port(endpoint), interceptors=interceptors)


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """``channel`` sending ``authorization: Bearer <token>`` on every call (unchanged without a token)."""
    return grpc.intercept_channel(channel, _Bearer(token)) if token else channel


def _with_bearer(details: Any, token: str) -> Any:
    metadata = [*(details.metadata or ()), ("authorization", f"Bearer {token}")]
    return details._replace(metadata=metadata)


class _Bearer(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(_with_bearer(client_call_details, self._token), request)


class AsyncBearer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_bearer(client_call_details, self._token), request)


def rest_url(endpoint: str) -> str:
    """The REST base URL of the server at ``endpoint`` (see :func:`opentasks.endpoints.rest_url`)."""
    return endpoints.rest_url(endpoint)
