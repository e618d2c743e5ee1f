"""What the client commands share: where the server is, whose queues, and how failures read."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import click
import grpc
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from opentasks.clients import API_TOKEN, EMULATOR_HOST, with_token

P = ParamSpec("P")
R = TypeVar("R")
DEFAULT_ENDPOINT = "127.0.0.1:8123"
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Remote:
    """The server and the project/location the commands act on."""

    endpoint: str
    project: str
    location: str
    api_token: str = ""

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def queue(self, queue: str) -> str:
        """A full queue name from a queue ID (full names pass through)."""
        return queue if queue.startswith("projects/") else f"{self.parent}/queues/{queue}"

    def task(self, task: str, queue: str) -> str:
        return task if task.startswith("projects/") else f"{self.queue(queue)}/tasks/{task}"

    def client(self) -> tasks_v2.CloudTasksClient:
        """A client whose server answered (else :class:`Unreachable` within ``CONNECT_TIMEOUT_S``)."""
        channel = grpc.insecure_channel(self.endpoint)
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            channel.close()
            raise Unreachable(
                f"nothing answers at {self.endpoint} (start it with `opentasks serve`)"
            ) from None
        transport = CloudTasksGrpcTransport(channel=with_token(channel, self.api_token))
        return tasks_v2.CloudTasksClient(transport=transport)


class Unreachable(Exception):
    """The server does not answer."""


def remote_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --endpoint, --project and --location; the command receives ``remote: Remote``."""

    @click.option(
        "--endpoint",
        default=lambda: os.environ.get(EMULATOR_HOST, DEFAULT_ENDPOINT),
        show_default=f"${EMULATOR_HOST} or {DEFAULT_ENDPOINT}",
        help="host:port of the opentasks gRPC API.",
    )
    @click.option(
        "--project",
        envvar="OPENTASKS_PROJECT",
        default="my-project",
        show_default=True,
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
    @functools.wraps(command)
    def wrapper(endpoint: str, project: str, location: str, api_token: str, **kwargs: Any) -> Any:
        return command(remote=Remote(endpoint, project, location, api_token), **kwargs)

    return wrapper


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn API errors into one line on stderr and an exit code: 1 for a refused call, 2 when
    the server cannot be reached."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Unreachable as error:
            click.echo(f"ERROR: cannot reach the opentasks server: {error}", err=True)
            sys.exit(2)
        except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded) as error:
            click.echo(f"ERROR: cannot reach the opentasks server: {error.message}", err=True)
            sys.exit(2)
        except exceptions.GoogleAPICallError as error:
            status = error.grpc_status_code.name if error.grpc_status_code else error.code
            click.echo(f"ERROR: ({status}) {error.message}", err=True)
            sys.exit(1)

    return wrapper
