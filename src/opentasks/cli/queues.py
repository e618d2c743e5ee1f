"""``opentasks queues ...``: manage queues, with the flags and output of ``gcloud tasks queues``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import click

from opentasks.cli import wire
from opentasks.cli.http_target import CLEARS, clear_options, http_target_changes, http_target_options, merged
from opentasks.cli.output import (
    ListOptions,
    format_option,
    limited,
    list_options,
    resource_dict,
    show,
    show_created,
    show_list,
)
from opentasks.cli.params import MaxAttempts, duration, key_value, seconds
from opentasks.cli.projection import Projection
from opentasks.cli.prompts import QUEUE_DELETE_WARNING, confirm
from opentasks.cli.remote import (
    CLOUD_TASKS,
    Refused,
    Remote,
    field_mask,
    remote_options,
    reports_errors,
    short_name,
)

V2BETA3 = f"{wire.V2BETA3}.CloudTasks"


# flag (without --) -> (Queue field path, conversion to the JSON form)
_SETTINGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "max_dispatches_per_second": ("rate_limits.max_dispatches_per_second", float),
    "max_concurrent_dispatches": ("rate_limits.max_concurrent_dispatches", int),
    "max_attempts": ("retry_config.max_attempts", int),
    "max_retry_duration": ("retry_config.max_retry_duration", seconds),
    "min_backoff": ("retry_config.min_backoff", seconds),
    "max_backoff": ("retry_config.max_backoff", seconds),
    "max_doublings": ("retry_config.max_doublings", int),
    "routing_override": ("app_engine_routing_override", lambda text: routing(text)),  # noqa: PLW0108 - defined below
    "log_sampling_ratio": ("stackdriver_logging_config.sampling_ratio", float),
}
# gcloud's `queues list` table; opentasks adds the queue's task count and oldest task.
GCLOUD_LIST_FORMAT = (
    "table(name.basename():label=QUEUE_NAME, state,"
    ' rateLimits.maxConcurrentDispatches.yesno(no="unlimited").format("{0}").sub("-1", "unlimited")'
    ":label=MAX_NUM_OF_TASKS,"
    ' rateLimits.maxDispatchesPerSecond.yesno(no="unlimited"):label="MAX_RATE (/sec)",'
    ' retryConfig.maxAttempts.yesno(no="unlimited").format("{0}").sub("-1", "unlimited"):label=MAX_ATTEMPTS)'
)
LIST_FORMAT = GCLOUD_LIST_FORMAT.removesuffix(")") + (
    ", stats.tasksCount:label=TASKS, stats.oldestEstimatedArrivalTime:label=OLDEST)"
)


def routing(text: str) -> dict[str, str]:
    """``service:worker,version:v2,instance:i1`` -> AppEngineRouting fields."""
    fields: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        key, value = key_value(part, "--routing")
        if key not in ("service", "version", "instance"):
            raise click.BadParameter(f"'{part}': write KEY:VALUE with KEY one of service, version, instance.")
        fields[key] = value
    return fields


def setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--max-dispatches-per-second", type=float, help="Token bucket refill rate."),
        click.option("--max-concurrent-dispatches", type=int, help="Most attempts in flight at once."),
        click.option(
            "--max-attempts",
            type=MaxAttempts(),
            help="Attempts per task (the first one included), or unlimited.",
        ),
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
        click.option(
            "--log-sampling-ratio",
            type=click.FloatRange(0.0, 1.0),
            help="Fraction of attempts to log (0.0 to 1.0).",
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
@format_option("none")
@reports_errors
def create(remote: Remote, queue: str, output_format: Projection | None, **settings: Any) -> None:
    """Create QUEUE (an ID, or a full name)."""
    body, _ = queue_body(remote.queue(queue), settings)
    target = http_target_changes(settings)
    if target:
        body["http_target"] = target
    created = remote.call("CreateQueue", {"parent": remote.parent, "queue": body})
    show_created("queue", short_name(created.name), resource_dict(created), output_format)


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
@click.option("--clear-log-sampling-ratio", is_flag=True, help="Log nothing (the default).")
@clear_options
@click.option("--clear-http-target", is_flag=True, help="Remove every --http-...-override.")
@remote_options
@format_option("none")
@reports_errors
def update(remote: Remote, queue: str, output_format: Projection | None, **settings: Any) -> None:
    """Change settings of QUEUE (creating it if missing); only the flags given change."""
    body, paths = queue_body(remote.queue(queue), settings)
    _refuse_both(settings)
    clear_target = settings.pop("clear_http_target")
    cleared_target = [flag for flag in CLEARS if settings.pop(flag)]
    for flag, cleared in settings.items():
        if flag.startswith("clear_") and cleared:
            paths.append(_SETTINGS[flag.removeprefix("clear_")][0])
    changes = http_target_changes(settings)
    if changes or cleared_target or clear_target:
        paths.append("http_target")
    if (changes or cleared_target) and not clear_target:
        body["http_target"] = merged(_current_http_target(remote, body["name"]), changes, cleared_target)
    if not paths:
        raise click.UsageError("Name at least one setting to change (see --help).")
    updated = remote.call("UpdateQueue", {"queue": body, "update_mask": field_mask(paths)})
    show_created("queue", short_name(updated.name), resource_dict(updated), output_format, "Updated")


def _refuse_both(settings: dict[str, Any]) -> None:
    """A flag and its --clear- twin together are a usage error, as in gcloud."""
    for flag, value in settings.items():
        twin = f"clear_{flag}"
        if value not in (None, ()) and settings.get(twin):
            raise click.UsageError(
                f"--{flag.replace('_', '-')} and --{twin.replace('_', '-')} cannot be given together."
            )


@queues.command()
@click.argument("queue")
@click.option("--stats/--no-stats", default=True, show_default=True, help="Add the queue's stats.")
@remote_options
@format_option("yaml")
@reports_errors
def describe(remote: Remote, queue: str, output_format: Projection | None, stats: bool) -> None:
    """Show QUEUE as `gcloud tasks queues describe` does, with its stats (tasks waiting, the
    oldest one's time, attempts in the last minute and in flight, the rate allowed now)."""
    name = remote.queue(queue)
    if stats:
        found = _with_stats(
            lambda: iter([remote.call("GetQueue", {"name": name, "read_mask": "*"}, service=V2BETA3)])
        )
        if found is not None:
            show(next(found), output_format)
            return
    show(resource_dict(remote.call("GetQueue", {"name": name})), output_format)


@queues.command(name="list")
@click.option("--stats/--no-stats", default=True, show_default=True, help="Add the queues' stats.")
@list_options(LIST_FORMAT)
@remote_options
@reports_errors
def list_(remote: Remote, listing: ListOptions, stats: bool) -> None:
    """List the queues of the project and location, with their tasks and the oldest one's time."""
    found = _with_stats(lambda: _pages(remote, listing, V2BETA3, {"read_mask": "*"})) if stats else None
    if found is None:
        found = (resource_dict(queue) for queue in _pages(remote, listing, CLOUD_TASKS, {}))
    table = LIST_FORMAT if stats else GCLOUD_LIST_FORMAT
    show_list(limited(found, listing), listing, table, lambda name: f"{remote.rest_url}/v2/{name}")


def _pages(remote: Remote, listing: ListOptions, service: str, extra: dict[str, Any]) -> Iterator[Any]:
    token = ""
    while True:
        request = {"parent": remote.parent, "page_size": listing.page_size or 0, "page_token": token, **extra}
        page = remote.call("ListQueues", request, service=service)
        yield from page.queues
        token = page.next_page_token
        if not token:
            return


def _action(
    name: str, summary: str, rpc: str, message: Callable[[str], str], question: str | None = None
) -> None:
    """A command that acts on one queue and says what it did, as gcloud does (on stderr)."""

    @queues.command(name=name, help=summary)
    @click.argument("queue")
    @remote_options
    @reports_errors
    def command(remote: Remote, queue: str) -> None:
        full = remote.queue(queue)
        if question:
            confirm(remote, question.format(short_name(full)))
        remote.call(rpc, {"name": full})
        click.echo(message(short_name(full)), err=True)


_action(
    "pause",
    "Stop dispatching QUEUE's tasks (new tasks are still accepted).",
    "PauseQueue",
    "Paused queue [{}].".format,
)
_action("resume", "Dispatch QUEUE's tasks again.", "ResumeQueue", "Resumed queue [{}].".format)
_action(
    "purge",
    "Delete every task of QUEUE created before now (asks first on a terminal; -q does not).",
    "PurgeQueue",
    "Purged queue [{}].".format,
    "Are you sure you want to purge: [{}]",
)
_action(
    "delete",
    "Delete QUEUE and all its tasks (asks first on a terminal; -q does not).",
    "DeleteQueue",
    "Deleted queue [{}].".format,
    QUEUE_DELETE_WARNING + " Are you sure you want to delete: [{}]",
)


def _current_http_target(remote: Remote, name: str) -> dict[str, Any] | None:
    """The queue's HTTP target (proto field names), which flags given on update are merged into."""
    from google.protobuf import json_format  # noqa: PLC0415 - loaded already by the call

    try:
        current = remote.call("GetQueue", {"name": name})
    except Refused as error:
        if error.status == "NOT_FOUND":
            return None
        raise
    if not current.HasField("http_target"):
        return None
    target: dict[str, Any] = json_format.MessageToDict(current.http_target, preserving_proto_field_name=True)
    return target


def _with_stats(call: Callable[[], Iterator[Any]]) -> Iterator[dict[str, Any]] | None:
    """The queues ``call`` reads through the v2beta3 API (which carries stats), shown as v2
    queues with a ``stats`` section; None if the server does not serve v2beta3."""
    try:
        queues_found = call()
        first = next(queues_found, None)
    except Refused as error:
        if error.status == "UNIMPLEMENTED":
            return None
        raise

    def shaped() -> Iterator[dict[str, Any]]:
        if first is not None:
            yield _v2_shaped(first)
            yield from (_v2_shaped(queue) for queue in queues_found)

    return shaped()


def _v2_shaped(queue: Any) -> dict[str, Any]:
    """A v2beta3 queue as ``describe`` shows a v2 one (the App Engine override unwrapped, no
    type), followed by its stats with zeros spelled out and counts as numbers."""
    data = resource_dict(queue)
    data.pop("type", None)
    stats = data.pop("stats", {})
    override = data.pop("appEngineHttpQueue", {}).get("appEngineRoutingOverride")
    if override is not None:
        data["appEngineRoutingOverride"] = override
    section: dict[str, Any] = {"tasksCount": int(stats.get("tasksCount", 0))}  # int64 come as strings
    if "oldestEstimatedArrivalTime" in stats:
        section["oldestEstimatedArrivalTime"] = stats["oldestEstimatedArrivalTime"]
    for key in ("executedLastMinuteCount", "concurrentDispatchesCount"):
        section[key] = int(stats.get(key, 0))
    section["effectiveExecutionRate"] = stats.get("effectiveExecutionRate", 0.0)
    data["stats"] = section
    return data


def _register_iam() -> None:
    from opentasks.cli.iam import COMMANDS  # noqa: PLC0415 - iam builds on this module

    for command in COMMANDS:
        queues.add_command(command)


_register_iam()
