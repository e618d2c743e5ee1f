"""Printing API resources as gcloud does: ``--format`` (yaml, json, none, ``table(...)``,
``csv(...)``, ``value(...)``) and the list flags ``--filter``, ``--sort-by``, ``--limit``,
``--page-size`` and ``--uri``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import click

from opentasks.cli.filters import Filter, parse_filter
from opentasks.cli.projection import Column, Projection, parse_format, stringify

_SAYS = {
    "none": "none: only the message on stderr",
    "yaml": "yaml",
}


def format_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format``: a gcloud format name with an optional projection, as the command receives
    ``output_format: Projection``."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Projection | None:
        if value is None:
            return None
        try:
            return parse_format(value)
        except ValueError as error:
            raise click.BadParameter(str(error), ctx, param) from None

    says = _SAYS.get(default, "a table, as gcloud")
    return click.option(
        "--format",
        "output_format",
        default=None,
        callback=convert,
        metavar="FORMAT",
        help=f"yaml, json, none, table(KEY,...), csv(KEY,...) or value(KEY,...)  [default: {says}]",
    )


# The bytes fields of Cloud Tasks resources; gcloud shows them in URL-safe base64.
_BYTES_FIELDS = frozenset({"body", "etag"})


def resource_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as gcloud shows it: the REST API's JSON (camelCase, enum names, no
    defaults) with bytes in URL-safe base64 (which the API reads too)."""
    from google.protobuf import json_format  # noqa: PLC0415 - cheap, already loaded by the call

    data: dict[str, Any] = _url_safe(json_format.MessageToDict(message))
    return data


def _url_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: inner.translate(_URL_SAFE)
            if key in _BYTES_FIELDS and isinstance(inner, str)
            else _url_safe(inner)
            for key, inner in value.items()
        }
    if isinstance(value, list):
        return [_url_safe(inner) for inner in value]
    return value


_URL_SAFE = str.maketrans("+/", "-_")


def pruned(value: Any) -> Any:
    """``value`` without empty fields (``{}``, ``[]``, ``""``, None), keys kept in their order."""
    if isinstance(value, dict):
        items = ((key, pruned(inner)) for key, inner in value.items())
        return {key: inner for key, inner in items if inner not in ({}, [], "", None)}
    if isinstance(value, list):
        return [pruned(inner) for inner in value]
    return value


def show(resource: dict[str, Any], projection: Projection | None, default: str = "yaml") -> None:
    """Print one resource: YAML, keys sorted, empty fields left out, unless ``--format`` says otherwise."""
    base = parse_format(default)
    _print([pruned(resource)], projection.with_defaults(base) if projection else base, single=True)


def show_created(
    kind: str, name: str, resource: dict[str, Any], projection: Projection | None, verb: str = "Created"
) -> None:
    """gcloud's ``Created queue [l/q].`` on stderr; the resource on stdout only with ``--format``."""
    click.echo(f"{verb} {kind} [{name}].", err=True)
    if projection is not None:
        show(resource, projection)


@dataclass(frozen=True)
class ListOptions:
    """The list flags of every ``list`` command."""

    filter: Filter | None
    sort_by: tuple[str, ...]
    limit: int | None
    page_size: int | None
    uri: bool
    projection: Projection | None


def list_options(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Adds gcloud's list flags and ``--format``; the command receives ``listing: ListOptions``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)  # keeps the options the command has already
        def wrapper(  # noqa: PLR0917 - click passes every option as an argument
            filter_: Filter | None,
            sort_by: tuple[str, ...],
            limit: int | None,
            page_size: int | None,
            uri: bool,
            output_format: Projection | None,
            **kwargs: Any,
        ) -> Any:
            listing = ListOptions(filter_, _sort_keys(sort_by), limit, page_size, uri, output_format)
            return command(listing=listing, **kwargs)

        options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
            click.option(
                "--filter",
                "filter_",
                callback=filter_value,
                metavar="EXPRESSION",
                help="Keep what matches, e.g. 'state:PAUSED' or 'name~^a AND NOT dispatchCount>2'",
            ),
            click.option(
                "--sort-by",
                multiple=True,
                metavar="FIELD",
                help="Sort by these fields (comma-separated, ~FIELD for descending).",
            ),
            click.option("--limit", type=click.IntRange(min=1), help="Show at most this many."),
            click.option(
                "--page-size", type=click.IntRange(min=1), help="Ask the server for this many per page."
            ),
            click.option("--uri", is_flag=True, help="Print the REST URI of each resource instead."),
            format_option(default),
        ]
        decorated: Callable[..., Any] = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated

    return decorate


