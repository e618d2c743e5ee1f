"""``opentasks tasks ...``: create and inspect tasks, with the flags and output of ``gcloud tasks``."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from opentasks.cli.filters import Filter
from opentasks.cli.output import (
    ListOptions,
    filter_value,
    format_option,
    limited,
    list_options,
    resource_dict,
    show,
    show_created,
    show_list,
)
from opentasks.cli.params import ScheduleTime, key_value, rfc3339
from opentasks.cli.projection import Projection
from opentasks.cli.prompts import confirm
from opentasks.cli.queues import routing
from opentasks.cli.remote import (
    Refused,
    Remote,
    Unreachable,
    fail,
    remote_options,
    reports_errors,
    short_name,
)

# gcloud's `tasks list` table.
LIST_FORMAT = (
    "table(name.basename():label=TASK_NAME, tasktype():label=TYPE, createTime, scheduleTime,"
    ' dispatchCount.yesno(no="0"):label=DISPATCH_ATTEMPTS,'
    ' responseCount.yesno(no="0"):label=RESPONSE_ATTEMPTS,'
    ' lastAttempt.responseStatus.message.yesno(no="Unknown"):label=LAST_ATTEMPT_STATUS)'
)
_METHODS = ("POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
_BATCH = 100
SCHEDULE_TIME_HELP = (
    "When to dispatch the task first, at most 30 days ahead: RFC 3339 such as 2025-01-01T10:00:00Z "
    "(a time past means now) or 2025-01-01T12:00:00+02:00, or +DURATION from now such as +10m, +1h30m "
    "or +PT1H."
)


@click.group()
def tasks() -> None:
    """Create, inspect, run and delete tasks (like `gcloud tasks`)."""


def _queue_option(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if required:
        return click.option("--queue", required=True, help="The queue (an ID, or a full name).")
    return click.option(
        "--queue", help="The queue (an ID, or a full name); not needed with a full task name."
    )


def _body_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--body-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A file whose bytes are the request body.",
    )(command)
    return click.option("--body-content", help="The request body, as text.")(command)


def _request_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
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
        _body_options,
        click.option("--schedule-time", type=ScheduleTime(), help=SCHEDULE_TIME_HELP),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _body(body_content: str | None, body_file: Path | None) -> bytes:
    if body_content is not None and body_file is not None:
        raise click.UsageError("Give --body-content or --body-file, not both.")
    return body_file.read_bytes() if body_file else (body_content or "").encode()


def _common(
    method: str, headers: tuple[str, ...], body_content: str | None, body_file: Path | None
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "http_method": method.upper(),
        "headers": dict(key_value(header, "--header") for header in headers),
    }
    body = _body(body_content, body_file)
    if body:
        request["body"] = base64.b64encode(body).decode()
    return request


def _schedule(when: datetime | None) -> dict[str, Any]:
    return {"schedule_time": rfc3339(when)} if when else {}


def _create(
    remote: Remote, queue: str, task_id: str | None, task: dict[str, Any], output_format: Projection | None
) -> None:
    if task_id:
        task["name"] = remote.task(task_id, queue)
    created = remote.call("CreateTask", {"parent": remote.queue(queue), "task": task})
    show_created("task", created.name, resource_dict(created), output_format)


def _token(email: str | None, extra_name: str, extra: str | None, flag: str) -> dict[str, str] | None:
    if not email:
        if extra:
            raise click.UsageError(f"--{extra_name.replace('_', '-')} needs {flag}.")
        return None
    return {"service_account_email": email, extra_name.rsplit("_", maxsplit=1)[-1]: extra or ""}


@tasks.command(name="create-http-task")
@click.argument("task_id", required=False)
@_queue_option(required=True)
@click.option("--url", required=True, help="Where to send the request.")
@_request_options
@click.option("--oidc-service-account-email", help="Sign each request with an OIDC token for this account.")
@click.option("--oidc-token-audience", help="Audience of the OIDC token (default: the URL).")
@click.option("--oauth-service-account-email", help="Send each request with this account's OAuth token.")
@click.option("--oauth-token-scope", help="Scope of the OAuth token (default: cloud-platform).")
@remote_options
@format_option("none")
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
    schedule_time: datetime | None,
    oidc_service_account_email: str | None,
    oidc_token_audience: str | None,
    oauth_service_account_email: str | None,
    oauth_token_scope: str | None,
    output_format: Projection | None,
) -> None:
    """Create an HTTP task (TASK_ID optional: one is generated)."""
    request: dict[str, Any] = {"url": url, **_common(method, headers, body_content, body_file)}
    oidc = _token(
        oidc_service_account_email, "token_audience", oidc_token_audience, "--oidc-service-account-email"
    )
    oauth = _token(
        oauth_service_account_email, "token_scope", oauth_token_scope, "--oauth-service-account-email"
    )
    if oidc and oauth:
        raise click.UsageError(
            "Give --oidc-service-account-email or --oauth-service-account-email, not both."
        )
    if oidc:
        request["oidc_token"] = oidc
    if oauth:
        request["oauth_token"] = oauth
    _create(remote, queue, task_id, {"http_request": request, **_schedule(schedule_time)}, output_format)


@tasks.command(name="create-app-engine-task")
@click.argument("task_id", required=False)
@_queue_option(required=True)
@click.option(
    "--relative-uri", default="/", show_default=True, help="Path (and query) on the App Engine target."
)
@_request_options
@click.option("--routing", "routing_", help="App Engine routing: service:S,version:V,instance:I.")
@remote_options
@format_option("none")
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
    schedule_time: datetime | None,
    routing_: str | None,
    output_format: Projection | None,
) -> None:
    """Create an App Engine task (TASK_ID optional: one is generated)."""
    request: dict[str, Any] = {
        "relative_uri": relative_uri,
        **_common(method, headers, body_content, body_file),
    }
    if routing_:
        request["app_engine_routing"] = routing(routing_)
    task = {"app_engine_http_request": request, **_schedule(schedule_time)}
    _create(remote, queue, task_id, task, output_format)


@tasks.command()
@click.argument("task_id", required=False)
@_queue_option(required=True)
@_body_options
@click.option("--content-type", help="Content-Type of the body (default: application/octet-stream).")
@remote_options
@format_option("none")
@reports_errors
def buffer(  # noqa: PLR0917 - click passes every option as an argument
    remote: Remote,
    task_id: str | None,
    queue: str,
    body_content: str | None,
    body_file: Path | None,
    content_type: str | None,
    output_format: Projection | None,
) -> None:
    """Buffer a task into QUEUE's HTTP target (BufferTask, sent to the REST API: see docs/cli.md)."""
    name = remote.queue(queue)
    body = _body(body_content, body_file)
    task = _buffer(
        remote, name, task_id or "", body, content_type or ("application/octet-stream" if body else "")
    )
    click.echo(f"Buffered task in queue [{short_name(name)}].", err=True)
    if output_format is not None:
        show(task, output_format)


