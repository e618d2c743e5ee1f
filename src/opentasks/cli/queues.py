"""``opentasks queues ...``: manage queues, with the flags of ``gcloud tasks queues``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from google.api_core import exceptions
from google.cloud import tasks_v2, tasks_v2beta3
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.cloud.tasks_v2beta3.services.cloud_tasks.transports import (
    CloudTasksGrpcTransport as V2beta3GrpcTransport,
)
from google.protobuf import field_mask_pb2

from opentasks.cli.http_target import http_target_changes, http_target_options, merged
from opentasks.cli.output import format_option, resource_dict, show
from opentasks.cli.params import duration
from opentasks.cli.remote import Remote, remote_options, reports_errors

# flag (without --) -> (Queue field path, conversion)
_SETTINGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "max_dispatches_per_second": ("rate_limits.max_dispatches_per_second", float),
    "max_concurrent_dispatches": ("rate_limits.max_concurrent_dispatches", int),
    "max_attempts": ("retry_config.max_attempts", lambda v: -1 if str(v).lower() == "unlimited" else int(v)),
    "max_retry_duration": ("retry_config.max_retry_duration", lambda v: v),
    "min_backoff": ("retry_config.min_backoff", lambda v: v),
    "max_backoff": ("retry_config.max_backoff", lambda v: v),
    "max_doublings": ("retry_config.max_doublings", int),
    "routing_override": ("app_engine_routing_override", lambda text: routing(text)),  # noqa: PLW0108 - defined below
}
COLUMNS = (
    ("QUEUE_NAME", "name|id"),
    ("STATE", "state"),
    ("MAX_NUM_OF_TASKS", "rateLimits.maxConcurrentDispatches"),
    ("MAX_RATE (/sec)", "rateLimits.maxDispatchesPerSecond"),
    ("MAX_ATTEMPTS", "retryConfig.maxAttempts"),
)
STATS_COLUMNS = (*COLUMNS, ("TASKS", "stats.tasksCount"), ("OLDEST", "stats.oldestEstimatedArrivalTime"))
_ALL_AND_STATS = field_mask_pb2.FieldMask(paths=["*"])


def routing(text: str) -> dict[str, str]:
    """``service:worker,version:v2,instance:i1`` -> AppEngineRouting fields."""
    fields: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition(":")
        if not sep or key.strip() not in ("service", "version", "instance"):
            raise click.BadParameter(f"'{part}': write KEY:VALUE with KEY one of service, version, instance.")
        fields[key.strip()] = value.strip()
    return fields


def setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--max-dispatches-per-second", type=float, help="Token bucket refill rate."),
        click.option("--max-concurrent-dispatches", type=int, help="Most attempts in flight at once."),
        click.option("--max-attempts", help="Attempts per task (the first one included), or 'unlimited'."),
        click.option(
            "--max-retry-duration",
            type=duration("--max-retry-duration"),
            help="Stop retrying a task this long after its first attempt (e.g. 2h).",
        ),
        click.option(
            "--min-backoff", type=duration("--min-backoff"), help="Shortest wait before a retry (e.g. 0.1s)."
        ),
        click.option(
            "--max-backoff", type=duration("--max-backoff"), help="Longest wait before a retry (e.g. 1h)."
        ),
        click.option(
            "--max-doublings", type=int, help="How often the wait doubles before it grows linearly."
        ),
        click.option(
            "--routing-override", help="App Engine routing for every task: service:S,version:V,instance:I."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def queue_body(name: str, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Queue to send and the field paths that the given flags set."""
    settings = {}
    for flag, value in values.items():
        if value is not None and flag in _SETTINGS:
            path, convert = _SETTINGS[flag]
            settings[path] = convert(value)
    return nested_queue(name, settings)


def nested_queue(name: str, settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``{"rate_limits.max_concurrent_dispatches": 3}`` -> a Queue body and its update-mask paths."""
    body: dict[str, Any] = {"name": name}
    for path, value in settings.items():
        *parents, leaf = path.split(".")
        target = body
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return body, list(settings)


@click.group()
def queues() -> None:
    """Create, inspect and manage queues (like `gcloud tasks queues`)."""


@queues.command()
@click.argument("queue")
@setting_options
@http_target_options
@remote_options
@format_option("yaml")
@reports_errors
def create(remote: Remote, queue: str, output_format: str, **settings: Any) -> None:
    """Create QUEUE (an ID, or a full name)."""
    body, _ = queue_body(remote.queue(queue), settings)
    target = http_target_changes(settings)
    if target:
        body["http_target"] = target
    created = remote.client().create_queue(parent=remote.parent, queue=tasks_v2.Queue(body))
    show(_queue(created), output_format, COLUMNS)


@queues.command()
@click.argument("queue")
@setting_options
@http_target_options
@click.option("--clear-max-dispatches-per-second", is_flag=True, help="Back to the default rate.")
@click.option("--clear-max-concurrent-dispatches", is_flag=True, help="Back to the default concurrency.")
@click.option("--clear-max-attempts", is_flag=True, help="Back to the default attempts.")
@click.option("--clear-max-retry-duration", is_flag=True, help="Retry without a time limit.")
@click.option("--clear-min-backoff", is_flag=True, help="Back to the default minimum backoff.")
@click.option("--clear-max-backoff", is_flag=True, help="Back to the default maximum backoff.")
@click.option("--clear-max-doublings", is_flag=True, help="Back to the default doublings.")
@click.option("--clear-routing-override", is_flag=True, help="Remove the App Engine routing override.")
@click.option("--clear-http-target", is_flag=True, help="Remove every --http-...-override.")
@remote_options
@format_option("yaml")
@reports_errors
def update(remote: Remote, queue: str, output_format: str, **settings: Any) -> None:
    """Change settings of QUEUE (creating it if missing); only the flags given change."""
    body, paths = queue_body(remote.queue(queue), settings)
    clear_target = settings.pop("clear_http_target")
    for flag, cleared in settings.items():
        if flag.startswith("clear_") and cleared:
            paths.append(_SETTINGS[flag.removeprefix("clear_")][0])
    changes = http_target_changes(settings)
    if changes or clear_target:
        paths.append("http_target")
    if changes:
        body["http_target"] = merged(_current_http_target(remote, body["name"]), changes)
    if not paths:
        raise click.UsageError("Name at least one setting to change (see --help).")
    mask = field_mask_pb2.FieldMask(paths=paths)
    updated = remote.client().update_queue(queue=tasks_v2.Queue(body), update_mask=mask)
    show(_queue(updated), output_format, COLUMNS)


@queues.command()
@click.argument("queue")
@click.option("--stats/--no-stats", default=True, show_default=True, help="Add the queue's stats.")
@remote_options
@format_option("yaml")
@reports_errors
def describe(remote: Remote, queue: str, output_format: str, stats: bool) -> None:
    """Show QUEUE as `gcloud tasks queues describe` does, with its stats (tasks waiting, the
    oldest one's time, attempts in the last minute and in flight, the rate allowed now)."""
    name = remote.queue(queue)
    if stats:
        found = _with_stats(
            remote, lambda client: [client.get_queue(request={"name": name, "read_mask": _ALL_AND_STATS})]
        )
        if found is not None:
            show(found[0], output_format, STATS_COLUMNS)
            return
    show(_queue(remote.client().get_queue(name=name)), output_format, COLUMNS)


@queues.command(name="list")
@click.option("--filter", "filter_", default="", help="e.g. 'state: PAUSED'.")
@remote_options
@format_option("table")
@reports_errors
def list_(remote: Remote, filter_: str, output_format: str) -> None:
    """List the queues of the project and location, with their tasks and the oldest one's time."""
    request = {"parent": remote.parent, "filter": filter_}
    found = _with_stats(
        remote, lambda client: client.list_queues(request={**request, "read_mask": _ALL_AND_STATS})
    )
    if found is not None:
        show(found, output_format, STATS_COLUMNS)
        return
    show([_queue(q) for q in remote.client().list_queues(request=request)], output_format, COLUMNS)


def _action(
    name: str, done: str, summary: str, call: Callable[[tasks_v2.CloudTasksClient, str], Any]
) -> None:
    """A command that acts on one queue and says what it did."""

    @queues.command(name=name, help=summary)
    @click.argument("queue")
    @remote_options
    @reports_errors
    def command(remote: Remote, queue: str) -> None:
        full = remote.queue(queue)
        call(remote.client(), full)
        click.echo(f"{done} queue [{full}].")


_action(
    "pause",
    "Paused",
    "Stop dispatching QUEUE's tasks (new tasks are still accepted).",
    lambda c, q: c.pause_queue(name=q),
)
_action("resume", "Resumed", "Dispatch QUEUE's tasks again.", lambda c, q: c.resume_queue(name=q))
_action(
    "purge", "Purged", "Delete every task of QUEUE created before now.", lambda c, q: c.purge_queue(name=q)
)
_action("delete", "Deleted", "Delete QUEUE and all its tasks.", lambda c, q: c.delete_queue(name=q))


def _current_http_target(remote: Remote, name: str) -> tasks_v2.HttpTarget | None:
    """The queue's HTTP target, which flags given on update are merged into."""
    try:
        current = remote.client().get_queue(name=name)
    except exceptions.NotFound:
        return None
    return current.http_target if "http_target" in current else None


def _queue(queue: tasks_v2.Queue) -> dict[str, Any]:
    return resource_dict(queue)


def _with_stats(
    remote: Remote, call: Callable[[tasks_v2beta3.CloudTasksClient], Any]
) -> list[dict[str, Any]] | None:
    """The queues ``call`` reads through the v2beta3 API (which carries stats), shown as v2
    queues with a ``stats`` section; None if the server does not serve v2beta3."""
    transport = remote.client().transport
    assert isinstance(transport, CloudTasksGrpcTransport)
    channel = transport.grpc_channel  # the v2 client's: ready, and carrying the API token
    client = tasks_v2beta3.CloudTasksClient(transport=V2beta3GrpcTransport(channel=channel))
    try:
        return [_v2_shaped(queue) for queue in call(client)]
    except exceptions.MethodNotImplemented:
        return None


def _v2_shaped(queue: tasks_v2beta3.Queue) -> dict[str, Any]:
    """A v2beta3 queue as ``describe`` shows a v2 one (the App Engine override unwrapped, no
    type), followed by its stats with zeros spelled out and counts as numbers."""
    data = resource_dict(queue)
    data.pop("type", None)
    stats = data.pop("stats", {})
    override = data.pop("appEngineHttpQueue", {}).get("appEngineRoutingOverride")
    if override is not None:
        name = data.pop("name")
        data = {"name": name, "appEngineRoutingOverride": override, **data}
    section: dict[str, Any] = {"tasksCount": int(stats.get("tasksCount", 0))}  # int64 come as strings
    if "oldestEstimatedArrivalTime" in stats:
        section["oldestEstimatedArrivalTime"] = stats["oldestEstimatedArrivalTime"]
    for key in ("executedLastMinuteCount", "concurrentDispatchesCount"):
        section[key] = int(stats.get(key, 0))
    section["effectiveExecutionRate"] = stats.get("effectiveExecutionRate", 0.0)
    data["stats"] = section
    return data
