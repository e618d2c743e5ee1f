"""``opentasks tasks ...``: create and inspect tasks, with the flags of ``gcloud tasks``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from google.cloud import tasks_v2

from opentasks.cli.output import format_option, resource_dict, show
from opentasks.cli.params import duration
from opentasks.cli.queues import routing
from opentasks.cli.remote import Remote, remote_options, reports_errors
from opentasks.clock import SystemClock

COLUMNS = (
    ("TASK_NAME", "name|id"),
    ("TYPE", "type"),
    ("SCHEDULE_TIME", "scheduleTime"),
    ("DISPATCH_ATTEMPTS", "dispatchCount"),
    ("RESPONSE_ATTEMPTS", "responseCount"),
)
_METHODS = ("POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
_BATCH = 100


@click.group()
def tasks() -> None:
    """Create, inspect, run and delete tasks (like `gcloud tasks`)."""


def _queue_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--queue", required=True, help="The queue (an ID, or a full name).")(command)


def _request_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--method",
            type=click.Choice(_METHODS, case_sensitive=False),
            default="POST",
            show_default=True,
            help="HTTP method of the request.",
        ),
        click.option(
            "--header", "headers", multiple=True, metavar="KEY:VALUE", help="A request header (repeatable)."
        ),
        click.option("--body-content", help="The request body, as text."),
        click.option(
            "--body-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="A file whose bytes are the request body.",
        ),
        click.option(
            "--schedule-time", help="When to dispatch: RFC 3339 (2030-01-01T10:00:00Z) or +DURATION (+10m)."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _common(
    method: str, headers: tuple[str, ...], body_content: str | None, body_file: Path | None
) -> dict[str, Any]:
    if body_content is not None and body_file is not None:
        raise click.UsageError("Give --body-content or --body-file, not both.")
    parsed = {}
    for header in headers:
        key, sep, value = header.partition(":")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{header}': write KEY:VALUE.", param_hint="--header")
        parsed[key.strip()] = value.strip()
    body = body_file.read_bytes() if body_file else (body_content or "").encode()
    return {"http_method": method.upper(), "headers": parsed, "body": body}


def _schedule(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    if value.startswith("+"):
        when = SystemClock().now() + duration("--schedule-time").convert(value[1:], None, None)
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(
                f"'{value}' is neither RFC 3339 nor +DURATION.", param_hint="--schedule-time"
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return {"schedule_time": when}


def _create(
    remote: Remote, queue: str, task_id: str | None, task: dict[str, Any], output_format: str
) -> None:
    if task_id:
        task["name"] = remote.task(task_id, queue)
    created = remote.client().create_task(parent=remote.queue(queue), task=tasks_v2.Task(task))
    show(_task(created), output_format, COLUMNS)


@tasks.command(name="create-http-task")
@click.argument("task_id", required=False)
@_queue_option
@click.option("--url", required=True, help="Where to send the request.")
@_request_options
@click.option("--oidc-service-account-email", help="Sign each request with an OIDC token for this account.")
@click.option("--oidc-token-audience", help="Audience of the OIDC token (default: the URL).")
@remote_options
@format_option("yaml")
@reports_errors
def create_http_task(  # noqa: PLR0917 - click passes every option as an argument
    remote: Remote,
    task_id: str | None,
    queue: str,
    url: str,
    method: str,
    headers: tuple[str, ...],
    body_content: str | None,
    body_file: Path | None,
    schedule_time: str | None,
    oidc_service_account_email: str | None,
    oidc_token_audience: str | None,
    output_format: str,
) -> None:
    """Create an HTTP task (TASK_ID optional: one is generated)."""
    request: dict[str, Any] = {"url": url, **_common(method, headers, body_content, body_file)}
    if oidc_service_account_email:
        request["oidc_token"] = {
            "service_account_email": oidc_service_account_email,
            "audience": oidc_token_audience or "",
        }
    _create(remote, queue, task_id, {"http_request": request, **_schedule(schedule_time)}, output_format)


@tasks.command(name="create-app-engine-task")
@click.argument("task_id", required=False)
@_queue_option
@click.option(
    "--relative-uri", default="/", show_default=True, help="Path (and query) on the App Engine target."
)
@_request_options
@click.option("--routing", "routing_", help="App Engine routing: service:S,version:V,instance:I.")
@remote_options
@format_option("yaml")
@reports_errors
def create_app_engine_task(  # noqa: PLR0917 - click passes every option as an argument
    remote: Remote,
    task_id: str | None,
    queue: str,
    relative_uri: str,
    method: str,
    headers: tuple[str, ...],
    body_content: str | None,
    body_file: Path | None,
    schedule_time: str | None,
    routing_: str | None,
    output_format: str,
) -> None:
    """Create an App Engine task (TASK_ID optional: one is generated)."""
    request: dict[str, Any] = {
        "relative_uri": relative_uri,
        **_common(method, headers, body_content, body_file),
    }
    if routing_:
        request["app_engine_routing"] = routing(routing_)
    _create(
        remote,
        queue,
        task_id,
        {"app_engine_http_request": request, **_schedule(schedule_time)},
        output_format,
    )


@tasks.command(name="list")
@_queue_option
@remote_options
@format_option("table")
@reports_errors
def list_(remote: Remote, queue: str, output_format: str) -> None:
    """List the tasks of a queue."""
    found = remote.client().list_tasks(parent=remote.queue(queue))
    show([_task(t) for t in found], output_format, COLUMNS)


@tasks.command()
@click.argument("task_id")
@_queue_option
@click.option(
    "--response-view",
    type=click.Choice(("basic", "full")),
    default="basic",
    show_default=True,
    help="full also shows the body.",
)
@remote_options
@format_option("yaml")
@reports_errors
def describe(remote: Remote, task_id: str, queue: str, response_view: str, output_format: str) -> None:
    """Show one task."""
    view = tasks_v2.Task.View.FULL if response_view == "full" else tasks_v2.Task.View.BASIC
    found = remote.client().get_task(request={"name": remote.task(task_id, queue), "response_view": view})
    show(_task(found), output_format, COLUMNS)


@tasks.command()
@click.argument("task_id")
@_queue_option
@remote_options
@reports_errors
def delete(remote: Remote, task_id: str, queue: str) -> None:
    """Delete a task."""
    name = remote.task(task_id, queue)
    remote.client().delete_task(name=name)
    click.echo(f"Deleted task [{name}].")


@tasks.command()
@click.argument("task_id")
@_queue_option
@remote_options
@format_option("yaml")
@reports_errors
def run(remote: Remote, task_id: str, queue: str, output_format: str) -> None:
    """Dispatch a task now, whatever its schedule or its queue's state."""
    show(_task(remote.client().run_task(name=remote.task(task_id, queue))), output_format, COLUMNS)


