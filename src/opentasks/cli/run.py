"""``opentasks run -- CMD …``: run a program whose Cloud Tasks clients talk to opentasks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from opentasks.cli.remote import EMULATOR_HOST

ROUTE = "OPENTASKS_ROUTE_CLIENTS"
HOOK = Path(__file__).resolve().parent.parent / "autoroute"


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--endpoint",
    default=lambda: os.environ.get(EMULATOR_HOST, "127.0.0.1:8124"),
    show_default=f"${EMULATOR_HOST} or 127.0.0.1:8124",
    help="host:port of the opentasks server (its HTTP port serves gRPC and REST).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(endpoint: str, command: tuple[str, ...]) -> None:
    """Run COMMAND with every Cloud Tasks client its Python processes make sent to opentasks.

    Code that builds ``tasks_v2.CloudTasksClient()`` with no arguments, as Google's samples do,
    reaches the server at --endpoint with anonymous credentials (and $OPENTASKS_API_TOKEN, if
    set), unchanged: Python processes started under this command load a hook that routes the
    clients of google-cloud-tasks (v2 and v2beta3; a client given its own transport (object or factory)
    keeps it). CLOUD_TASKS_EMULATOR_HOST is set for the command too, which the Firebase Admin
    SDKs and opentasks.client() read. Nothing else of the program changes.

    Example: opentasks run -- python app.py
    """
    endpoint = endpoint.removeprefix("http://").rstrip("/")
    program = shutil.which(command[0])
    if program is None:
        raise click.UsageError(f"'{command[0]}' is not a program on PATH.")
    env = dict(os.environ)
    env[ROUTE] = endpoint
    env[EMULATOR_HOST] = endpoint
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(HOOK), env.get("PYTHONPATH"))))
    os.execve(program, list(command), env)
