"""Server settings: built once at start-up from flags and ``OPENTASKS_*`` variables, then frozen."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


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
    """A parsed ``--storage`` value."""

    backend: str  # "memory" | "sqlite"
    path: Path | None = None
    synchronous: str = "FULL"

    @classmethod
    def parse(cls, url: str) -> StorageUrl:
        if url in ("memory://", "memory:"):
            return cls("memory")
        if url.startswith("sqlite:///"):
            return cls._sqlite(url)
        if url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "--storage: PostgreSQL is not supported by this version yet; use sqlite:/// or memory://."
            )
        raise ConfigError(
            f"--storage: '{url}' is not a storage URL; use sqlite:///relative.db, "
            "sqlite:////absolute/path.db or memory://."
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

    def describe(self) -> str:
        if self.backend == "memory":
            return "memory:// (nothing is kept after exit)"
        return f"sqlite:///{self.path} (synchronous={self.synchronous})"


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start; see ``opentasks serve --help`` for each field."""

    host: str = "127.0.0.1"
    port: int = 8123
    http_port: int = 8124
    storage: StorageUrl = StorageUrl("memory")
    task_tombstone: timedelta = timedelta(hours=1)
    queue_tombstone: timedelta = timedelta(days=7)
    queue_yaml_task_tombstone: timedelta = timedelta(days=9)
    max_rate_per_queue: float = 500.0
    allowed_locations: frozenset[str] | None = None
    require_https_for_tokens: bool = False
    shutdown_grace: timedelta = timedelta(seconds=10)
    dispatch: bool = True
    app_engine_url: str = "http://127.0.0.1:8080"
    app_engine_services: tuple[tuple[str, str], ...] = ()
    lease_grace: timedelta = timedelta(seconds=30)
    follow_redirects: bool = False
    keys_dir: Path | None = None
    oidc_issuer: str = ""
    oauth_tokens: tuple[tuple[str, str], ...] = ()
    dispatch_deny: tuple[str, ...] = ()
    dispatch_allow: tuple[str, ...] = ()
    default_dispatch_deny: bool = True
    api_tokens: tuple[str, ...] = ()
    api_read_only_tokens: tuple[str, ...] = ()
    insecure_no_auth: bool = False
    max_connections: int = 1000
    read_timeout: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        for label, port in (("--port", self.port), ("--http-port", self.http_port)):
            if not 0 <= port <= 65535:
                raise ConfigError(f"{label}: {port} is not a TCP port (0-65535).")
        if self.max_connections < 1:
            raise ConfigError("--max-connections must be at least 1.")
        if self.read_timeout <= timedelta(0):
            raise ConfigError("--read-timeout must be positive.")
        if self.max_rate_per_queue <= 0:
            raise ConfigError("--max-rate-per-queue must be a positive number of dispatches per second.")
        windows = (self.task_tombstone, self.queue_tombstone, self.queue_yaml_task_tombstone)
        if min(windows) < timedelta(0):
            raise ConfigError("Tombstone windows must not be negative.")
        for label, url in (("--app-engine-url", self.app_engine_url), *self.app_engine_services):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{label}: '{url}' must start with http:// or https://.")
        if not (self.loopback_only or self.api_tokens or self.api_read_only_tokens or self.insecure_no_auth):
            raise ConfigError(
                f"--host {self.host} exposes the API beyond this machine, so it needs API "
                "authentication: set --api-token (or OPENTASKS_API_TOKENS). To run without it "
                "anyway (e.g. behind an authenticating proxy), pass --insecure-no-auth."
            )

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
