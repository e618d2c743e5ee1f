"""The composition root: settings -> clock, store, services, servers. The only place that
chooses concrete backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from opentasks.api import discovery
from opentasks.api.auth import ApiAuth
from opentasks.api.cloud_tasks_grpc import CloudTasksApi, handlers
from opentasks.api.health import GrpcHealth
from opentasks.api.health import add_routes as add_health_routes
from opentasks.api.history_rest import add_history_routes
from opentasks.api.http_server import BoundedSite
from opentasks.api.origins import HostPolicy
from opentasks.api.rest import RestApi, error_response
from opentasks.api.shared_port import socket_dir
from opentasks.api.v2beta3 import CloudTasksV2beta3Api
from opentasks.api.v2beta3 import handlers as v2beta3_handlers
from opentasks.clock import Clock, SystemClock
from opentasks.config import ConfigError, Settings, StorageUrl, default_data_dir
from opentasks.credentials.keys import KeyRing
from opentasks.credentials.tokens import TokenMinter
from opentasks.domain.history import HistoryPolicy
from opentasks.domain.limits import Limits
from opentasks.domain.ownership import LeaseTiming
from opentasks.domain.routing import AppEngineRoutes
from opentasks.domain.target_policy import DEFAULT_DENY, TargetPolicy
from opentasks.metrics import start_metrics_server
from opentasks.observability import Observability
from opentasks.service import paging
from opentasks.service.dashboard import DashboardService
from opentasks.service.dispatcher import Dispatcher, DispatchSettings
from opentasks.service.health import Readiness
from opentasks.service.history import HistoryService
from opentasks.service.locations import LocationService
from opentasks.service.observers import Observers
from opentasks.service.outcomes import OutcomeCounter
from opentasks.service.ownership import NodeSettings
from opentasks.service.pusher import Http1Pusher
from opentasks.service.queues import QueueService
from opentasks.service.tasks import TaskService
from opentasks.service.windows import TombstonePolicy
from opentasks.storage.base import Store
from opentasks.storage.memory import MemoryStore
from opentasks.storage.postgres import PostgresStore
from opentasks.storage.sqlite import SqliteStore
from opentasks.version import package_version
from opentasks.web import add_dashboard

_log = logging.getLogger("opentasks")
GRPC_MAX_CONNECTION_IDLE_MS = 5 * 60 * 1000


def build_store(url: StorageUrl, *, migrate: bool = True) -> Store:
    """The store a storage URL names; ConfigError for a backend this server does not have.
    ``migrate=False`` (tools that only read) opens a PostgreSQL database without upgrading
    its schema."""
    match url.backend:
        case "memory":
            return MemoryStore()
        case "sqlite" if url.path is not None:
            return SqliteStore(url.path, synchronous=url.synchronous)
        case "sqlite":
            raise ConfigError("--storage: the sqlite URL names no file; write sqlite:///opentasks.db.")
        case "postgresql" if url.dsn is not None:
            return PostgresStore(
                url.dsn, pool_size=url.pool_size, connect_timeout=url.connect_timeout, migrate=migrate
            )
        case "postgresql":
            raise ConfigError(
                "--storage: the postgresql URL is missing; write postgresql://user@host/database."
            )
        case _:
            raise ConfigError(
                f"--storage: unknown storage backend '{url.backend}'; use sqlite:///path.db, "
                "postgresql://user@host/database or memory://."
            )


@dataclass
class Services:
    queues: QueueService
    tasks: TaskService
    locations: LocationService
    history: HistoryService


def tombstone_policy(settings: Settings) -> TombstonePolicy:
    return TombstonePolicy(
        task=settings.task_tombstone,
        queue=settings.queue_tombstone,
        queue_yaml_task=settings.queue_yaml_task_tombstone,
        history=history_policy(settings),
    )


def history_policy(settings: Settings) -> HistoryPolicy:
    return HistoryPolicy(settings.history_retention, settings.history_response_bytes)


def _kept_response_bytes(settings: Settings) -> int | None:
    policy = history_policy(settings)
    return policy.response_bytes if policy.enabled else None


def app_engine_routes(settings: Settings) -> AppEngineRoutes:
    return AppEngineRoutes(settings.app_engine_url, dict(settings.app_engine_services))


def target_policy(settings: Settings) -> TargetPolicy:
    deny = (DEFAULT_DENY if settings.default_dispatch_deny else ()) + settings.dispatch_deny
    return TargetPolicy(deny=deny, allow=settings.dispatch_allow)


def api_auth(settings: Settings) -> ApiAuth | None:
    if not (settings.api_tokens or settings.api_read_only_tokens):
        return None
    return ApiAuth(settings.api_tokens, settings.api_read_only_tokens)


def build_minter(settings: Settings, clock: Clock) -> TokenMinter:
    """OIDC signing with the keys of ``keys_dir`` (made on first use); the issuer is set at start."""
    keys = KeyRing(settings.keys_dir or default_data_dir() / "keys", clock=clock)
    return TokenMinter(keys, settings.issuer(settings.http_port), dict(settings.oauth_tokens))


def build_dispatcher(
    settings: Settings, store: Store, clock: Clock, minter: TokenMinter, observers: Observers | None = None
) -> Dispatcher:
    dispatch_settings = DispatchSettings(
        app_engine=app_engine_routes(settings),
        lease_grace=settings.lease_grace,
        shutdown_grace=settings.shutdown_grace,
        follow_redirects=settings.follow_redirects,
        max_attempts_in_flight=attempts_in_flight(resource.getrlimit(resource.RLIMIT_NOFILE)[0], settings),
    )
    node = NodeSettings(timing=LeaseTiming(settings.node_lease))
    if settings.node_id is not None:
        node = replace(node, node_id=settings.node_id)
    targets = target_policy(settings)
    return Dispatcher(
        store,
        clock,
        Http1Pusher(targets, clock=clock, keep_response_bytes=_kept_response_bytes(settings)),
        tombstones=tombstone_policy(settings),
        settings=dispatch_settings,
        credentials=minter,
        targets=targets,
        observers=observers,
        node=node,
    )


def build_services(
    settings: Settings,
    store: Store,
    clock: Clock,
    dispatcher: Dispatcher | None = None,
    observers: Observers | None = None,
) -> Services:
    limits = Limits(
        max_dispatches_per_second=settings.max_rate_per_queue,
        require_https_for_tokens=settings.require_https_for_tokens,
    )
    tombstones = tombstone_policy(settings)
    targets, routes = target_policy(settings), app_engine_routes(settings)
    tasks = TaskService(
        store,
        clock,
        limits=limits,
        tombstones=tombstones,
        events=dispatcher,
        runner=dispatcher,
        targets=targets,
        app_engine=routes,
        observers=observers,
    )
    return Services(
        queues=QueueService(
            store,
            clock,
            limits=limits,
            tombstones=tombstones,
            allowed_locations=settings.allowed_locations,
            events=dispatcher,
            targets=targets,
            app_engine=routes,
            observers=observers,
        ),
        tasks=tasks,
        locations=LocationService(store, allowed_locations=settings.allowed_locations),
        history=HistoryService(store, clock, tasks),
    )


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC server's bounds: message size, connections, and how long a connection may idle or
    take to start. Streams per connection are not capped: gRPC's core then refuses streams that
    well-behaved clients open (REFUSED_STREAM, seen by them as UNAVAILABLE) even at 64 in flight."""
    read_timeout_ms = int(settings.read_timeout.total_seconds() * 1000)
    return [
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.server_handshake_timeout_ms", read_timeout_ms),
        ("grpc.max_connection_idle_ms", max(read_timeout_ms, GRPC_MAX_CONNECTION_IDLE_MS)),
    ]


