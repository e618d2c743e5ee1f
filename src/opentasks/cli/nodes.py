"""``opentasks nodes list``: the servers sharing a PostgreSQL database, read from the database."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import click

from opentasks.clock import SystemClock
from opentasks.config import ConfigError, StorageUrl
from opentasks.errors import OpenTasksError
from opentasks.storage.base import NodeInfo, Store, StoreUnusable


@click.group()
def nodes() -> None:
    """The servers (nodes) that share one PostgreSQL database."""


@nodes.command(name="list")
@click.option(
    "--storage",
    envvar="OPENTASKS_STORAGE",
    show_envvar=True,
    required=True,
    help="The --storage of the nodes (postgresql://...).",
)
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_nodes(storage: str, output: str) -> None:
    """Every node known: its address, when it started, its last heartbeat, whether it is alive
    (its heartbeat lease has not run out) and how many queues it dispatches."""
    try:
        url = StorageUrl.parse(storage)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    if url.backend != "postgresql":
        raise click.UsageError(
            f"--storage {url.describe()}: a {url.backend} store has exactly one node, the server "
            "that opened it; only servers sharing a PostgreSQL database are nodes to list."
        )
    from opentasks.app import build_store  # noqa: PLC0415 (the server loads only for this command)

    now = SystemClock().now()
    found = asyncio.run(_read(build_store(url, migrate=False)))
    if output == "json":
        click.echo(json.dumps([_as_json(node, now) for node in found], indent=2))
        return
    rows = [("NODE", "ADDRESS", "STARTED", "LAST_HEARTBEAT", "STATE", "QUEUES")]
    rows += [
        (
            node.node_id,
            node.address or "-",
            _time(node.started),
            f"{(now - node.heartbeat).total_seconds():.1f}s ago",
            _state(node, now),
            str(node.queues),
        )
        for node in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


async def _read(store: Store) -> list[NodeInfo]:
    try:
        await store.open()
    except (StoreUnusable, OpenTasksError) as error:
        raise click.ClickException(str(error)) from None
    try:
        return await store.nodes()
    except OpenTasksError as error:
        raise click.ClickException(str(error)) from None
    finally:
        await store.close()


def _state(node: NodeInfo, now: datetime) -> str:
    return "alive" if node.expires > now else "gone"


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_json(node: NodeInfo, now: datetime) -> dict[str, object]:
    return {
        "nodeId": node.node_id,
        "address": node.address,
        "startTime": _time(node.started),
        "heartbeatTime": node.heartbeat.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "expireTime": node.expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "state": _state(node, now),
        "queues": node.queues,
    }
