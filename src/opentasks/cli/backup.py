"""``opentasks backup``: a consistent copy of the SQLite database, taken while the server runs."""

from __future__ import annotations

from pathlib import Path

import click

from opentasks.clock import SystemClock
from opentasks.config import ConfigError, StorageUrl, default_data_dir
from opentasks.storage.backup import DEFAULT_STEP_PAGES, BackupError, backup


@click.command(name="backup")
@click.option(
    "--storage",
    envvar="OPENTASKS_STORAGE",
    show_envvar=True,
    default=None,
    show_default="the sqlite file in --data-dir",
    help="The --storage of the server to back up (sqlite:///...).",
)
@click.option(
    "--data-dir",
    envvar="OPENTASKS_DATA_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default=str(default_data_dir()),
    help="The --data-dir of the server to back up (where its default database lives).",
)
@click.option("--overwrite", is_flag=True, help="Replace FILE if it exists.")
@click.option(
    "--step-pages",
    default=DEFAULT_STEP_PAGES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Pages copied per step (each step holds a read lock on the database briefly).",
)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def backup_command(
    storage: str | None, data_dir: Path | None, overwrite: bool, step_pages: int, file: Path
) -> None:
    """Copy the database to FILE as of one instant, while the server keeps serving.

    FILE is a complete SQLite database, readable by its owner only. To restore it, stop the
    server and put FILE in place of the database (docs/operating.md).
    """
    storage = storage or f"sqlite:///{data_dir or default_data_dir()}/opentasks.db"  # as serve
    try:
        url = StorageUrl.parse(storage)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    if url.backend != "sqlite" or url.path is None:
        raise click.UsageError(f"--storage {storage}: only an SQLite database can be backed up.")
    clock = SystemClock()
    started = clock.monotonic()
    try:
        report = backup(url.path, file, overwrite=overwrite, pages=step_pages)
    except (BackupError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"Backed up {url.path} to {report.target}: {report.queues} queue(s), {report.tasks} task(s), "
        f"schema version {report.schema_version}, {report.size_bytes / 1e6:.1f} MB "
        f"in {clock.monotonic() - started:.2f} s."
    )