HEALTH_SERVICES = ("google.cloud.tasks.v2.CloudTasks", "google.cloud.tasks.v2beta3.CloudTasks")


def startup_summary(
    settings: Settings, port: int, http_port: int, *, api_auth: bool
) -> tuple[str, dict[str, Any]]:
    """The start-up log line, and its facts as structured fields (for --log-format json)."""
    fields: dict[str, Any] = {
        "version": package_version(),
        "host": settings.host,
        "grpc_port": port,
        "http_port": http_port,
        "storage": settings.storage.describe(),
        "dispatch": settings.dispatch,
        "api_auth": api_auth,
    }
    if settings.dispatch:
        fields |= {
            "max_rate_per_queue": settings.max_rate_per_queue,
            "follow_redirects": settings.follow_redirects,
            "lease_grace_s": settings.lease_grace.total_seconds(),
            "shutdown_grace_s": settings.shutdown_grace.total_seconds(),
        }
        dispatch = (
            f"dispatching (rate cap {settings.max_rate_per_queue:g}/s per queue, "
            f"redirects {'followed' if settings.follow_redirects else 'not followed'}, "
            f"lease grace {settings.lease_grace.total_seconds():g} s, "
            f"shutdown grace {settings.shutdown_grace.total_seconds():g} s)"
        )
    else:
        dispatch = "not dispatching (--no-dispatch)"
    message = (
        f"opentasks {fields['version']} listening on {settings.host}:{port} (gRPC) and :{http_port} "
        f"(HTTP and gRPC), storage {fields['storage']}, {dispatch}, "
        f"API authentication {'on' if api_auth else 'off'}"
    )
    if settings.dashboard:
        fields["dashboard"] = dashboard_url(settings.host, http_port)
        message += f", dashboard at {fields['dashboard']}"
    return message, fields


