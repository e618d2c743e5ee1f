"""What the client commands share: where the server is, whose queues, calls, and how failures read.

Calls go over gRPC with the raw protobuf classes of :mod:`opentasks.cli.wire`, so a command
starts without importing the client library; :meth:`Remote.client` still gives the official
client to the commands that want it.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar
from urllib.parse import urlsplit

import click
import grpc
from google.protobuf import json_format

from opentasks import endpoints
from opentasks.cli import wire
from opentasks.endpoints import speaks_http1

if TYPE_CHECKING:
    from google.cloud import tasks_v2

P = ParamSpec("P")
R = TypeVar("R")
# The names opentasks.clients uses (kept here: importing it loads the whole client library).
EMULATOR_HOST = "CLOUD_TASKS_EMULATOR_HOST"
REST_URL = "OPENTASKS_REST_URL"
API_TOKEN = "OPENTASKS_API_TOKEN"
DEFAULT_ENDPOINT = "127.0.0.1:8123"
DEFAULT_PROJECT = "my-project"
CALL_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 5.0
CLOUD_TASKS = f"{wire.V2}.CloudTasks"
LOCATIONS = "google.cloud.location.Locations"


@dataclass(frozen=True)
class Remote:
    """The server and the project/location the commands act on."""

    endpoint: str
    project: str
    location: str
    api_token: str = ""
    quiet: bool = False

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def queue(self, queue: str) -> str:
        """A full queue name from a queue ID (full names pass through)."""
        return queue if queue.startswith("projects/") else f"{self.parent}/queues/{queue}"

    def task(self, task: str, queue: str | None) -> str:
        """A full task name from a task ID and its queue (full names need no queue)."""
        if task.startswith("projects/"):
            return task
        if not queue:
            raise click.UsageError(f"Give --queue, or the task's full name instead of '{task}'.")
        return f"{self.queue(queue)}/tasks/{task}"

    @functools.cached_property
    def rest_url(self) -> str:
        """The server's REST API (see :func:`opentasks.endpoints.rest_url`)."""
        return endpoints.rest_url(self.endpoint)

    def call(self, rpc: str, request: dict[str, Any] | None = None, *, service: str = CLOUD_TASKS) -> Any:
        """Call ``service``'s method ``rpc`` with ``request`` (proto or JSON field names); the
        answer is a protobuf message."""
        method = wire.method(service, rpc)
        message = json_format.ParseDict(request or {}, method.input(), ignore_unknown_fields=False)
        stub = self._channel.unary_unary(
            f"/{service}/{rpc}",
            request_serializer=type(message).SerializeToString,
            response_deserializer=method.output.FromString,
        )
        metadata = [("authorization", f"Bearer {self.api_token}")] if self.api_token else None
        try:
            try:
                return stub(message, timeout=CALL_TIMEOUT_S, metadata=metadata)
            except grpc.RpcError as error:
                if not self._came_up(error):
                    raise
                return stub(message, timeout=CALL_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as error:
            raise _refused(self.endpoint, error) from None

    def _came_up(self, error: grpc.RpcError) -> bool:
        """After a call that never reached a server (nothing listened): whether one answers
        within ``CONNECT_TIMEOUT_S``, as when a script starts the server just before. The call was
        not sent, so it can be sent again."""
        if not isinstance(error, grpc.Call) or error.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        if "failed to connect" not in (error.details() or "") or speaks_http1(self.endpoint):
            return False
        try:
            grpc.channel_ready_future(self._channel).result(timeout=CONNECT_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            return False
        return True

    @functools.cached_property
    def _channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.endpoint)

    def client(self) -> tasks_v2.CloudTasksClient:
        """The official client (slow to import: for the commands that need its helpers)."""
        from google.cloud import tasks_v2  # noqa: PLC0415 - half a second to import
        from google.cloud.tasks_v2.services.cloud_tasks.transports import (  # noqa: PLC0415
            CloudTasksGrpcTransport,
        )

        from opentasks.clients import channel  # noqa: PLC0415

        return tasks_v2.CloudTasksClient(
            transport=CloudTasksGrpcTransport(channel=channel(self.endpoint, self.api_token))
        )


class Unreachable(Exception):
    """The server does not answer, or what answers is not its gRPC API."""


class Refused(Exception):
    """The server refused a call: ``status`` is the gRPC code's name (``NOT_FOUND``, ...)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refused(endpoint: str, error: grpc.RpcError) -> Exception:
    code = error.code() if isinstance(error, grpc.Call) else None
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unreachable(_unavailable(endpoint, details))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unreachable(f"{endpoint} did not answer within {CALL_TIMEOUT_S:.0f} s")
    return Refused(code.name if code else "UNKNOWN", details)


def _unavailable(endpoint: str, details: str) -> str:
    if speaks_http1(endpoint):
        return (
            f"{endpoint} answers HTTP/1.1 but not gRPC: it is not an opentasks port (opentasks serves"
            " gRPC on its --http-port, 8124 by default, and on its --port, 8123)"
        )
    return f"nothing answers at {endpoint} (start it with `opentasks serve`): {details}"


def _endpoint(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``host:port`` (an ``http://host:port`` URL is taken as its host and port); any other URL
    is refused with what to give instead."""
    parts = urlsplit(value) if "://" in value else None
    if parts is None:
        return value
    if parts.scheme == "http" and parts.netloc and parts.path in ("", "/") and not parts.query:
        return parts.netloc
    raise click.BadParameter(
        f"'{value}' is not host:port: --endpoint takes the host and port of an opentasks server "
        "(its --http-port, 8124 by default, or its --port, 8123), "
        f"e.g. {parts.hostname or '127.0.0.1'}:8124.",
        ctx,
        param,
    )


def remote_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --endpoint, --project, --location, --api-token and -q/--quiet; the command receives
    ``remote: Remote``."""

    @click.option(
        "--endpoint",
        default=lambda: os.environ.get(EMULATOR_HOST, DEFAULT_ENDPOINT),
        show_default=f"${EMULATOR_HOST} or {DEFAULT_ENDPOINT}",
        callback=_endpoint,
        help="host:port of the opentasks server (its --http-port or its gRPC --port).",
    )
    @click.option(
        "--project",
        envvar="OPENTASKS_PROJECT",
        default=lambda: os.environ.get("CLOUDSDK_CORE_PROJECT", DEFAULT_PROJECT),
        show_default=f"$CLOUDSDK_CORE_PROJECT or {DEFAULT_PROJECT}",
        show_envvar=True,
        help="Project ID of the queues.",
    )
    @click.option(
        "--location",
        envvar="OPENTASKS_LOCATION",
        default="us-central1",
        show_default=True,
        show_envvar=True,
        help="Location ID of the queues.",
    )
    @click.option(
        "--api-token",
        envvar=API_TOKEN,
        default="",
        show_envvar=True,
        show_default=False,
        help="Token for a server that requires API authentication.",
    )
    @click.option("-q", "--quiet", is_flag=True, help="Do not ask for confirmation.")
    @functools.wraps(command)
    def wrapper(
        endpoint: str, project: str, location: str, api_token: str, quiet: bool, **kwargs: Any
    ) -> Any:
        quiet = quiet or bool(click.get_current_context().meta.get("opentasks.quiet"))  # `opentasks -q …`
        return command(remote=Remote(endpoint, project, location, api_token, quiet), **kwargs)

    return wrapper


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn API errors into one line on stderr and an exit code: 1 for a refused call, 2 when
    the server cannot be reached."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Unreachable as error:
            fail(f"cannot reach the opentasks server: {error}", 2)
        except Refused as error:
            fail(f"({error.status}) {error.message}", 1)
        except Exception as error:
            _client_library_error(error)
            raise

    return wrapper


def _client_library_error(error: Exception) -> None:
    """The same lines for the official client's errors (commands that use :meth:`Remote.client`)."""
    exceptions = sys.modules.get("google.api_core.exceptions")
    if exceptions is None or not isinstance(error, exceptions.GoogleAPICallError):
        return
    if isinstance(error, exceptions.ServiceUnavailable | exceptions.DeadlineExceeded):
        fail(f"cannot reach the opentasks server: {error.message}", 2)
    status = error.grpc_status_code.name if error.grpc_status_code else error.code
    fail(f"({status}) {error.message}", 1)


def fail(message: str, code: int = 1) -> NoReturn:
    """``ERROR: message`` on stderr, and exit with ``code``."""
    click.echo(f"ERROR: {message}", err=True)
    sys.exit(code)


def field_mask(paths: list[str]) -> str:
    """A FieldMask in its JSON form (camelCase paths, comma-separated) from proto field paths."""
    return ",".join(
        ".".join(re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), part) for part in path.split("."))
        for path in paths
    )


def short_name(name: str) -> str:
    """``projects/p/locations/l/queues/q`` -> ``l/q``, as gcloud writes a queue in its messages."""
    parts = name.split("/")
    if len(parts) >= 6 and parts[0] == "projects" and parts[4] == "queues":
        return "/".join([parts[3], *parts[5:]])
    return name