def filter_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Filter | None:
    """A ``--filter`` option's callback: the parsed expression, or None when not given."""
    if not value:
        return None
    try:
        return parse_filter(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


def _sort_keys(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(key.strip() for value in values for key in value.split(",") if key.strip())


def show_list(
    resources: Iterable[dict[str, Any]], listing: ListOptions, default: str, uri_of: Callable[[str], str]
) -> None:
    """Filter, sort, cut and print a list as gcloud does (``Listed 0 items.`` on stderr when empty)."""
    rows = [row for row in resources if listing.filter is None or listing.filter.matches(row)]
    for key in reversed(listing.sort_by):
        descending = key.startswith("~")
        rows.sort(key=_sort_key(Column.of(key.removeprefix("~"))), reverse=descending)
    if listing.limit is not None:
        rows = rows[: listing.limit]
    if listing.uri:
        for row in rows:
            click.echo(uri_of(str(row.get("name", ""))))
        return
    if not rows and (listing.projection is None or listing.projection.kind == "table"):
        click.echo("Listed 0 items.", err=True)
        return
    base = parse_format(default)
    projection = listing.projection.with_defaults(base) if listing.projection else base
    _print(rows, projection, single=False)


def limited(pages: Iterator[dict[str, Any]], listing: ListOptions) -> Iterator[dict[str, Any]]:
    """``pages``' resources, stopping early at ``--limit`` when nothing has to be seen first."""
    if listing.limit is None or listing.filter is not None or listing.sort_by:
        yield from pages
        return
    for count, row in enumerate(pages, start=1):
        yield row
        if count >= listing.limit:
            return


def _sort_key(column: Column) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    return lambda row: _sort_value(column.value(row))


def _sort_value(value: Any) -> tuple[int, Any]:
    if value is None or value == "":
        return (2, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, stringify(value))


def _print(rows: Sequence[dict[str, Any]], projection: Projection, *, single: bool) -> None:
    if projection.kind == "none":
        return
    if projection.kind == "json":
        click.echo(json.dumps(rows[0] if single else list(rows), indent=2, sort_keys=True))
    elif projection.kind == "yaml":
        _yaml(rows, single=single)
    elif projection.kind == "table":
        _table(rows, projection)
    else:
        separator = "\t" if projection.kind == "value" else ","
        lines = [[_csv_cell(cell, separator) for cell in projection.cells(row)] for row in rows]
        if projection.kind == "csv" and projection.heading:
            lines.insert(0, [title.lower() for title in projection.titles()])
        for line in lines:
            click.echo(separator.join(line))


def _yaml(rows: Sequence[dict[str, Any]], *, single: bool) -> None:
    import yaml  # noqa: PLC0415 - only the formats that print YAML pay for it

    if single:
        click.echo(yaml.safe_dump(rows[0], sort_keys=True, default_flow_style=False).rstrip())
        return
    for row in rows:
        click.echo("---")
        click.echo(yaml.safe_dump(row, sort_keys=True, default_flow_style=False).rstrip())


def _table(rows: Sequence[dict[str, Any]], projection: Projection) -> None:
    lines = [projection.cells(row) for row in rows]
    if projection.heading:
        lines.insert(0, projection.titles())
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _csv_cell(cell: str, separator: str) -> str:
    if separator == "," and any(c in cell for c in ',"\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell
