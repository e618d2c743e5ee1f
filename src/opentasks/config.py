"""Server settings: built once at start-up from flags and ``OPENTASKS_*`` variables, then frozen."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from opentasks.credentials.tokens import parse_oauth_tokens
from opentasks.domain.routing import parse_service_routes

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
POSTGRES_POOL_SIZE = 10
POSTGRES_CONNECT_TIMEOUT_S = 10.0
POSTGRES_OPTIONS = ("pool_size", "connect_timeout")
"""Options of a postgresql:// URL that opentasks reads itself (the driver never sees them)."""
POSTGRES_DRIVER_OPTIONS = (
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslpassword",
    "target_session_attrs",
    "application_name",
    "search_path",
)
"""Options of a postgresql:// URL passed on to the driver: libpq's, and ``search_path`` (the
schema that holds opentasks' tables, for a database shared with other programs)."""


class ConfigError(ValueError):
    """A setting is invalid; the message names it and says what is expected."""


def parse_duration(text: str, *, setting: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"250ms"`` (a bare number means seconds)."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return timedelta(seconds=float(text))
    match = _DURATION.fullmatch(text)
    if not match:
        raise ConfigError(f"{setting}: '{text}' is not a duration; write e.g. 30s, 15m, 1h or 7d.")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def default_data_dir() -> Path:
    """Where the embedded database lives unless told otherwise (XDG data home)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opentasks"


@dataclass(frozen=True)
class StorageUrl:
    """A parsed ``--storage`` value.

    For PostgreSQL, ``dsn`` is the URL handed to the driver (``postgres://`` spelled
    ``postgresql://``, without the options opentasks reads itself); parts it leaves out come
    from libpq's ``PG*`` environment variables. It holds the password, so it is kept out of
    ``repr`` and :meth:`describe` masks it.
    """

    backend: str  # "memory" | "sqlite" | "postgresql"
    path: Path | None = None
    synchronous: str = "FULL"
    dsn: str | None = field(default=None, repr=False)
    pool_size: int = POSTGRES_POOL_SIZE
    connect_timeout: float = POSTGRES_CONNECT_TIMEOUT_S

    @classmethod
    def parse(cls, url: str) -> StorageUrl:
        if url in ("memory://", "memory:"):
            return cls("memory")
        if url.startswith("sqlite:///"):
            return cls._sqlite(url)
        if url.startswith(("postgresql://", "postgres://")):
            return cls._postgresql(url)
        raise ConfigError(
            f"--storage: '{url}' is not a storage URL; use sqlite:///relative.db, "
            "sqlite:////absolute/path.db, postgresql://user:password@host:5432/database or memory://."
        )

    @classmethod
    def _sqlite(cls, url: str) -> StorageUrl:
        parts = urlsplit(url)
        raw_path = url[len("sqlite:///") :].split("?", 1)[0]
        if not raw_path:
            raise ConfigError("--storage: the sqlite URL names no file; write sqlite:///opentasks.db.")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        synchronous = options.pop("synchronous", "FULL").upper()
        if synchronous not in SQLITE_SYNCHRONOUS:
            raise ConfigError(f"--storage: synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}.")
        if options:
            raise ConfigError(f"--storage: unknown sqlite option(s): {', '.join(sorted(options))}.")
        return cls("sqlite", Path(raw_path), synchronous)

    @classmethod
    def _postgresql(cls, url: str) -> StorageUrl:
        parts = urlsplit("postgresql://" + url.split("://", 1)[1])
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
            _ = parts.port  # raises ValueError for a port that is no number
        except ValueError as error:
            raise ConfigError(f"--storage: the postgresql URL is malformed: {error}.") from None
        ours = {k: v for k, v in pairs if k in POSTGRES_OPTIONS}
        known = (*POSTGRES_OPTIONS, *POSTGRES_DRIVER_OPTIONS)
        unknown = sorted({k for k, _ in pairs if k not in known})
        if unknown:
            accepted = ", ".join(sorted(known))
            raise ConfigError(
                f"--storage: unknown postgresql option(s): {', '.join(unknown)} (accepted: {accepted})."
            )
        pool_size = _positive(ours.get("pool_size", str(POSTGRES_POOL_SIZE)), "pool_size", int)
        timeout = _positive(
            ours.get("connect_timeout", str(POSTGRES_CONNECT_TIMEOUT_S)), "connect_timeout", float
        )
        driver_query = urlencode([(k, v) for k, v in pairs if k not in POSTGRES_OPTIONS])
        dsn = f"postgresql://{parts.netloc}{parts.path}" + (f"?{driver_query}" if driver_query else "")
        return cls("postgresql", dsn=dsn, pool_size=int(pool_size), connect_timeout=float(timeout))

    def describe(self) -> str:
        if self.backend == "memory":
            return "memory:// (nothing is kept after exit)"
        if self.backend == "postgresql":
            return f"{mask_password(self.dsn or 'postgresql://')} (pool_size={self.pool_size})"
        return f"sqlite:///{self.path} (synchronous={self.synchronous})"


def mask_password(url: str) -> str:
    """``url`` with its password (in the user part or a ``password`` option) shown as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, hosts = netloc.rsplit("@", 1)
        if ":" in credentials:
            credentials = credentials.split(":", 1)[0] + ":***"
        netloc = f"{credentials}@{hosts}"
    query = "&".join(
        f"{key}=***" if key == "password" else part
        for part in parts.query.split("&")
        if part
        for key in [part.split("=", 1)[0]]
    )
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _positive(text: str, option: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise ConfigError(
            f"--storage: the postgresql option {option} must be a positive number, not '{text}'."
        )
    return value


@dataclass(frozen=True)
class Option:
    """How one setting is given: its flag, environment variable and config-file key (derived
    from the field name unless set), its help, and how a given value becomes the field's.

    ``kind`` is ``str``, ``int``, ``float``, ``flag`` (on when given), ``switch`` (``--x/--no-x``),
    ``duration``, ``path``, ``choice`` or ``multiple`` (repeatable; the variable is
    space-separated). ``given_default`` is the default as a flag would take it, where it differs
    from the field's (``"1h"`` for a duration); ``shown_default`` replaces it in ``--help``.
    """

    help: str
    kind: str = "str"
    flag: str = ""
    env: str = ""
    key: str = ""
    given_default: Any = None
    shown_default: str | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    secret: bool = False
    to_value: Callable[[Any], Any] | None = None


def _option(default: Any, help: str, **how: Any) -> Any:
    return field(default=default, metadata={"option": Option(help=help, **how)})


_NODE_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")  # a DNS name, a final dot allowed


def _duration_option(default: str, help: str) -> Any:
    return _option(parse_duration(default, setting=default), help, kind="duration", given_default=default)


def _pairs(parse: Callable[[list[str]], dict[str, str]]) -> Callable[[Any], tuple[tuple[str, str], ...]]:
    return lambda entries: tuple(parse(list(entries)).items())


def _locations(text: str) -> frozenset[str] | None:
    return frozenset(x.strip() for x in text.split(",") if x.strip()) or None


def _storage(url: str | None) -> StorageUrl | None:
    return None if url is None else StorageUrl.parse(url)


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


@dataclass(frozen=True)
class Settings:
    """Every setting of the server, each declared once: its type, default and
    :class:`Option` (flag, ``OPENTASKS_*`` variable, config-file key, help). ``opentasks serve``
    derives its flags from these fields and the config file its ``server:`` keys."""

    host: str = _option("127.0.0.1", "Address to listen on.")
    port: int = _option(8123, "gRPC port (0 picks a free one).", kind="int")
    http_port: int = _option(8124, "HTTP port of the REST API (0 picks a free one).", kind="int")
    storage: StorageUrl = _option(
        StorageUrl("memory"),
        "sqlite:///relative.db, sqlite:////abs/path.db (add ?synchronous=normal to trade "
        "power-loss durability for speed), postgresql://user:password@host:5432/database "
        "(?pool_size=N, default 10; missing parts come from PGHOST, PGUSER, ...) or memory://.",
        shown_default="sqlite file in --data-dir",
        to_value=_storage,
    )
    data_dir: Path | None = _option(
        None,
        "Directory of the default SQLite database.",
        kind="path",
        shown_default=str(default_data_dir()),
        to_value=_path,
    )
    task_tombstone: timedelta = _duration_option(
        "1h", "How long a finished or deleted task's name stays reserved."
    )
    queue_tombstone: timedelta = _duration_option("7d", "How long a deleted queue's name stays reserved.")
    queue_yaml_task_tombstone: timedelta = _duration_option(
        "9d", "How long task names stay reserved in queues applied from an App Engine queue.yaml."
    )
    history_retention: timedelta = _duration_option(
        "7d",
        "How long tasks that finished (succeeded, failed for good, deleted, purged) and every "
        "attempt are kept for the dashboard and `opentasks tasks failed`; 0 keeps none.",
    )
    history_response_bytes: int = _option(
        4096,
        "Bytes of each answer's body kept with its attempt (its headers are kept too); 0 keeps none.",
        kind="int",
    )
    max_rate_per_queue: float = _option(
        500.0, "Highest maxDispatchesPerSecond a queue may ask for (Cloud Tasks: 500).", kind="float"
    )
    allowed_locations: frozenset[str] | None = _option(
        None,
        "Comma-separated location IDs to accept for new queues (empty: any).",
        flag="--locations",
        key="locations",
        given_default="",
        shown_default="any",
        to_value=_locations,
    )
    require_https_for_tokens: bool = _option(
        False, "Refuse OIDC/OAuth tasks with http:// URLs even for local hosts.", kind="flag"
    )
    app_engine_url: str = _option(
        "http://127.0.0.1:8080", "Base URL that App Engine tasks are sent to (relativeUri is appended)."
    )
    app_engine_services: tuple[tuple[str, str], ...] = _option(
        (),
        "Base URL of one App Engine service, or of one version as VERSION.SERVICE=URL "
        "(repeatable; the env var takes a space-separated list).",
        kind="multiple",
        flag="--app-engine-service",
        metavar="SERVICE=URL",
        to_value=_pairs(parse_service_routes),
    )
    keys_dir: Path | None = _option(
        None,
        "Directory of the RSA keys that sign OIDC tokens (a key is made on first start).",
        kind="path",
        shown_default="keys/ in --data-dir",
        to_value=_path,
    )
    oidc_issuer: str = _option(
        "",
        "'iss' of OIDC tokens: the public URL that serves /oauth2/v3/certs.",
        shown_default="this server's HTTP address",
    )
    oauth_tokens: tuple[tuple[str, str], ...] = _option(
        (),
        "Bearer token sent for tasks with an OAuth token of service account EMAIL ('*' = any).",
        kind="multiple",
        flag="--oauth-token",
        metavar="EMAIL=TOKEN",
        secret=True,
        to_value=_pairs(parse_oauth_tokens),
    )
    dispatch_deny: tuple[str, ...] = _option(
        (),
        "Never send tasks to this network (10.0.0.0/8) or host (*.corp.example); repeatable.",
        kind="multiple",
        metavar="NETWORK|HOST",
    )
    dispatch_allow: tuple[str, ...] = _option(
        (),
        "Send tasks only to these networks or hosts (repeatable; default: anywhere not denied).",
        kind="multiple",
        metavar="NETWORK|HOST",
    )
    default_dispatch_deny: bool = _option(
        True,
        "Deny link-local addresses and cloud metadata servers (169.254.0.0/16, "
        "metadata.google.internal, ...).",
        kind="switch",
    )
    api_tokens: tuple[str, ...] = _option(
        (),
        "Require this bearer token / API key on every API call (repeatable; prefer the env var, "
        "space-separated, over flags that show in ps).",
        kind="multiple",
        flag="--api-token",
        secret=True,
    )
    api_read_only_tokens: tuple[str, ...] = _option(
        (),
        "A token that may only call Get/List RPCs (repeatable).",
        kind="multiple",
        flag="--api-read-only-token",
        secret=True,
    )
    allowed_hosts: tuple[str, ...] = _option(
        (),
        "Without API tokens, also answer HTTP calls by this host name (e.g. a compose service "
        "name; repeatable; * for any). localhost and IP addresses are always answered; other "
        "names are refused so that no web site can reach the server through DNS rebinding.",
        kind="multiple",
        flag="--allowed-host",
        metavar="NAME",
    )
    insecure_no_auth: bool = _option(
        False,
        "Listen on a non-loopback --host without API authentication (e.g. behind an "
        "authenticating proxy). Anyone who reaches the port can then manage every queue.",
        kind="flag",
    )
    max_connections: int = _option(
        1000, "Most client connections held open on each port (gRPC and HTTP); more are refused.", kind="int"
    )
    read_timeout: timedelta = _duration_option(
        "60s",
        "How long a client may take to send a whole request; HTTP connections idle that long are closed.",
    )
    lease_grace: timedelta = _duration_option(
        "30s",
        "Added to a task's dispatch deadline: an attempt silent for that long is considered lost "
        "and the task is dispatched again.",
    )
    shutdown_grace: timedelta = _duration_option(
        "10s", "On SIGTERM/SIGINT, how long attempts in flight and calls in progress may take to finish."
    )
    follow_redirects: bool = _option(
        False, "Follow 3xx answers of HTTP targets (Cloud Tasks counts them as failed attempts).", kind="flag"
    )
    dispatch: bool = _option(
        True,
        "Store tasks but never send them (to inspect what an application enqueues).",
        kind="flag",
        flag="--no-dispatch",
        key="no_dispatch",
        given_default=False,
        to_value=lambda no_dispatch: not no_dispatch,
    )
    node_id: str | None = _option(
        None,
        "This server's name among the nodes sharing a PostgreSQL database (shown by "
        "'opentasks nodes list'); unique per running server.",
        shown_default="host-pid-random",
    )
    node_lease: timedelta = _duration_option(
        "6s",
        "How long a node's hold on its queues lasts without a heartbeat (sent every quarter of "
        "it): a node that dies has its queues dispatched by another within about this time.",
    )
    metrics_port: int | None = _option(
        None,
        "Serve GET /metrics on this port of its own instead of the HTTP port (0 picks a free one).",
        kind="int",
        shown_default="on the HTTP port",
    )
    dashboard: bool = _option(
        True,
        "Serve the web dashboard at /ui/ on the HTTP port (with API tokens set, visitors log in "
        "with one; a read-only token only looks).",
        kind="switch",
    )
    access_log: bool = _option(False, "Log every API call (method, status, duration, caller).", kind="flag")
    log_level: str = _option("INFO", "", kind="choice", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = _option(
        "text",
        "text: one readable line per record; json: one JSON object per line (time, level, logger, "
        "message and structured fields such as queue, task, attempt, status).",
        kind="choice",
        choices=("text", "json"),
    )

    def __post_init__(self) -> None:
        ports = (
            ("--port", self.port),
            ("--http-port", self.http_port),
            ("--metrics-port", self.metrics_port),
        )
        for label, port in ((label, port) for label, port in ports if port is not None):
            if not 0 <= port <= 65535:
                raise ConfigError(f"{label}: {port} is not a TCP port (0-65535).")
        if self.max_connections < 1:
            raise ConfigError("--max-connections must be at least 1.")
        if self.read_timeout <= timedelta(0):
            raise ConfigError("--read-timeout must be positive.")
        if self.max_rate_per_queue <= 0:
            raise ConfigError("--max-rate-per-queue must be a positive number of dispatches per second.")
        self._check_node()
        self._check_allowed_hosts()
        self._check_windows()
        for label, url in (("--app-engine-url", self.app_engine_url), *self.app_engine_services):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{label}: '{url}' must start with http:// or https://.")
        if not (self.loopback_only or self.api_tokens or self.api_read_only_tokens or self.insecure_no_auth):
            raise ConfigError(
                f"--host {self.host} exposes the API beyond this machine, so it needs API "
                "authentication: set --api-token (or OPENTASKS_API_TOKENS). To run without it "
                "anyway (e.g. behind an authenticating proxy), pass --insecure-no-auth."
            )

    def _check_windows(self) -> None:
        windows = (self.task_tombstone, self.queue_tombstone, self.queue_yaml_task_tombstone)
        if min(windows) < timedelta(0):
            raise ConfigError("Tombstone windows must not be negative.")
        if self.history_retention < timedelta(0):
            raise ConfigError("--history-retention must not be negative (0 keeps no history).")
        if not 0 <= self.history_response_bytes <= 1_048_576:
            raise ConfigError("--history-response-bytes must be between 0 and 1048576.")

    def _check_allowed_hosts(self) -> None:
        for name in self.allowed_hosts:
            if name != "*" and not _HOST_NAME.fullmatch(name):
                raise ConfigError(
                    f"--allowed-host takes a host name such as opentasks or tasks.example.com (no "
                    f"scheme, port or path), or * for any; got {name!r}."
                )

    def _check_node(self) -> None:
        if self.node_lease < timedelta(seconds=1):
            raise ConfigError("--node-lease must be at least 1s (heartbeats go every quarter of it).")
        if self.node_id is not None and not _NODE_ID.fullmatch(self.node_id):
            raise ConfigError("--node-id: use 1 to 100 letters, digits, '.', '_', ':' or '-' (no spaces).")

    @property
    def loopback_only(self) -> bool:
        """True when the server listens on a loopback address only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    def issuer(self, http_port: int) -> str:
        """``iss`` of OIDC tokens and the base URL of the published keys (``--oidc-issuer``, else
        this server's HTTP address)."""
        if self.oidc_issuer:
            return self.oidc_issuer.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{http_port}"


def options() -> list[tuple[str, Option, Any]]:
    """(field name, :class:`Option`, the default a flag takes) of every setting, in order."""
    found = []
    for setting in fields(Settings):
        option = setting.metadata.get("option")
        if isinstance(option, Option):
            given = option.given_default if option.given_default is not None else setting.default
            if option.kind == "multiple" or option.to_value in (_storage, _path):
                given = option.given_default
            found.append((setting.name, option, given))
    return found


def flag_of(name: str, option: Option) -> str:
    return option.flag or "--" + name.replace("_", "-")


def env_of(name: str, option: Option) -> str:
    return option.env or "OPENTASKS_" + (option.key or name).upper()


def file_keys() -> dict[str, str]:
    """Config-file key -> setting name, for the ``server:`` section."""
    return {option.key or name: name for name, option, _ in options()}


def settings_from_options(given: Mapping[str, Any]) -> Settings:
    """The settings from the values given to ``opentasks serve`` (by flag, variable, config file or
    default), keyed by setting name. The default database and keys live in ``data_dir``."""
    values: dict[str, Any] = {}
    for name, option, _ in options():
        if name in given:
            raw = given[name]
            values[name] = option.to_value(raw) if option.to_value is not None else raw
    data = values.get("data_dir") or default_data_dir()
    if values.get("storage") is None:
        values["storage"] = StorageUrl.parse(f"sqlite:///{data}/opentasks.db")
    if values.get("keys_dir") is None:
        values["keys_dir"] = data / "keys"
    values.setdefault("log_level", "INFO")
    values["log_level"] = str(values["log_level"]).upper()
    values["log_format"] = str(values.get("log_format", "text")).lower()
    return Settings(**values)
