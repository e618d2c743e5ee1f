"""``opentasks serve``: start the server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from opentasks.app import Server, target_policy
from opentasks.app import serve as run_server
from opentasks.cli.apply import apply_file
from opentasks.cli.params import duration as _duration
from opentasks.cli.remote import Remote
from opentasks.config import ConfigError, Settings, StorageUrl, default_data_dir
from opentasks.config_file import ConfigFile, load
from opentasks.credentials.tokens import parse_oauth_tokens
from opentasks.domain.routing import parse_service_routes
from opentasks.errors import InvalidArgument


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
@click.option(
    "--host", default="127.0.0.1", envvar="OPENTASKS_HOST", show_envvar=True, help="Address to listen on."
)
@click.option(
    "--port",
    default=8123,
    type=int,
    envvar="OPENTASKS_PORT",
    show_envvar=True,
    help="gRPC port (0 picks a free one).",
)
@click.option(
    "--http-port",
    default=8124,
    type=int,
    envvar="OPENTASKS_HTTP_PORT",
    show_envvar=True,
    help="HTTP port of the REST API (0 picks a free one).",
)
@click.option(
    "--storage",
    default=None,
    envvar="OPENTASKS_STORAGE",
    show_envvar=True,
    help="sqlite:///relative.db, sqlite:////abs/path.db (add ?synchronous=normal to trade "
    "power-loss durability for speed) or memory://.  [default: sqlite file in --data-dir]",
)
@click.option(
    "--data-dir",
    default=None,
    envvar="OPENTASKS_DATA_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False),
    help=f"Directory of the default SQLite database.  [default: {default_data_dir()}]",
)
@click.option(
    "--task-tombstone",
    default="1h",
    type=_duration("--task-tombstone"),
    envvar="OPENTASKS_TASK_TOMBSTONE",
    show_envvar=True,
    help="How long a finished or deleted task's name stays reserved.",
)
@click.option(
    "--queue-tombstone",
    default="7d",
    type=_duration("--queue-tombstone"),
    envvar="OPENTASKS_QUEUE_TOMBSTONE",
    show_envvar=True,
    help="How long a deleted queue's name stays reserved.",
)
@click.option(
    "--queue-yaml-task-tombstone",
    default="9d",
    type=_duration("--queue-yaml-task-tombstone"),
    envvar="OPENTASKS_QUEUE_YAML_TASK_TOMBSTONE",
    show_envvar=True,
    help="How long task names stay reserved in queues applied from an App Engine queue.yaml.",
)
@click.option(
    "--max-rate-per-queue",
    default=500.0,
    type=float,
    envvar="OPENTASKS_MAX_RATE_PER_QUEUE",
    show_envvar=True,
    help="Highest maxDispatchesPerSecond a queue may ask for (Cloud Tasks: 500).",
)
@click.option(
    "--locations",
    default="",
    envvar="OPENTASKS_LOCATIONS",
    show_envvar=True,
    help="Comma-separated location IDs to accept for new queues (empty: any).",
)
@click.option(
    "--require-https-for-tokens",
    is_flag=True,
    envvar="OPENTASKS_REQUIRE_HTTPS_FOR_TOKENS",
    show_envvar=True,
    help="Refuse OIDC/OAuth tasks with http:// URLs even for local hosts.",
)
@click.option(
    "--app-engine-url",
    default="http://127.0.0.1:8080",
    envvar="OPENTASKS_APP_ENGINE_URL",
    show_envvar=True,
    help="Base URL that App Engine tasks are sent to (relativeUri is appended).",
)
@click.option(
    "--app-engine-service",
    "app_engine_services",
    multiple=True,
    metavar="SERVICE=URL",
    envvar="OPENTASKS_APP_ENGINE_SERVICES",
    show_envvar=True,
    help="Base URL of one App Engine service, or of one version as VERSION.SERVICE=URL "
    "(repeatable; the env var takes a space-separated list).",
)
@click.option(
    "--keys-dir",
    default=None,
    envvar="OPENTASKS_KEYS_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the RSA keys that sign OIDC tokens (a key is made on first start). "
    "[default: keys/ in --data-dir]",
)
@click.option(
    "--oidc-issuer",
    default="",
    envvar="OPENTASKS_OIDC_ISSUER",
    show_envvar=True,
    help="'iss' of OIDC tokens: the public URL that serves /oauth2/v3/certs.  "
    "[default: this server's HTTP address]",
)
@click.option(
    "--oauth-token",
    "oauth_tokens",
    multiple=True,
    metavar="EMAIL=TOKEN",
    envvar="OPENTASKS_OAUTH_TOKENS",
    show_envvar=True,
    help="Bearer token sent for tasks with an OAuth token of service account EMAIL ('*' = any).",
)
@click.option(
    "--dispatch-deny",
    multiple=True,
    metavar="NETWORK|HOST",
    envvar="OPENTASKS_DISPATCH_DENY",
    show_envvar=True,
    help="Never send tasks to this network (10.0.0.0/8) or host (*.corp.example); repeatable.",
)
@click.option(
    "--dispatch-allow",
    multiple=True,
    metavar="NETWORK|HOST",
    envvar="OPENTASKS_DISPATCH_ALLOW",
    show_envvar=True,
    help="Send tasks only to these networks or hosts (repeatable; default: anywhere not denied).",
)
@click.option(
    "--default-dispatch-deny/--no-default-dispatch-deny",
    default=True,
    envvar="OPENTASKS_DEFAULT_DISPATCH_DENY",
    show_envvar=True,
    help="Deny link-local addresses and cloud metadata servers (169.254.0.0/16, "
    "metadata.google.internal, ...).",
)
@click.option(
    "--api-token",
    "api_tokens",
    multiple=True,
    envvar="OPENTASKS_API_TOKENS",
    show_envvar=True,
    show_default=False,
    help="Require this bearer token / API key on every API call (repeatable; prefer the env var, "
    "space-separated, over flags that show in ps).",
)
@click.option(
    "--api-read-only-token",
    "api_read_only_tokens",
    multiple=True,
    envvar="OPENTASKS_API_READ_ONLY_TOKENS",
    show_envvar=True,
    show_default=False,
    help="A token that may only call Get/List RPCs (repeatable).",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    envvar="OPENTASKS_INSECURE_NO_AUTH",
    show_envvar=True,
    help="Listen on a non-loopback --host without API authentication (e.g. behind an "
    "authenticating proxy). Anyone who reaches the port can then manage every queue.",
)
@click.option(
    "--max-connections",
    default=1000,
    type=click.IntRange(min=1),
    envvar="OPENTASKS_MAX_CONNECTIONS",
    show_envvar=True,
    help="Most client connections held open on each port (gRPC and HTTP); more are refused.",
)
@click.option(
    "--read-timeout",
    default="60s",
    type=_duration("--read-timeout"),
    envvar="OPENTASKS_READ_TIMEOUT",
    show_envvar=True,
    help="How long a client may take to send a whole request; HTTP connections idle that long are closed.",
)
@click.option(
    "--lease-grace",
    default="30s",
    type=_duration("--lease-grace"),
    envvar="OPENTASKS_LEASE_GRACE",
    show_envvar=True,
    help="Added to a task's dispatch deadline: an attempt silent for that long is considered lost "
    "and the task is dispatched again.",
)
@click.option(
    "--shutdown-grace",
    default="10s",
    type=_duration("--shutdown-grace"),
    envvar="OPENTASKS_SHUTDOWN_GRACE",
    show_envvar=True,
    help="On SIGTERM/SIGINT, how long attempts in flight and calls in progress may take to finish.",
)
@click.option(
    "--follow-redirects",
    is_flag=True,
    envvar="OPENTASKS_FOLLOW_REDIRECTS",
    show_envvar=True,
    help="Follow 3xx answers of HTTP targets (Cloud Tasks counts them as failed attempts).",
)
@click.option(
    "--no-dispatch",
    is_flag=True,
    envvar="OPENTASKS_NO_DISPATCH",
    show_envvar=True,
    help="Store tasks but never send them (to inspect what an application enqueues).",
)
@click.option(
    "--log-level",
    default="INFO",
    envvar="OPENTASKS_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def serve(  # noqa: PLR0917 - click passes every option as an argument
    config_file: ConfigFile | None,
    host: str,
    port: int,
    http_port: int,
    storage: str | None,
    data_dir: str | None,
    task_tombstone: timedelta,
    queue_tombstone: timedelta,
    queue_yaml_task_tombstone: timedelta,
    max_rate_per_queue: float,
    locations: str,
    require_https_for_tokens: bool,
    app_engine_url: str,
    app_engine_services: tuple[str, ...],
    keys_dir: Path | None,
    oidc_issuer: str,
    oauth_tokens: tuple[str, ...],
    dispatch_deny: tuple[str, ...],
    dispatch_allow: tuple[str, ...],
    default_dispatch_deny: bool,
    api_tokens: tuple[str, ...],
    api_read_only_tokens: tuple[str, ...],
    insecure_no_auth: bool,
    max_connections: int,
    read_timeout: timedelta,
    lease_grace: timedelta,
    shutdown_grace: timedelta,
    follow_redirects: bool,
    no_dispatch: bool,
    log_level: str,
) -> None:
    """Start the server (gRPC API of Cloud Tasks v2)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        data = default_data_dir() if data_dir is None else Path(data_dir)
        url = storage or f"sqlite:///{data}/opentasks.db"
        allowed = frozenset(x.strip() for x in locations.split(",") if x.strip()) or None
        settings = Settings(
            host=host,
            port=port,
            http_port=http_port,
            storage=StorageUrl.parse(url),
            task_tombstone=task_tombstone,
            queue_tombstone=queue_tombstone,
            queue_yaml_task_tombstone=queue_yaml_task_tombstone,
            max_rate_per_queue=max_rate_per_queue,
            allowed_locations=allowed,
            require_https_for_tokens=require_https_for_tokens,
            app_engine_url=app_engine_url,
            app_engine_services=tuple(parse_service_routes(list(app_engine_services)).items()),
            keys_dir=keys_dir or data / "keys",
            oidc_issuer=oidc_issuer,
            oauth_tokens=tuple(parse_oauth_tokens(list(oauth_tokens)).items()),
            dispatch_deny=dispatch_deny,
            dispatch_allow=dispatch_allow,
            default_dispatch_deny=default_dispatch_deny,
            api_tokens=api_tokens,
            api_read_only_tokens=api_read_only_tokens,
            insecure_no_auth=insecure_no_auth,
            max_connections=max_connections,
            read_timeout=read_timeout,
            lease_grace=lease_grace,
            shutdown_grace=shutdown_grace,
            follow_redirects=follow_redirects,
            dispatch=not no_dispatch,
        )
        target_policy(settings)  # a bad --dispatch-allow/-deny entry fails here, not at dispatch
    except (ConfigError, InvalidArgument, ValueError) as error:
        raise click.UsageError(str(error)) from None
    applied = _ConfigApplier(config_file)
    try:
        _run(run_server(settings, on_ready=applied.start))
    except (OSError, RuntimeError) as error:  # e.g. the port is taken
        click.echo(f"opentasks: cannot start: {error}", err=True)
        sys.exit(1)
    if applied.failed:
        sys.exit(1)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (faster I/O), else on asyncio's own loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# Options given more than once; a config file lists their values.
_MULTIPLE = frozenset(
    {
        "app_engine_services",
        "oauth_tokens",
        "dispatch_deny",
        "dispatch_allow",
        "api_tokens",
        "api_read_only_tokens",
    }
)


def _read_config(ctx: click.Context, path: Path | None) -> ConfigFile | None:
    """Load --config before the other options, so its server settings become their defaults."""
    if path is None:
        return None
    try:
        config = load(path)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--config") from None
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
            logging.getLogger("opentasks").error("could not apply %s: %s; stopping", config.path, error)
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)