def dashboard_url(host: str, http_port: int) -> str:
    """Where the dashboard of a server listening on ``host`` is opened (a wildcard address is
    shown as loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{http_port}/ui/"


class Server:
    """A running opentasks: store opened, gRPC listening."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.store = store or build_store(settings.storage)
        self.minter = build_minter(settings, self.clock)
        self.observability = Observability.build(self.clock, access_log=settings.access_log)
        observers = self.observability.observers
        self.dispatcher = (
            build_dispatcher(settings, self.store, self.clock, self.minter, observers)
            if settings.dispatch
            else None
        )
        self.services = build_services(settings, self.store, self.clock, self.dispatcher, observers)
        self.insights = self.observability.insights(self.store, self.dispatcher)
        self.outcomes: OutcomeCounter | None = None
        if self.dispatcher is not None:
            ownership = self.dispatcher.ownership
            self.observability.metrics.use_node(lambda: len(ownership.held), ownership.proven)
            # The dashboard's chart of the last hour: attempts ended per queue and minute.
            self.outcomes = OutcomeCounter(self.store, self.clock, ownership.node_id)
            observers.subscribe(self.outcomes)
        if isinstance(self.store, SqliteStore):
            self.store.observe_commits(self.observability.metrics.store_commit, self.clock.monotonic)
        self.auth = api_auth(settings)
        self._metrics_http: web.AppRunner | None = None
        self._page_key = b""
        self._started = False  # the start-up line was written (stop() then writes its own)
        self.port = settings.port
        self.http_port = settings.http_port
        self._http: web.AppRunner | None = None
        self._grpc_dir: Path | None = None
        # Two gRPC servers with the same services: one on the gRPC port, one on the Unix socket
        # the HTTP port relays to, so that each port keeps its own connection limit.
        self._grpc, self._relayed_grpc = (
            grpc.aio.server(
                options=grpc_options(settings), interceptors=[self.observability.interceptor(self.auth)]
            )
            for _ in range(2)
        )
        self._dispatching = False
        self.readiness = Readiness(
            self.store, self.clock, dispatching=(lambda: self._dispatching) if self.dispatcher else None
        )
        self.health = GrpcHealth(self.readiness, self.clock, HEALTH_SERVICES)

    async def start(self) -> None:
        await self.store.open()
        self._page_key = await self.store.page_token_key()
        paging.set_signing_key(self._page_key)  # shared by all the nodes
        if self.dispatcher is not None:
            await self.dispatcher.recover()
        await asyncio.to_thread(self.minter.keys.load)
        services = self.services
        api = CloudTasksApi(services.queues, services.tasks, services.locations, self.clock)
        auth = self.auth
        v2beta3 = CloudTasksV2beta3Api(api, self.insights)
        for server in (self._grpc, self._relayed_grpc):
            server.add_generic_rpc_handlers(handlers(api, auth))
            server.add_generic_rpc_handlers(v2beta3_handlers(v2beta3, auth))
            self.health.add_to(server)
        self.port = self._grpc.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        grpc_path = self._relay_socket()
        await self._grpc.start()
        if grpc_path is not None:
            await self._relayed_grpc.start()
        self.health.start()
        minter = self.minter
        read_timeout = self.settings.read_timeout.total_seconds()
        hosts = self.host_policy
        app = RestApi(api, auth, read_timeout_s=read_timeout, v2beta3=v2beta3, hosts=hosts).app(
            extra_routes=lambda app: self._extra_routes(app, minter)
        )
        # aiohttp's keep-alive timer also closes a new connection that sends no whole request in time.
        self._http = web.AppRunner(app, access_log=None, keepalive_timeout=read_timeout)
        await self._http.setup()
        site = BoundedSite(
            self._http,
            self.settings.host,
            self.settings.http_port,
            max_connections=self.settings.max_connections,
            monotonic=self.clock.monotonic,
            grpc_path=grpc_path,
            read_timeout_s=read_timeout,
        )
        await site.start()
        self.http_port = self._http.addresses[0][1]
        self.minter.issuer = self.settings.issuer(self.http_port)
        if self.dispatcher is not None:
            self.dispatcher.ownership.address = (
                f"{socket.gethostname()} grpc:{self.port} http:{self.http_port}"
            )
            await self.dispatcher.start()
            self._dispatching = True
        if self.outcomes is not None:
            await self.outcomes.start()
        if self.settings.metrics_port is not None:
            metrics = self.observability.metrics
            self._metrics_http = await start_metrics_server(
                metrics, self.settings.host, self.settings.metrics_port
            )
            address = self._metrics_http.addresses[0]
            _log.info("metrics on http://%s:%d/metrics", address[0], address[1])
        if auth is None and not self.settings.loopback_only:
            _log.warning(
                "API AUTHENTICATION IS OFF (--insecure-no-auth) and the server listens on %s: "
                "anyone who can reach it can create, read and delete tasks",
                self.settings.host,
            )
        message, fields = startup_summary(self.settings, self.port, self.http_port, api_auth=auth is not None)
        _log.info("%s", message, extra=fields)
        self._started = True

    def _extra_routes(self, app: web.Application, minter: TokenMinter) -> None:
        """Routes of the HTTP port beside the Cloud Tasks API: kept history (with the API's
        authentication), OIDC discovery, health, metrics and the dashboard."""
        add_history_routes(app, self.services.history, self.auth, error_response, self.host_policy)
        if self.settings.dashboard:
            self._add_dashboard(app)
        discovery.add_routes(app, minter.keys, lambda: minter.issuer)
        add_health_routes(app, self.readiness)
        # GET /metrics on the HTTP port, unless it has a port of its own.
        self.observability.add_to_http_app(app, self.auth, metrics=self.settings.metrics_port is None)

    def _add_dashboard(self, app: web.Application) -> None:
        services = self.services
        dashboard = DashboardService(
            self.store,
            self.clock,
            queues=services.queues,
            tasks=services.tasks,
            history=services.history,
            insights=self.insights,
            lease_grace=self.settings.lease_grace,
        )
        add_dashboard(
            app,
            dashboard,
            key=self._page_key,
            tokens=self.settings.api_tokens,
            read_only_tokens=self.settings.api_read_only_tokens,
            monotonic=self.clock.monotonic,
            allowed_hosts=self.host_policy.allowed,
        )

    @property
    def host_policy(self) -> HostPolicy:
        """The host names the HTTP port answers (without tokens: local ones and those allowed)."""
        return HostPolicy.of(self.settings.allowed_hosts, auth_on=self.auth is not None)

    def _relay_socket(self) -> str | None:
        """The Unix socket gRPC clients of the HTTP port are relayed to (in a directory only this
        user may enter); None, with a warning, when it cannot be made: gRPC is then served on
        the gRPC port alone."""
        self._grpc_dir = socket_dir()
        if self._grpc_dir is not None:
            path = str(self._grpc_dir / "grpc.sock")
            try:
                self._relayed_grpc.add_insecure_port(f"unix:{path}")
            except RuntimeError as error:
                _log.warning("gRPC is served on the gRPC port only: no socket for the HTTP port (%s)", error)
                return None
            return path
        _log.warning("gRPC is served on the gRPC port only: no private directory for its socket")
        return None

    async def stop(self) -> None:
        """Stop claiming tasks and let attempts in flight finish (bounded), then stop taking
        calls, let running ones finish (bounded), and close the store."""
        self.readiness.stopping = True
        await self.health.stop()  # NOT_SERVING while draining
        self._dispatching = False
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.outcomes is not None:
            await self.outcomes.stop()  # after the dispatcher: its last attempts are counted
        if self._http is not None:
            await self._http.cleanup()
        if self._metrics_http is not None:
            await self._metrics_http.cleanup()
        grace = self.settings.shutdown_grace.total_seconds()
        await asyncio.gather(self._grpc.stop(grace), self._relayed_grpc.stop(grace))
        if self._grpc_dir is not None:
            shutil.rmtree(self._grpc_dir, ignore_errors=True)
        await self.store.close()
        if self._started:
            _log.info("opentasks stopped")


