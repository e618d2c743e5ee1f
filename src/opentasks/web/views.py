"""The dashboard's Jinja2 templates (autoescaping on for every template and every value) and
its static files, read once from the package and served with hashed URLs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

from opentasks.domain.names import QueueName, TaskName
from opentasks.domain.task import Task
from opentasks.service.dashboard import Minute
from opentasks.web import present

STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".LICENSE": "text/plain; charset=utf-8",
}
UI = "/ui"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    digest: str


def load_static() -> dict[str, StaticFile]:
    """Every file under ``web/static``, by its path there (``vendor/htmx.min.js``)."""
    found: dict[str, StaticFile] = {}
    root = resources.files("opentasks.web").joinpath("static")
    _walk(root, "", found)
    return found


def _walk(folder: Any, prefix: str, found: dict[str, StaticFile]) -> None:
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            _walk(entry, name + "/", found)
            continue
        suffix = next((s for s in STATIC_TYPES if entry.name.endswith(s)), None)
        if suffix is None:
            continue
        body = entry.read_bytes()
        found[name] = StaticFile(body, STATIC_TYPES[suffix], hashlib.sha256(body).hexdigest()[:16])


def queue_url(name: QueueName, **query: str) -> str:
    path = f"{UI}/projects/{_seg(name.project)}/locations/{_seg(name.location)}/queues/{_seg(name.queue_id)}"
    shown = {key: value for key, value in query.items() if value}
    return path + ("?" + urlencode(shown) if shown else "")


def task_url(name: TaskName) -> str:
    return f"{queue_url(name.queue)}/tasks/{_seg(name.task_id)}"


def _seg(text: str) -> str:
    return quote(text, safe=":")


def target_of(task: Task) -> tuple[str, str]:
    """(method, URL) a task is sent with (an App Engine task's relative URI)."""
    if task.http_request is not None:
        return task.http_request.http_method.name, task.http_request.url
    engine = task.app_engine_http_request
    if engine is None:
        return "", ""
    return engine.http_method.name, engine.relative_uri


def request_of(task: Task) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a task's request."""
    request = task.http_request or task.app_engine_http_request
    if request is None:
        return {}, b""
    return request.headers, request.body


def task_result(task: Task) -> tuple[str, str]:
    last = task.last_attempt
    status = last.response_status if last is not None else None
    if status is None:
        return present.last_result(None, "")
    return present.last_result(status.code, status.message)


def chart_of(minutes: list[Minute], width: int, height: int) -> present.Chart:
    """The chart of a queue's per-minute outcomes."""
    points = [(m.start, m.succeeded, m.failed) for m in minutes]
    return present.outcome_chart(points, width=width, height=height)


class Views:
    """Renders the dashboard's pages and fragments."""

    def __init__(self, version: str) -> None:
        self.static = load_static()
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("opentasks.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals.update(
            static=self.static_url,
            queue_url=queue_url,
            task_url=task_url,
            target_of=target_of,
            request_of=request_of,
            task_result=task_result,
            body_view=present.body_view,
            snippet=present.snippet,
            reason_text=present.reason_text,
            outcome_chart=chart_of,
            version=version,
        )
        self._env.filters.update(
            count=present.count,
            dead_letters=present.dead_letters,
            rate=present.rate,
            span=present.span,
            timestamp=present.timestamp,
            iso=_iso,
        )
        self._env.globals["percent"] = present.percent
        self._env.globals["relative"] = present.relative

    def static_url(self, name: str) -> str:
        return f"{UI}/static/{name}?v={self.static[name].digest}"

    def render(self, template: str, **context: Any) -> str:
        return self._env.get_template(template).render(**context)


def _iso(when: datetime | None) -> str:
    return "" if when is None else when.isoformat()