def _buffer(remote: Remote, queue: str, task_id: str, body: bytes, content_type: str) -> dict[str, Any]:
    """POST ``…/tasks/TASK_ID:buffer`` (BufferTask is served over REST only)."""
    path = f"{queue}/tasks/{task_id}:buffer" if task_id else f"{queue}/tasks:buffer"
    task: dict[str, Any] = _rest(remote, "POST", f"/v2/{path}", body, content_type).get("task", {})
    return task


def _rest(
    remote: Remote, method: str, path: str, body: bytes | None = None, content_type: str = ""
) -> dict[str, Any]:
    """Call the server's REST port (what only it serves: BufferTask, kept history)."""
    import urllib.error  # noqa: PLC0415 - only these commands speak HTTP
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(f"{remote.rest_url}{path}", data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    if remote.api_token:
        request.add_header("Authorization", f"Bearer {remote.api_token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        refused = json.loads(error.read() or b"{}").get("error", {})
        raise Refused(refused.get("status", str(error.code)), refused.get("message", str(error))) from None
    except (urllib.error.URLError, OSError) as error:
        raise Unreachable(
            f"the REST API at {remote.rest_url} (set {'OPENTASKS_REST_URL'}): {error}"
        ) from None
    return answer


FAILED_FORMAT = (
    "table(task.name.basename():label=TASK_NAME, reason, finishTime:label=FINISHED,"
    " task.dispatchCount:label=ATTEMPTS,"
    ' task.lastAttempt.responseStatus.message.yesno(no="Unknown"):label=LAST_ATTEMPT_STATUS,'
    " redrivenAs.basename():label=REDRIVEN_AS)"
)


@tasks.command()
@_queue_option(required=True)
@click.option(
    "--all", "every", is_flag=True, help="Every finished task, not only those that failed for good."
)
@list_options(FAILED_FORMAT)
@remote_options
@reports_errors
def failed(remote: Remote, queue: str, every: bool, listing: ListOptions) -> None:
    """List QUEUE's dead letters: kept tasks that failed for good (out of attempts or of time),
    newest first (``--all``: every kept task, with why it finished)."""
    path = f"/opentasks/v1/{remote.queue(queue)}/finishedTasks?{'' if every else 'failed=true&'}pageSize="
    found = limited(_history_pages(remote, path + str(listing.page_size or 100)), listing)
    show_list(found, listing, FAILED_FORMAT, lambda name: f"{remote.rest_url}/opentasks/v1/{name}/history")


def _history_pages(remote: Remote, path: str) -> Iterator[dict[str, Any]]:
    token = ""
    while True:
        page = _rest(remote, "GET", path + (f"&pageToken={token}" if token else ""))
        yield from page.get("finishedTasks", [])
        token = page.get("nextPageToken", "")
        if not token:
            return


@tasks.command()
@click.argument("task")
@_queue_option(required=False)
@remote_options
@format_option("yaml")
@reports_errors
def history(remote: Remote, task: str, queue: str | None, output_format: Projection | None) -> None:
    """Show what is kept of TASK: each attempt (status, duration, the answer's headers and first
    bytes) and how it ended."""
    show(_rest(remote, "GET", f"/opentasks/v1/{remote.task(task, queue)}/history"), output_format)


@tasks.command()
@click.argument("task_ids", nargs=-1)
@_queue_option(required=True)
@click.option("--all", "every", is_flag=True, help="Every dead letter of the queue.")
@click.option(
    "--filter",
    "filter_",
    callback=filter_value,
    metavar="EXPRESSION",
    help="The dead letters that match, as 'tasks failed --filter' lists them,"
    " e.g. 'task.httpRequest.url~/charge'.",
)
@remote_options
@reports_errors
def redrive(
    remote: Remote, task_ids: tuple[str, ...], queue: str, every: bool, filter_: Filter | None
) -> None:
    """Send dead letters of QUEUE again as new tasks (same request, new IDs): TASK_IDS, ``--all``
    of them, or those ``--filter`` matches. Each dead letter is sent again once: afterwards it is
    no longer a dead letter, and naming it again is refused."""
    if bool(task_ids) + every + (filter_ is not None) != 1:
        raise click.UsageError("Give the IDs of the tasks to send again, --all or --filter.")
    name = remote.queue(queue)
    path = f"/opentasks/v1/{name}/finishedTasks:redrive"
    if every:
        confirm(remote, f"You are about to send every dead letter of queue [{short_name(name)}] again.")
        created = _redrive_all(remote, path)
    else:
        if filter_ is not None:
            task_ids = _matching_dead_letters(remote, name, filter_)
            if not task_ids:
                click.echo(f"No dead letter of queue [{short_name(name)}] matches.", err=True)
                return
            count = f"{len(task_ids)} dead letter(s)"
            confirm(remote, f"You are about to send {count} of queue [{short_name(name)}] again.")
        created, refused = _redrive_ids(remote, path, task_ids)
        if refused:
            click.echo(f"Sent {created} task(s) again in queue [{short_name(name)}].", err=True)
            fail(f"{refused} dead letter(s) were not sent again (see above).")
    click.echo(f"Sent {created} task(s) again in queue [{short_name(name)}].", err=True)


def _redrive_all(remote: Remote, path: str) -> int:
    asked: dict[str, Any] = {}
    created = 0
    while True:
        answer = _rest(remote, "POST", path, json.dumps(asked).encode(), "application/json")
        created += _echo_names(answer)
        if "nextPageToken" not in answer:
            return created
        asked = {"pageToken": answer["nextPageToken"]}


def _redrive_ids(remote: Remote, path: str, task_ids: tuple[str, ...]) -> tuple[int, int]:
    """Redrive ``task_ids`` a call's worth at a time; how many were sent and how many refused
    (each refusal on stderr). A single ID refused is the command's error."""
    created, refused = 0, 0
    for start in range(0, len(task_ids), _REDRIVE_IDS_PER_CALL):
        chunk = list(task_ids[start : start + _REDRIVE_IDS_PER_CALL])
        body = json.dumps({"taskIds": chunk}).encode()
        try:
            answer = _rest(remote, "POST", path, body, "application/json")
        except Refused as error:  # none of the chunk was sent; the first refusal says why
            if len(task_ids) == 1:
                raise
            named = ", ".join(chunk[:3]) + (" …" if len(chunk) > 3 else "")
            click.echo(f"ERROR: tasks {named}: {error.message}", err=True)
            refused += len(chunk)
            continue
        created += _echo_names(answer)
        for refusal in answer.get("refused", []):
            click.echo(f"ERROR: task {refusal['taskId']}: {refusal['message']}", err=True)
            refused += 1
    return created, refused


def _matching_dead_letters(remote: Remote, queue: str, filter_: Filter) -> tuple[str, ...]:
    path = f"/opentasks/v1/{queue}/finishedTasks?failed=true&pageSize=1000"
    found = (letter["task"]["name"] for letter in _history_pages(remote, path) if filter_.matches(letter))
    return tuple(dict.fromkeys(name.rsplit("/", 1)[-1] for name in found))


def _echo_names(answer: dict[str, Any]) -> int:
    tasks = answer.get("tasks", [])
    for task in tasks:
        click.echo(task["name"])
    return len(tasks)


_REDRIVE_IDS_PER_CALL = 1000  # the most the server takes in one call


@tasks.command(name="list")
@_queue_option(required=True)
@list_options(LIST_FORMAT)
@remote_options
@reports_errors
def list_(remote: Remote, queue: str, listing: ListOptions) -> None:
    """List the tasks of a queue."""
    found = (resource_dict(task) for task in _pages(remote, remote.queue(queue), listing.page_size))
    show_list(limited(found, listing), listing, LIST_FORMAT, lambda name: f"{remote.rest_url}/v2/{name}")


def _pages(remote: Remote, queue: str, page_size: int | None) -> Iterator[Any]:
    token = ""
    while True:
        page = remote.call("ListTasks", {"parent": queue, "page_size": page_size or 0, "page_token": token})
        yield from page.tasks
        token = page.next_page_token
        if not token:
            return


@tasks.command()
@click.argument("task")
@_queue_option(required=False)
@click.option(
    "--response-view",
    type=click.Choice(("basic", "full"), case_sensitive=False),
    default="basic",
    show_default=True,
    help="full also shows the body.",
)
@remote_options
@format_option("yaml")
@reports_errors
def describe(
    remote: Remote, task: str, queue: str | None, response_view: str, output_format: Projection | None
) -> None:
    """Show TASK (an ID with --queue, or a full name)."""
    view = response_view.upper()
    found = resource_dict(remote.call("GetTask", {"name": remote.task(task, queue), "response_view": view}))
    if view == "BASIC":
        for request in ("httpRequest", "appEngineHttpRequest"):
            found.get(request, {}).pop("body", None)
    show(found, output_format)


@tasks.command()
@click.argument("task", required=False)
@_queue_option(required=False)
@click.option("--filter", "filter_", metavar="EXPRESSION", help="Delete every task of --queue that matches.")
@remote_options
@reports_errors
def delete(remote: Remote, task: str | None, queue: str | None, filter_: str | None) -> None:
    """Delete TASK (an ID with --queue, or a full name), or with --filter every matching task of
    --queue (asks first on a terminal; -q does not)."""
    if (task is None) == (filter_ is None):
        raise click.UsageError("Give a TASK or --filter (with --queue), not both.")
    if task is not None:
        name = remote.task(task, queue)
        remote.call("DeleteTask", {"name": name})
        click.echo(f"Deleted task [{name.rsplit('/', 1)[-1]}].", err=True)
        return
    _delete_matching(remote, queue, filter_ or "")


def _delete_matching(remote: Remote, queue: str | None, expression: str) -> None:
    from opentasks.cli.filters import parse_filter  # noqa: PLC0415

    if not queue:
        raise click.UsageError("--filter needs --queue.")
    try:
        matches = parse_filter(expression)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--filter") from None
    full = remote.queue(queue)
    names = [task.name for task in _pages(remote, full, None) if matches.matches(resource_dict(task))]
    if not names:
        click.echo(f"No task of [{short_name(full)}] matches.", err=True)
        return
    confirm(remote, f"{len(names)} tasks of [{short_name(full)}] match. Are you sure you want to delete them")
    for name in names:
        try:
            remote.call("DeleteTask", {"name": name})
        except Refused as error:
            if error.status != "NOT_FOUND":  # dispatched and gone meanwhile
                raise
        click.echo(f"Deleted task [{name.rsplit('/', 1)[-1]}].", err=True)


@tasks.command()
@click.argument("task")
@_queue_option(required=False)
@remote_options
@format_option("yaml")
@reports_errors
def run(remote: Remote, task: str, queue: str | None, output_format: Projection | None) -> None:
    """Dispatch TASK now, whatever its schedule or its queue's state."""
    show(resource_dict(remote.call("RunTask", {"name": remote.task(task, queue)})), output_format)


@tasks.command(name="import")
@click.argument("file", type=click.File("r"))
@_queue_option(required=True)
@remote_options
@reports_errors
def import_(remote: Remote, file: Any, queue: str) -> None:
    """Create tasks from FILE: one Task per line, as JSON in the REST API's form
    (e.g. {"httpRequest": {"url": "https://..."}}), or - for standard input."""
    parent = remote.queue(queue)
    lines = [(number, line) for number, line in enumerate(file, start=1) if line.strip()]
    requests = list(_parsed(lines, parent, getattr(file, "name", "FILE")))
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
    click.echo(f"Created {len(requests) - len(failures)} of {len(requests)} tasks in [{short_name(parent)}].")
    for failure in failures:
        click.echo(f"ERROR: {failure}", err=True)
    if failures:
        raise SystemExit(1)


def _parsed(lines: list[tuple[int, str]], parent: str, source: str) -> Iterator[tuple[int, Any]]:
    from google.cloud import tasks_v2  # noqa: PLC0415 - import uses the official client

    for number, line in lines:
        try:
            json.loads(line)
            task = tasks_v2.Task.from_json(line)
        except (ValueError, TypeError) as error:
            raise click.ClickException(f"{source}, line {number}: not a Task in JSON: {error}") from None
        yield number, tasks_v2.CreateTaskRequest(parent=parent, task=task)