async def serve(settings: Settings, *, on_ready: Callable[[Server], None] | None = None) -> None:
    """Run until SIGINT or SIGTERM."""
    _raise_open_files_limit(settings.max_connections)
    # The store's threads (SQLite reads and commits) take the GIL back after every row they
    # step through; while the event loop is busy, each waited up to the 5 ms default, and
    # reading a thousand queues took seconds: long enough for the node's lease round to time
    # out and stop all dispatch. Measured: no cost to dispatch throughput.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    server = Server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except BaseException:
        # Release what did start (e.g. the gRPC port when the HTTP port is taken), so the
        # process ends with the one-line error and no complaint from a half-started server.
        with contextlib.suppress(Exception):
            await server.stop()
        raise
    if on_ready is not None:
        on_ready(server)
    await stop.wait()
    _log.info("opentasks stopping")
    await server.stop()


_SWITCH_INTERVAL_S = 0.0005


def port_files(max_connections: int) -> int:
    """Open files the ports may hold: ``max_connections`` on the gRPC port, as many on the HTTP
    port, and for each of those relayed to the gRPC server both ends of its Unix socket."""
    return 4 * max_connections


def attempts_in_flight(open_files: int, settings: Settings) -> int:
    """The node's cap on attempts in flight: what the open-files limit leaves once the ports
    hold what they may (:func:`port_files`) and the store, logs and lookups have some, at most
    10,000 and at least 64."""
    if open_files == resource.RLIM_INFINITY:
        return 10_000
    return max(64, min(10_000, open_files - port_files(settings.max_connections) - 256))


def _raise_open_files_limit(max_connections: int) -> None:
    """Lift the soft limit on open files to the hard one (as Go does at start): the ports'
    connections (:func:`port_files`) plus outbound dispatch connections need more than the
    usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            wanted = soft
    if wanted < port_files(max_connections) + 1024:
        _log.warning(
            "only %d open files are allowed; raise the limit (ulimit -n) to hold --max-connections %d "
            "on both ports and still dispatch",
            wanted,
            max_connections,
        )
