"""The web dashboard served under ``/ui/`` on the HTTP port (see docs/dashboard.md)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from opentasks.api.origins import HostPolicy
from opentasks.service.dashboard import DashboardService
from opentasks.version import package_version
from opentasks.web.dashboard import Dashboard
from opentasks.web.session import LoginLimiter, SessionKeeper
from opentasks.web.views import Views


def add_dashboard(
    app: web.Application,
    service: DashboardService,
    *,
    key: bytes,
    tokens: tuple[str, ...] = (),
    read_only_tokens: tuple[str, ...] = (),
    monotonic: Callable[[], float],
    login_limiter: LoginLimiter | None = None,
    allowed_hosts: frozenset[str] = frozenset(),
) -> Dashboard:
    """Serve the dashboard on ``app``: sessions signed with ``key`` (the store's page-token key,
    shared by every node), logins with the API tokens (none: open to every visitor), failed
    logins limited by ``login_limiter`` (default: :class:`LoginLimiter`'s limits on ``monotonic``);
    without tokens, host names other than local ones answered only when in ``allowed_hosts``."""
    dashboard = Dashboard(
        service,
        SessionKeeper(key, tokens, read_only_tokens),
        Views(package_version()),
        monotonic=monotonic,
        login_limiter=login_limiter,
        hosts=HostPolicy.of(allowed_hosts, auth_on=bool(tokens or read_only_tokens)),
    )
    dashboard.add_routes(app)
    return dashboard
