"""``opentasks serve``: start the server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from opentasks import logs
from opentasks.app import Server, target_policy
from opentasks.app import serve as run_server
from opentasks.cli.apply import apply_file
from opentasks.cli.params import duration as _duration
from opentasks.cli.remote import Remote
from opentasks.config import (
    ConfigError,
    Option,
    default_data_dir,
    env_of,
    flag_of,
    options,
    settings_from_options,
)
from opentasks.config_file import ConfigFile, load
from opentasks.errors import InvalidArgument, OpenTasksError


def _setting_options(command: Callable[..., None]) -> Callable[..., None]:
    """One click option per setting of :class:`Settings`, in declaration order."""
    for name, option, given in reversed(options()):
        flag = flag_of(name, option)
        if option.kind == "switch":
            flag = f"{flag}/--no-{flag.removeprefix('--')}"
        command = click.option(flag, name, **_click_arguments(name, option, given))(command)
    return command


def _click_arguments(name: str, option: Option, given: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "envvar": env_of(name, option),
        "show_envvar": True,
        "help": option.help,
        "default": given,
    }
    if option.shown_default is not None:
        arguments["show_default"] = option.shown_default
    if option.secret:
        arguments["show_default"] = False
    if option.metavar:
        arguments["metavar"] = option.metavar
    kind = option.kind
    if kind == "flag":
        arguments["is_flag"] = True
    elif kind == "switch":
        pass  # "--x/--no-x" makes it a boolean flag
    elif kind == "multiple":
        arguments["multiple"] = True
        arguments.pop("default")
    else:
        arguments["type"] = _TYPES[kind](name, option)
    return arguments


_TYPES: dict[str, Callable[[str, Option], Any]] = {
    "str": lambda name, option: click.STRING,
    "int": lambda name, option: click.INT,
    "float": lambda name, option: click.FLOAT,
    "duration": lambda name, option: _duration(flag_of(name, option)),
    "path": lambda name, option: click.Path(file_okay=False),
    "choice": lambda name, option: click.Choice(option.choices, case_sensitive=False),
}


@click.command(context_settings={"show_default": True})
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="OPENTASKS_CONFIG",
    show_envvar=True,
    is_eager=True,
    callback=lambda ctx, _, value: _read_config(ctx, value),
    help="YAML file with server settings (flags and env vars win) and queues to create or update at start.",
)
@_setting_options
def serve(config_file: ConfigFile | None, **given: Any) -> None:
    """Start the server: Cloud Tasks API v2 and v2beta3 over gRPC and REST, and the dispatcher."""
    try:
        settings = settings_from_options(given)
        target_policy(settings)  # a bad --dispatch-allow/-deny entry fails here, not at dispatch
    except (ConfigError, InvalidArgument, ValueError) as error:
        raise click.UsageError(str(error)) from None
    logs.configure(settings.log_level, settings.log_format)
    applied = _ConfigApplier(config_file)
    try:
        _make_default_data_dir(given)
        _run(run_server(settings, on_ready=applied.start))
    except (OSError, RuntimeError, OpenTasksError) as error:  # e.g. the port or the node ID is taken
        click.echo(f"opentasks: cannot start: {error}", err=True)
        sys.exit(1)
    if applied.failed:
        sys.exit(1)


def _make_default_data_dir(given: dict[str, Any]) -> None:
    """Create the default data directory (owner-only) when the database lives there; a
    directory that --storage or --data-dir names must exist already (a typo must not start a
    new empty database elsewhere)."""
    if given.get("storage") is None and given.get("data_dir") is None:
        default_data_dir().mkdir(parents=True, exist_ok=True, mode=0o700)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (faster I/O), else on asyncio's own loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# Settings given more than once; a config file lists their values.
_MULTIPLE = frozenset(name for name, option, _ in options() if option.kind == "multiple")


def _read_config(ctx: click.Context, path: Path | None) -> ConfigFile | None:
    """Load --config before the other options, so its server settings become their defaults."""
    if path is None:
        return None
    try:
        config = load(path)
    except ConfigError as error:  # FILE:LINE: FIELD: what is wrong, on one line
        click.echo(f"opentasks: cannot start: {error}", err=True)
        sys.exit(1)
    defaults = {
        k: v if k in _MULTIPLE else ",".join(map(str, v)) if isinstance(v, list) else v
        for k, v in config.server.items()
    }
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return config


class _ConfigApplier:
    """Applies the queues of --config once the server listens; a failure stops the server."""

    def __init__(self, config: ConfigFile | None) -> None:
        self.config = config
        self.failed = False
        self._job: asyncio.Task[None] | None = None

    def start(self, server: Server) -> None:
        if self.config is not None and self.config.queues:
            self._job = asyncio.ensure_future(self._apply(server, self.config))

    async def _apply(self, server: Server, config: ConfigFile) -> None:
        host = "127.0.0.1" if server.settings.host in ("0.0.0.0", "::", "") else server.settings.host
        tokens = server.settings.api_tokens
        remote = Remote(
            f"{host}:{server.port}",
            config.project or "my-project",
            config.location or "us-central1",
            tokens[0] if tokens else "",
        )
        try:
            await asyncio.to_thread(apply_file, remote, config)
        except Exception as error:
            logging.getLogger("opentasks").error("could not apply the --config file: %s; stopping", error)
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)
