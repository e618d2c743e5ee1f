"""``opentasks apply -f FILE``: make the server's queues match a file, idempotently.

``--prune`` also deletes the queues of the location that the file does not name. It asks first
on a terminal (``-q`` skips the question), and it refuses to delete every queue of the location
(an empty or mistyped file) unless ``--yes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from opentasks.cli.prompts import QUEUE_DELETE_WARNING, confirm
from opentasks.cli.remote import Remote, fail, remote_options, reports_errors, short_name

if TYPE_CHECKING:
    from google.cloud import tasks_v2

    from opentasks.config_file import ConfigFile, DeclaredQueue

# The client library, the YAML reader and the domain are imported when a command runs: every
# `opentasks` call imports this module, and should start fast.


@dataclass
class Step:
    """One change of the plan."""

    action: str  # create | update | pause | resume | delete
    queue: str
    details: list[str] = field(default_factory=list)
    declared: DeclaredQueue | None = None

    def describe(self) -> str:
        symbol = {"create": "+", "update": "~", "delete": "-"}.get(self.action, "~")
        suffix = f": {'; '.join(self.details)}" if self.details else ""
        return f"{symbol} {self.action} {self.queue}{suffix}"


def plan(client: tasks_v2.CloudTasksClient, remote: Remote, config: ConfigFile, *, prune: bool) -> list[Step]:
    """The changes that make the server match ``config`` (nothing is changed)."""
    from opentasks.declarative import ConfigFileError  # noqa: PLC0415 - see the imports

    steps = []
    declared_names: dict[str, DeclaredQueue] = {}
    for declared in config.queues:
        name = remote.queue(declared.name)
        if name in declared_names:  # e.g. once by ID, once by full name
            raise ConfigFileError(
                f"{config.path}:{declared.line}: {declared.name}: the queue is declared twice, "
                f"at lines {declared_names[name].line} and {declared.line}."
            )
        declared_names[name] = declared
        steps += _queue_steps(client, name, declared)
    if prune:
        steps += [
            Step("delete", queue.name)
            for queue in client.list_queues(parent=remote.parent)
            if queue.name not in declared_names
        ]
    return steps


def _queue_steps(client: tasks_v2.CloudTasksClient, name: str, declared: DeclaredQueue) -> list[Step]:
    """What makes the queue ``name`` match its declaration."""
    from google.api_core import exceptions  # noqa: PLC0415 - see the imports
    from google.cloud import tasks_v2  # noqa: PLC0415

    try:
        current = client.get_queue(name=name)
    except exceptions.NotFound:
        created = Step("create", name, [f"{p} = {_shown(v)}" for p, v in declared.settings.items()], declared)
        return [created, Step("pause", name, declared=declared)] if declared.state == "PAUSED" else [created]
    steps = []
    changed = {p: v for p, v in declared.settings.items() if _value(current, p) != v}
    if changed:
        details = [f"{p}: {_shown(_value(current, p))} -> {_shown(v)}" for p, v in changed.items()]
        steps.append(Step("update", name, details, replace(declared, settings=changed)))
    if declared.state and declared.state != tasks_v2.Queue.State(current.state).name:
        steps.append(Step("pause" if declared.state == "PAUSED" else "resume", name, declared=declared))
    return steps


def execute(
    client: tasks_v2.CloudTasksClient, remote: Remote, steps: list[Step], *, queue_yaml: bool = False
) -> None:
    """Carry out ``steps``; queues of a queue.yaml are marked so (they keep their bucket_size)."""
    from google.cloud import tasks_v2  # noqa: PLC0415 - see the imports
    from google.protobuf import field_mask_pb2  # noqa: PLC0415

    from opentasks.api.call import QUEUE_YAML_HEADER  # noqa: PLC0415
    from opentasks.cli.queues import nested_queue  # noqa: PLC0415

    metadata = [(QUEUE_YAML_HEADER, "true")] if queue_yaml else []
    for step in steps:
        if step.action in ("create", "update"):
            assert step.declared is not None
            body, paths = nested_queue(step.queue, step.declared.settings)
            client.update_queue(
                queue=tasks_v2.Queue(body),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
                metadata=metadata,
            )
        elif step.action == "pause":
            client.pause_queue(name=step.queue)
        elif step.action == "resume":
            client.resume_queue(name=step.queue)
        elif step.action == "delete":
            client.delete_queue(name=step.queue)


def apply_file(
    remote: Remote,
    config: ConfigFile,
    *,
    dry_run: bool = False,
    prune: bool = False,
    yes: bool = False,
) -> list[Step]:
    """Plan, print and (unless ``dry_run``) carry out the changes for ``config``.

    Deleting every queue of the location needs ``yes``; other deletions are confirmed on a
    terminal unless ``remote.quiet``. Raises :class:`ConfigFileError` (``FILE:LINE: FIELD:
    message``) when the server refuses a declared setting, and :class:`click.ClickException`
    when a deletion is refused.
    """
    client = remote.client()
    steps = plan(client, remote, config, prune=prune)
    for note in config.notes:
        click.echo(f"NOTE: {note}", err=True)
    for step in steps:
        click.echo(step.describe())
    if not steps:
        click.echo(f"Nothing to change: the queues match {config.path}.")
        return steps
    deletions = [step.queue for step in steps if step.action == "delete"]
    wipe_out = None if yes else _wipe_out(remote, config, deletions)
    if dry_run:
        if wipe_out:
            click.echo(f"WARNING: {wipe_out}", err=True)
        click.echo(f"Dry run: {len(steps)} change(s) planned, none made.")
        return steps
    if wipe_out:
        raise click.ClickException(wipe_out)
    if deletions:
        shown = ", ".join(f"[{short_name(name)}]" for name in deletions)
        confirm(remote, f"{QUEUE_DELETE_WARNING} Are you sure you want to delete: {shown}")
    _execute_reporting(client, remote, steps, config)
    click.echo(f"Applied {len(steps)} change(s).")
    return steps


def _execute_reporting(
    client: tasks_v2.CloudTasksClient, remote: Remote, steps: list[Step], config: ConfigFile
) -> None:
    """Execute ``steps`` one by one; a change the server refuses is reported with its file line."""
    from google.api_core import exceptions  # noqa: PLC0415 - see the imports

    from opentasks.declarative import ConfigFileError, api_field_path  # noqa: PLC0415

    refusals = (exceptions.InvalidArgument, exceptions.FailedPrecondition, exceptions.AlreadyExists)
    for done, step in enumerate(steps):
        try:
            execute(client, remote, [step], queue_yaml=config.kind == "queue.yaml")
        except refusals as error:
            if step.declared is None:
                raise
            origin = step.declared.origin(api_field_path(error.message))
            made = f" ({done} of {len(steps)} change(s) made before it)" if done else ""
            raise ConfigFileError(
                f"{config.path}:{origin.line}: {origin.field}: {error.message}{made}"
            ) from None


def _wipe_out(remote: Remote, config: ConfigFile, deletions: list[str]) -> str | None:
    """Why ``deletions`` may not go ahead without --yes: they leave the location without a
    queue (an empty or mistyped file, the wrong --project); None if they do not."""
    if not deletions or any(remote.queue(q.name).startswith(remote.parent + "/") for q in config.queues):
        return None
    return (
        f"--prune would delete every queue of {remote.parent} ({len(deletions)}), as {config.path} "
        "declares none there. Check the file, --project and --location; add --yes to delete them all."
    )


@click.command(name="apply")
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An opentasks YAML file or an App Engine queue.yaml.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--prune", is_flag=True, help="Also delete queues of the project/location that the file does not name."
)
@click.option(
    "--yes",
    is_flag=True,
    help="With --prune: allow deleting every queue of the location (refused otherwise).",
)
@remote_options
@reports_errors
def apply(*, remote: Remote, path: Path, dry_run: bool, prune: bool, yes: bool) -> None:
    """Create or update the queues a file declares (idempotent; never deletes unless --prune)."""
    from opentasks.config import ConfigError  # noqa: PLC0415 - see the imports
    from opentasks.config_file import load  # noqa: PLC0415

    try:
        config = load(path)
        remote = replace(
            remote, project=config.project or remote.project, location=config.location or remote.location
        )
        apply_file(remote, config, dry_run=dry_run, prune=prune, yes=yes)
    except ConfigError as error:
        fail(str(error))
    except click.ClickException as error:
        fail(error.format_message())


def _value(queue: tasks_v2.Queue, path: str) -> Any:
    value: Any = queue
    for part in path.split("."):
        value = getattr(value, part)
    if path == "app_engine_routing_override":
        return {k: v for k in ("service", "version", "instance") if (v := getattr(value, k))}
    if path == "http_target.uri_override":
        return _uri_override_parts(value)
    return value


def _uri_override_parts(override: Any) -> dict[str, Any]:
    """A queue's URI override in the shape a declaration gives it (unset parts left out)."""
    parts: dict[str, Any] = {}
    if override.scheme:
        parts["scheme"] = type(override).Scheme(override.scheme).name
    if override.host:
        parts["host"] = override.host
    if override.port:
        parts["port"] = override.port
    if override.path_override.path:
        parts["path_override"] = {"path": override.path_override.path}
    if override.query_override.query_params:
        parts["query_override"] = {"query_params": override.query_override.query_params}
    if override.uri_override_enforce_mode:
        mode = type(override).UriOverrideEnforceMode(override.uri_override_enforce_mode).name
        parts["uri_override_enforce_mode"] = mode
    return parts


def _shown(value: Any) -> str:
    return str(value.total_seconds()) + "s" if hasattr(value, "total_seconds") else repr(value)
