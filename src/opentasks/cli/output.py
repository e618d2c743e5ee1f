"""Printing API resources: YAML (as ``gcloud ... describe``), JSON, or a table."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click
import yaml

FORMATS = ("yaml", "json", "table")


def format_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default=default,
        show_default=True,
        help="Output format.",
    )


def resource_dict(message: Any) -> dict[str, Any]:
    """A proto-plus message as the REST API shows it: camelCase, enum names, no defaults."""
    data: dict[str, Any] = type(message).to_dict(
        message, use_integers_for_enums=False, preserving_proto_field_name=False
    )
    return data


def show(
    items: Sequence[dict[str, Any]] | dict[str, Any],
    output_format: str,
    columns: Sequence[tuple[str, str]] = (),
) -> None:
    """Print one resource or a list of them."""
    if output_format == "json":
        click.echo(json.dumps(items, indent=2, sort_keys=False))
    elif output_format == "yaml":
        click.echo(yaml.safe_dump(items, sort_keys=False, default_flow_style=False).rstrip())
    else:
        _table([items] if isinstance(items, dict) else list(items), columns)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    if not rows:
        click.echo("Listed 0 items.")
        return
    header = [title for title, _ in columns]
    cells = [[_cell(row, path) for _, path in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in [header, *cells]:
        click.echo("  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip())


def _cell(row: dict[str, Any], path: str) -> str:
    """The value at a dotted path; ``name|id`` shows only the last segment of a resource name."""
    path, _, view = path.partition("|")
    value: Any = row
    for key in path.split("."):
        value = value.get(key, "") if isinstance(value, dict) else ""
    text = "" if value is None else str(value)
    return text.rsplit("/", 1)[-1] if view == "id" else text