@tasks.command(name="import")
@click.argument("file", type=click.File("r"))
@_queue_option
@remote_options
@reports_errors
def import_(remote: Remote, file: Any, queue: str) -> None:
    """Create tasks from FILE: one Task per line, as JSON in the REST API's form
    (e.g. {"httpRequest": {"url": "https://..."}}), or - for standard input."""
    parent = remote.queue(queue)
    lines = [(number, line) for number, line in enumerate(file, start=1) if line.strip()]
    requests: list[tuple[int, tasks_v2.CreateTaskRequest]] = list(
        _parsed(lines, parent, getattr(file, "name", "FILE"))
    )
    client = remote.client()
    failures: list[str] = []
    progress = click.progressbar(requests, label="Creating tasks", file=click.get_text_stream("stderr"))  # type: ignore[operator]
    with progress as bar:
        for start in range(0, len(requests), _BATCH):
            chunk = requests[start : start + _BATCH]
            operation = client.batch_create_tasks(parent=parent, requests=[r for _, r in chunk])
            operation.result()  # type: ignore[no-untyped-call]
            for index, status in operation.metadata.failed_requests.items():
                failures.append(f"line {chunk[index][0]}: {status.message}")
            bar.update(len(chunk))
    click.echo(f"Created {len(requests) - len(failures)} of {len(requests)} tasks in [{parent}].")
    for failure in failures:
        click.echo(f"ERROR: {failure}", err=True)
    if failures:
        raise SystemExit(1)


def _parsed(
    lines: list[tuple[int, str]], parent: str, source: str
) -> Iterator[tuple[int, tasks_v2.CreateTaskRequest]]:
    for number, line in lines:
        try:
            json.loads(line)
            task = tasks_v2.Task.from_json(line)
        except (ValueError, TypeError) as error:
            raise click.ClickException(f"{source}, line {number}: not a Task in JSON: {error}") from None
        yield number, tasks_v2.CreateTaskRequest(parent=parent, task=task)


def _task(task: tasks_v2.Task) -> dict[str, Any]:
    data = resource_dict(task)
    data["type"] = "App Engine" if "appEngineHttpRequest" in data else "HTTP"
    return data
