"""The ``opentasks`` command: ``serve``, and ``queues`` / ``tasks`` shaped like ``gcloud tasks``.

Each command's module is imported when the command runs, so that a client call does not pay
for the server's imports (see bench/cli_startup.py).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import click

# command -> "module:attribute"
COMMANDS = {
    "serve": "opentasks.cli.serve:serve",
    "queues": "opentasks.cli.queues:queues",
    "tasks": "opentasks.cli.tasks:tasks",
    "locations": "opentasks.cli.locations:locations",
    "cmek-config": "opentasks.cli.locations:cmek_config",
    "apply": "opentasks.cli.apply:apply",
    "keys": "opentasks.cli.keys:keys",
    "backup": "opentasks.cli.backup:backup_command",
    "nodes": "opentasks.cli.nodes:nodes",
    "run": "opentasks.cli.run:run",
}
TRACEBACK = "OPENTASKS_TRACEBACK"
QUIET = "opentasks.quiet"  # -q before the command; the commands' remote options read it


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; an unexpected error is one line on
    stderr (``OPENTASKS_TRACEBACK=1`` shows the traceback)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as error:
            if os.environ.get(TRACEBACK):
                raise
            click.echo(
                f"ERROR: {type(error).__name__}: {error} (set {TRACEBACK}=1 for the traceback)", err=True
            )
            ctx.exit(1)


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from opentasks.version import package_version  # noqa: PLC0415 - only --version needs it

        click.echo(f"opentasks {package_version()}")
        ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version and exit.",
)
@click.option("-q", "--quiet", is_flag=True, help="Ask no confirmation (as -q after the command).")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """opentasks: a self-hosted, durable Google Cloud Tasks (API v2) server and its client."""
    ctx.meta[QUIET] = quiet
