"""``opentasks apply -f FILE``: make the server's queues match a file, idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from opentasks.api.call import QUEUE_YAML_HEADER
from opentasks.cli.queues import nested_queue
from opentasks.cli.remote import Remote, remote_options, reports_errors
from opentasks.config import ConfigError
from opentasks.config_file import ConfigFile, DeclaredQueue, load


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
    steps = []
    declared_names = set()
    for declared in config.queues:
        name = remote.queue(declared.name)
        declared_names.add(name)
        try:
            current = client.get_queue(name=name)
        except exceptions.NotFound:
            steps.append(
                Step("create", name, [f"{p} = {_shown(v)}" for p, v in declared.settings.items()], declared)
            )
            if declared.state == "PAUSED":
                steps.append(Step("pause", name))
            continue
        changed = {p: v for p, v in declared.settings.items() if _value(current, p) != v}
        if changed:
            details = [f"{p}: {_shown(_value(current, p))} -> {_shown(v)}" for p, v in changed.items()]
            steps.append(Step("update", name, details, DeclaredQueue(declared.name, declared.line, changed)))
        current_state = tasks_v2.Queue.State(current.state).name
        if declared.state and declared.state != current_state:
            steps.append(Step("pause" if declared.state == "PAUSED" else "resume", name))
    if prune:
        for queue in client.list_queues(parent=remote.parent):
            if queue.name not in declared_names:
                steps.append(Step("delete", queue.name))
    return steps


def execute(
    client: tasks_v2.CloudTasksClient, remote: Remote, steps: list[Step], *, queue_yaml: bool = False
) -> None:
    """Carry out ``steps``; queues of a queue.yaml are marked so (they keep their bucket_size)."""
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
    remote: Remote, config: ConfigFile, *, dry_run: bool = False, prune: bool = False
) -> list[Step]:
    """Plan, print and (unless ``dry_run``) carry out the changes for ``config``."""
    client = remote.client()
    steps = plan(client, remote, config, prune=prune)
    for note in config.notes:
        click.echo(f"NOTE: {note}", err=True)
    for step in steps:
        click.echo(step.describe())
    if not steps:
        click.echo(f"Nothing to change: the queues match {config.path}.")
    elif dry_run:
        click.echo(f"Dry run: {len(steps)} change(s) planned, none made.")
    else:
        execute(client, remote, steps, queue_yaml=config.kind == "queue.yaml")
        click.echo(f"Applied {len(steps)} change(s).")
    return steps


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
@remote_options
@reports_errors
def apply(remote: Remote, path: Path, dry_run: bool, prune: bool) -> None:
    """Create or update the queues a file declares (idempotent; never deletes unless --prune)."""
    try:
        config = load(path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    remote = Remote(
        remote.endpoint,
        config.project or remote.project,
        config.location or remote.location,
        remote.api_token,
    )
    apply_file(remote, config, dry_run=dry_run, prune=prune)


def _value(queue: tasks_v2.Queue, path: str) -> Any:
    value: Any = queue
    for part in path.split("."):
        value = getattr(value, part)
    if path == "app_engine_routing_override":
        return {k: v for k in ("service", "version", "instance") if (v := getattr(value, k))}
    return value


def _shown(value: Any) -> str:
    return str(value.total_seconds()) + "s" if hasattr(value, "total_seconds") else repr(value)
