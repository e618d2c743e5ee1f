"""The web dashboard on the HTTP port, under ``/ui/``: server-rendered pages, fragments that
htmx polls to keep them live, and forms that act through the dashboard service.

Every response carries a strict Content-Security-Policy. Every POST must come from the
dashboard's own pages (``Sec-Fetch-Site``/``Origin``) and carry the session's CSRF token; with
API tokens configured, visitors log in with one, and a read-only token can look but not act.
Failed logins are rate limited per client and in all (429 with ``Retry-After``); a method a
page does not take gets 405 with ``Allow``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from multidict import MultiDict

from opentasks.api.origins import HostPolicy, cross_site, host_refused
from opentasks.api.rest import read_body
from opentasks.domain.browse import DEAD_LETTER_COUNT_CAP, MAX_SEARCH_CHARS, TaskSearch
from opentasks.domain.names import QueueName, TaskName
from opentasks.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OpenTasksError,
    PayloadTooLarge,
    PermissionDenied,
    RequestTimeout,
)
from opentasks.service.dashboard import BulkResult, DashboardService, QueueSummary, Tab
from opentasks.throttled_log import ThrottledLog
from opentasks.web import forms
from opentasks.web.session import (
    COOKIE_PATH,
    CSRF_FIELD,
    CSRF_HEADER,
    FLASH_COOKIE,
    FLASH_LIFETIME,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    Access,
    Flash,
    LoginLimiter,
    Session,
    SessionKeeper,
    client_key,
    request_is_tls,
    safe_next,
)
from opentasks.web.views import UI, Views, queue_url, task_url

_log = logging.getLogger("opentasks.dashboard")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MAX_FORM_BYTES = 1024 * 1024
_QUEUE = UI + "/projects/{project}/locations/{location}/queues/{queue}"
_QUEUE_ACTIONS = ("pause", "resume", "purge", "save")
_TASK_ACTIONS = ("run", "delete", "redrive")
_QUEUE_DONE = {
    "pause": "Queue {} paused: no task is sent until it is resumed.",
    "resume": "Queue {} resumed.",
    "purge": "Queue {} purged: every task it held is gone.",
}


@dataclass
class Visit:
    """One request as the dashboard sees it: the visitor's session, a cookie to set, the form
    it posted and the flash message to show."""

    session: Session
    csrf: str
    new_session: bool = False
    form: MultiDict[str] = field(default_factory=MultiDict)
    flash: Flash | None = None
    set_flash: Flash | None = None

    @property
    def can_act(self) -> bool:
        return self.session.can_act


Page = Callable[[web.Request, Visit], Awaitable[web.StreamResponse]]


class Dashboard:
    """The dashboard's routes over a :class:`DashboardService`."""

    def __init__(
        self,
        service: DashboardService,
        keeper: SessionKeeper,
        views: Views,
        *,
        monotonic: Callable[[], float],
        login_limiter: LoginLimiter | None = None,
        hosts: HostPolicy | None = None,
    ) -> None:
        self._service = service
        self._keeper = keeper
        self._hosts = hosts or HostPolicy(auth_on=keeper.auth_on)
        self._views = views
        self._errors = ThrottledLog(_log, monotonic)
        self._limiter = login_limiter or LoginLimiter(monotonic)
        self._refused_logins = ThrottledLog(_log, monotonic)
        self._resources: list[web.AbstractResource] = []

    def add_routes(self, app: web.Application) -> None:
        """Register every ``/ui`` route on ``app`` (before the API's catch-all)."""
        router = app.router
        routes = [
            router.add_get(UI, self._to_root),
            router.add_get(UI + "/static/{path:.+}", self._static),
            router.add_get(UI + "/login", self._guard(self.login_page, public=True)),
            router.add_post(UI + "/login", self._guard(self.login, public=True)),
            router.add_post(UI + "/logout", self._guard(self.logout)),
            router.add_get(UI + "/", self._guard(self.overview)),
            router.add_get(_QUEUE, self._guard(self.queue_page)),
            router.add_post(_QUEUE, self._guard(self.queue_post)),
            router.add_post(_QUEUE + "/bulk", self._guard(self.bulk_post)),
            router.add_get(_QUEUE + "/tasks/{task}", self._guard(self.task_page)),
            router.add_post(_QUEUE + "/tasks/{task}", self._guard(self.task_post)),
        ]
        self._resources = list({id(r.resource): r.resource for r in routes if r.resource}.values())
        # Everything else under /ui/ (another path, or a method a page does not take) is answered
        # here, as a page with this module's headers, never by the API's catch-all.
        router.add_route("*", UI + "/{tail:.*}", self._guard(self.missing, public=True))

    # -- the guard around every page --------------------------------------------------------

    def _guard(
        self, page: Page, *, public: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                response = await self._visit(request, page, public)
            except Exception:
                self._errors.exception("unexpected error serving %s %s", request.method, request.path)
                response = self._html(
                    500,
                    "error.html",
                    None,
                    request,
                    message="Something went wrong in opentasks; the server log has the details.",
                    title="Server error",
                )
            if response.status >= 400 and request.query.get("fragment"):
                response.headers["HX-Refresh"] = "true"  # a live region: reload the page, which says why
            return _secured(response)

        return handle

    async def _visit(self, request: web.Request, page: Page, public: bool) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not self._hosts.host_allowed(host):
            # Open to every visitor, so only by a name no other site can take: a page whose own
            # name was made to resolve here (DNS rebinding) would otherwise read and act freely.
            return self._html(403, "error.html", None, request, title="Refused", message=host_refused(host))
        now = self._service.now()
        session = self._session(request, now)
        if session is None and not public and self._keeper.auth_on:
            return self._to_login(request)
        visit = Visit(session or self._visitor(now), "")
        visit.new_session = session is None and not self._keeper.auth_on
        visit.csrf = self._keeper.csrf_token(visit.session)
        visit.flash = self._flash(request, now)
        if request.method == "POST":
            refusal = await self._check_post(request, visit, public)
            if refusal is not None:
                return refusal
        try:
            response = await page(request, visit)
        except OpenTasksError as error:
            response = self._error_page(request, visit, error)
        self._cookies(request, response, visit, now)
        return response

    def _visitor(self, now: datetime) -> Session:
        """The session of a visitor without one: open (full access) when authentication is off,
        else nothing but the login page (read access, no valid CSRF token)."""
        if not self._keeper.auth_on:
            return self._keeper.open_session(now)
        return Session(Access.READ, 0, "", "")

    def _session(self, request: web.Request, now: datetime) -> Session | None:
        value = request.cookies.get(SESSION_COOKIE, "")
        return self._keeper.unseal(value, now) if value else None

    def _flash(self, request: web.Request, now: datetime) -> Flash | None:
        value = request.cookies.get(FLASH_COOKIE, "")
        return self._keeper.unseal_flash(value, now) if value else None

    async def _check_post(
        self, request: web.Request, visit: Visit, public: bool
    ) -> web.StreamResponse | None:
        if cross_site(request.headers, request.host):
            return self._html(
                403,
                "error.html",
                visit,
                request,
                title="Refused",
                message="This form was sent from another site, so it was refused.",
            )
        try:
            visit.form = await _read_form(request)
        except OpenTasksError as error:
            return self._error_page(request, visit, error)
        if public:
            return None
        presented = request.headers.get(CSRF_HEADER) or visit.form.get(CSRF_FIELD) or ""
        if not self._keeper.csrf_valid(visit.session, presented):
            return self._html(
                403,
                "error.html",
                visit,
                request,
                title="Refused",
                message="The form is out of date (its security token does not match your "
                "session). Reload the page and try again.",
            )
        return None

    def _to_login(self, request: web.Request) -> web.StreamResponse:
        target = f"{UI}/login?" + urlencode({"next": request.rel_url.path_qs})
        if request.headers.get("HX-Request"):
            response = web.Response(status=401, text="Log in again.")
            response.headers["HX-Redirect"] = f"{UI}/login"
            return response
        if request.method != "GET":
            return self._html(
                401,
                "error.html",
                None,
                request,
                title="Logged out",
                message="Your session has ended; log in again.",
            )
        return web.Response(status=303, headers={"Location": target, "Cache-Control": "no-store"})

    def _cookies(
        self, request: web.Request, response: web.StreamResponse, visit: Visit, now: datetime
    ) -> None:
        secure = request_is_tls(request.secure, request.headers)
        if visit.new_session:
            _set_cookie(
                response,
                SESSION_COOKIE,
                self._keeper.seal(visit.session),
                SESSION_LIFETIME.total_seconds(),
                secure,
            )
        if visit.set_flash is not None:
            value = self._keeper.seal_flash(visit.set_flash, now)
            _set_cookie(response, FLASH_COOKIE, value, FLASH_LIFETIME.total_seconds(), secure)
        elif visit.flash is not None and request.method == "GET" and not request.query.get("fragment"):
            response.del_cookie(FLASH_COOKIE, path=COOKIE_PATH)

    # -- rendering ---------------------------------------------------------------------------

    def _html(
        self, status: int, template: str, visit: Visit | None, request: web.Request, **context: Any
    ) -> web.Response:
        context.setdefault("flash", visit.flash if visit is not None else None)
        text = self._views.render(
            template,
            auth_on=self._keeper.auth_on,
            can_act=visit.can_act if visit is not None else False,
            csrf=visit.csrf if visit is not None else "",
            logged_in=visit is not None and self._keeper.auth_on,
            read_only=visit is not None and not visit.can_act,
            path=request.path,
            **context,
        )
        response = web.Response(status=status, text=text, content_type="text/html", charset="utf-8")
        response.headers["Cache-Control"] = "no-store"
        return response

    def _error_page(self, request: web.Request, visit: Visit | None, error: OpenTasksError) -> web.Response:
        status, title = _error_status(error)
        return self._html(status, "error.html", visit, request, title=title, message=error.message)

    def _redirect(self, visit: Visit, location: str, flash: Flash | None = None) -> web.Response:
        visit.set_flash = flash
        return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})

    # -- pages -------------------------------------------------------------------------------

    async def _to_root(self, request: web.Request) -> web.StreamResponse:
        return _secured(web.Response(status=301, headers={"Location": UI + "/"}))

    async def _static(self, request: web.Request) -> web.StreamResponse:
        found = self._views.static.get(request.match_info["path"])
        if found is None:
            return _secured(web.Response(status=404, text="Not found."))
        if request.headers.get("If-None-Match") == f'"{found.digest}"':
            return _secured(web.Response(status=304))
        response = web.Response(body=found.body, headers={"Content-Type": found.content_type})
        response.headers["ETag"] = f'"{found.digest}"'
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return _secured(response)

    async def missing(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        allowed = await self._allowed_methods(request)
        anonymous = self._keeper.auth_on and self._session(request, self._service.now()) is None
        if allowed:
            response = self._html(
                405,
                "error.html",
                None if anonymous else visit,
                request,
                title="Method not allowed",
                message=f"{request.path[:200]} takes {' and '.join(sorted(allowed))} only.",
            )
            response.headers["Allow"] = ", ".join(sorted(allowed))
            return response
        if anonymous:
            return self._to_login(request)
        return self._html(
            404,
            "error.html",
            visit,
            request,
            title="Not found",
            message=f"There is no dashboard page at {request.path[:200]}.",
        )

    async def _allowed_methods(self, request: web.Request) -> set[str]:
        """The methods the page at the request's path takes (none: there is no such page)."""
        allowed: set[str] = set()
        for resource in self._resources:
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
        return allowed

    async def login_page(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        if not self._keeper.auth_on or self._session(request, self._service.now()) is not None:
            return web.Response(status=303, headers={"Location": safe_next(request.query.get("next", ""))})
        return self._html(
            200, "login.html", None, request, next=safe_next(request.query.get("next", "")), flash=visit.flash
        )

    async def login(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        target = safe_next(visit.form.get("next", ""))
        if not self._keeper.auth_on:
            return web.Response(status=303, headers={"Location": target})
        client = client_key(request.remote)
        wait = self._limiter.wait(client)
        if wait:
            self._refused_logins.log(
                logging.WARNING, "dashboard logins refused (too many failed, last from %s)", client
            )
            response = self._html(
                429,
                "login.html",
                None,
                request,
                next=target,
                flash=Flash(
                    "error",
                    f"Too many failed logins: try again in {_seconds(wait)}. The token was not checked.",
                ),
            )
            response.headers["Retry-After"] = str(wait)
            return response
        session = self._keeper.login(visit.form.get("token", ""), self._service.now())
        if session is None:
            self._limiter.failed(client)
            return self._html(
                401,
                "login.html",
                None,
                request,
                next=target,
                flash=Flash("error", "That token is not one this server accepts."),
            )
        visit.session, visit.new_session = session, True
        return web.Response(status=303, headers={"Location": target, "Cache-Control": "no-store"})

    async def logout(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        self._keeper.revoke(visit.session, self._service.now())
        response = web.Response(status=303, headers={"Location": f"{UI}/login", "Cache-Control": "no-store"})
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    async def overview(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        summaries = await self._service.overview()
        template = "_queues.html" if request.query.get("fragment") == "queues" else "overview.html"
        return self._html(
            200,
            template,
            visit,
            request,
            summaries=summaries,
            totals=_totals(summaries),
            now=self._service.now(),
        )

    async def queue_page(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        name = _queue_name(request)
        fragment = request.query.get("fragment", "")
        if fragment == "live":
            summary = await self._service.queue_summary(name)
            return self._html(
                200,
                "_queue_live.html",
                visit,
                request,
                summary=summary,
                now=summary.now,
                tab=Tab.parse(request.query.get("tab", "")),
            )
        return await self._queue_view(request, visit, name, fragment=fragment)

    async def _queue_view(
        self,
        request: web.Request,
        visit: Visit,
        name: QueueName,
        *,
        fragment: str = "",
        values: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> web.Response:
        tab_text, text, cursor = forms.page_params(request.query)
        tab, search = Tab.parse(tab_text), _search(text)
        context: dict[str, Any] = {"tab": tab, "tabs": list(Tab), "q": search.text, "cursor": cursor}
        if fragment == "tasks":  # the table alone: no counting
            queue = await self._service.queues.get_queue(name)
            page = await self._service.tasks_page(name, tab, search, cursor)
            return self._html(
                status,
                "_tasks.html",
                visit,
                request,
                queue=queue,
                page=page,
                now=self._service.now(),
                **context,
            )
        summary = await self._service.queue_summary(name)
        page = await self._service.tasks_page(name, tab, search, cursor)
        context |= {"summary": summary, "queue": summary.queue, "page": page, "now": summary.now}
        shown = dict(forms.settings_values(summary.queue))
        shown.update(values or {})
        return self._html(
            status,
            "queue.html",
            visit,
            request,
            fields=forms.SETTINGS_FIELDS,
            values=shown,
            burst_editable=forms.burst_refusal(summary.queue) is None,
            **context,
        )

    async def queue_post(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        name = _queue_name(request)
        action = visit.form.get("action", "")
        if action not in _QUEUE_ACTIONS:
            raise InvalidArgument(f"Unknown action '{action[:40]}'.")
        _may_act(visit)
        back = queue_url(name, tab=_tab_value(visit.form.get("tab", "")))
        if action == "save":
            return await self._save(request, visit, name, back)
        try:
            await self._service.queue_action(name, action)
        except OpenTasksError as error:
            return self._redirect(visit, back, Flash("error", error.message))
        return self._redirect(visit, back, Flash("ok", _QUEUE_DONE[action].format(name.queue_id)))

    async def _save(
        self, request: web.Request, visit: Visit, name: QueueName, back: str
    ) -> web.StreamResponse:
        submitted = {f.name: visit.form[f.name] for f in forms.SETTINGS_FIELDS if f.name in visit.form}
        try:
            current = await self._service.queues.get_queue(name)
            change = forms.settings_change(current, submitted)
            refusal = forms.burst_refusal(current) if change.burst_changed else None
            if refusal is not None:
                raise InvalidArgument(refusal)
            if not change.mask:
                return self._redirect(visit, back, Flash("ok", "Nothing changed."))
            await self._service.update_settings(current, change.queue, change.mask)
        except NotFound:
            raise
        except OpenTasksError as error:
            visit.flash = Flash("error", error.message)
            return await self._queue_view(request, visit, name, values=submitted)
        fields = ", ".join(path.split(".")[-1] for path in change.mask)
        return self._redirect(visit, back, Flash("ok", f"Settings saved ({fields})."))

    async def bulk_post(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        name = _queue_name(request)
        form = visit.form
        tab = Tab.parse(form.get("tab", ""))
        search = _search(form.get("q", ""))
        back = queue_url(name, tab=tab.value, q=search.text)
        _may_act(visit)
        ids = None if form.get("scope") == "all" else form.getall("task", [])
        if ids is not None and not ids:
            return self._redirect(visit, back, Flash("error", "Select tasks first (the boxes on the left)."))
        try:
            result = await self._service.bulk(name, form.get("action", ""), tab, search, ids)
        except OpenTasksError as error:
            return self._redirect(visit, back, Flash("error", error.message))
        return self._redirect(visit, back, bulk_flash(result))

    async def task_page(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        name = _task_name(request)
        detail = await self._service.task_detail(name)
        return self._html(
            200, "task.html", visit, request, detail=detail, task=detail.task, now=self._service.now()
        )

    async def task_post(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        name = _task_name(request)
        action = visit.form.get("action", "")
        if action not in _TASK_ACTIONS:
            raise InvalidArgument(f"Unknown action '{action[:40]}'.")
        _may_act(visit)
        here = task_url(name)
        try:
            match action:
                case "run":
                    task = await self._service.run_task(name)
                    return self._redirect(
                        visit,
                        here,
                        Flash("ok", f"Task {name.task_id} sent now (attempt {task.dispatch_count})."),
                    )
                case "delete":
                    await self._service.delete_task(name)
                    return self._redirect(
                        visit, queue_url(name.queue), Flash("ok", f"Task {name.task_id} deleted.")
                    )
            created = await self._service.redrive_one(name)
        except OpenTasksError as error:
            return self._redirect(visit, here, Flash("error", error.message))
        message = f"Task {name.task_id} redriven as the new task {created.name.task_id}."
        return self._redirect(visit, task_url(created.name), Flash("ok", message))


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    for header, value in SECURITY_HEADERS.items():
        response.headers[header] = value
    return response


def _set_cookie(response: web.StreamResponse, name: str, value: str, max_age: float, secure: bool) -> None:
    response.set_cookie(
        name, value, max_age=int(max_age), path=COOKIE_PATH, httponly=True, samesite="Strict", secure=secure
    )


async def _read_form(request: web.Request) -> MultiDict[str]:
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"A dashboard form may hold at most {MAX_FORM_BYTES} bytes.")
    body = await read_body(request)
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"A dashboard form may hold at most {MAX_FORM_BYTES} bytes.")
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if body and content_type != "application/x-www-form-urlencoded":
        raise InvalidArgument("Dashboard forms are sent as application/x-www-form-urlencoded.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=5000)
    except UnicodeDecodeError:
        raise InvalidArgument("The form could not be read: it is not UTF-8.") from None
    except ValueError as error:
        raise InvalidArgument(f"The form could not be read: {error}.") from None
    return MultiDict(pairs)


def _error_status(error: OpenTasksError) -> tuple[int, str]:
    if isinstance(error, NotFound):
        return 404, "Not found"
    if isinstance(error, PermissionDenied):
        return 403, "Not allowed"
    if isinstance(error, PayloadTooLarge):
        return 413, "Too large"
    if isinstance(error, RequestTimeout):
        return 408, "Too slow"
    if isinstance(error, FailedPrecondition):
        return 409, "Not possible now"
    return 400, "Bad request"


def _may_act(visit: Visit) -> None:
    if not visit.can_act:
        raise PermissionDenied("Your token is read-only: the dashboard shows everything but changes nothing.")


def _queue_name(request: web.Request) -> QueueName:
    info = request.match_info
    try:
        return QueueName.parse(
            f"projects/{info['project']}/locations/{info['location']}/queues/{info['queue']}"
        )
    except InvalidArgument:
        raise NotFound(f"There is no queue named {info['queue'][:100]}.") from None


def _task_name(request: web.Request) -> TaskName:
    queue = _queue_name(request)
    try:
        return TaskName.parse(f"{queue}/tasks/{request.match_info['task']}")
    except InvalidArgument:
        raise NotFound(f"There is no task named {request.match_info['task'][:100]}.") from None


def _search(text: str) -> TaskSearch:
    text = text.strip()
    if len(text) > MAX_SEARCH_CHARS:
        raise InvalidArgument(f"Search for at most {MAX_SEARCH_CHARS} characters.")
    return TaskSearch(text)


def _seconds(wait: int) -> str:
    if wait < 120:
        return f"{wait} second{'s' if wait != 1 else ''}"
    return f"{math.ceil(wait / 60)} minutes"


def _tab_value(text: str) -> str:
    try:
        return Tab(text).value
    except ValueError:
        return ""


def bulk_flash(result: BulkResult) -> Flash:
    """The message that says what a bulk action did."""
    verb = {"delete": "Deleted", "run": "Sent", "redrive": "Redrove"}[result.action]
    noun = "task" if result.done == 1 else "tasks"
    text = f"{verb} {result.done:,} {noun}"
    if result.action == "run":
        text += " now"
    text += "."
    if result.refused_count:
        text += f" {result.refused_count:,} refused: {'; '.join(result.refused)}"
    if result.more:
        text += f" More tasks match: at most {1000:,} are done per click; press again to go on."
    return Flash("error" if result.refused_count and not result.done else "ok", text)


def _totals(summaries: list[QueueSummary]) -> dict[str, float | bool]:
    return {
        "queues": len(summaries),
        "due": sum(s.due for s in summaries),
        "scheduled": sum(s.scheduled for s in summaries),
        "in_flight": sum(s.in_flight for s in summaries),
        "succeeded": sum(s.succeeded_per_minute for s in summaries),
        "failed": sum(s.failed_per_minute for s in summaries),
        "dead_letters": sum(min(s.dead_letters, DEAD_LETTER_COUNT_CAP) for s in summaries),
        "dead_letters_more": any(s.dead_letters > DEAD_LETTER_COUNT_CAP for s in summaries),
        "paused": sum(1 for s in summaries if s.state != "RUNNING"),
    }
