"""Firebase task queues: the calls the Firebase Admin SDKs make when ``CLOUD_TASKS_EMULATOR_HOST``
is set (``functions.task_queue("fn").enqueue(data, opts)`` and ``.delete(id)`` in Python,
``getFunctions().taskQueue("fn")`` in Node).

* ``POST /projects/{p}/locations/{l}/queues/{q}/tasks`` with ``{"task": {...}}``, a CreateTask
  body without the ``/v2`` prefix, answered ``{"task": {"name": "/projects/…"}}``: the SDKs
  read the name with a leading slash, as Firebase's own emulator writes it;
* ``DELETE /projects/{p}/locations/{l}/queues/{q}/tasks/{t}``, answered ``{}``.

The SDKs leave the task's URL empty (Firebase's emulator fills in the function's): here the
queue's URI override supplies it, so a function's queue is declared with the function's URL
(docs/firebase.md). The same API credentials apply as to CreateTask and DeleteTask (the SDKs
send ``Authorization: Bearer owner`` to an emulator).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from opentasks.api import messages as pb
from opentasks.api.cloud_tasks_grpc import CloudTasksApi
from opentasks.api.json_errors import parse_json
from opentasks.errors import FailedPrecondition, InvalidArgument, NotFound

_QUEUE = "/projects/{project}/locations/{location}/queues/{queue}"
Authorize = Callable[[web.Request, str], None]
ReadBody = Callable[[web.Request], Awaitable[dict[str, Any]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_firebase_routes(
    app: web.Application,
    api: CloudTasksApi,
    authorize: Authorize,
    read_body: ReadBody,
    guard: Callable[[Handler], Handler],
) -> None:
    """Serve the two calls on ``app``; ``guard`` turns refusals into the API's error envelope."""
    routes = _FirebaseRoutes(api, authorize, read_body)
    app.router.add_post(_QUEUE + "/tasks", guard(routes.enqueue))
    app.router.add_delete(_QUEUE + "/tasks/{task}", guard(routes.delete))


class _FirebaseRoutes:
    def __init__(self, api: CloudTasksApi, authorize: Authorize, read_body: ReadBody) -> None:
        self._api = api
        self._authorize = authorize
        self._read_body = read_body

    async def enqueue(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request, "create_task")
        parent = _queue(request)
        body = await self._read_body(request)
        task = body.get("task")
        if not isinstance(task, dict):
            raise InvalidArgument('The body must be {"task": {...}}, as the Firebase Admin SDKs send it.')
        http = task.get("httpRequest")
        if isinstance(http, dict) and not http.get("url"):
            http["url"] = await self._function_url(parent)
        message = pb.CreateTaskRequest()
        parse_json({"task": _without_nulls(task)}, message)
        message.parent = parent
        created, _ = await self._api.create_task_record(message)
        return web.json_response({"task": {"name": f"/{created.name}"}})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request, "delete_task")
        name = f"{_queue(request)}/tasks/{request.match_info['task']}"
        await self._api.delete_task(pb.DeleteTaskRequest(name=name))
        return web.json_response({})

    async def _function_url(self, parent: str) -> str:
        try:
            url = await self._api.queue_url(parent)
        except NotFound:
            raise NotFound(
                f"Queue {parent} does not exist. Firebase's emulator makes a queue per task queue"
                " function; here declare it, with the function's URL as its URI override (see"
                " opentasks' docs/firebase.md)."
            ) from None
        if url is None:
            raise FailedPrecondition(
                f"The task has no URL, and queue {parent} has no URI override to send it to. The Firebase"
                " Admin SDKs leave the URL to the emulator: give the function's queue its URL (for"
                " example opentasks queues update QUEUE --http-uri-override=scheme:http,host:127.0.0.1,"
                "port:5001,path:/PROJECT/LOCATION/FUNCTION, or http_target in the queues YAML), or pass"
                " uri= in the task options."
            )
        return url


def _queue(request: web.Request) -> str:
    info = request.match_info
    return f"projects/{info['project']}/locations/{info['location']}/queues/{info['queue']}"


def _without_nulls(task: dict[str, Any]) -> dict[str, Any]:
    """The SDKs send unset options as JSON null (``"scheduleTime": null``) in the task and its
    ``httpRequest``, which Google's parser takes as unset; what else is null is refused as
    CreateTask refuses it."""
    kept = {key: value for key, value in task.items() if value is not None}
    http = kept.get("httpRequest")
    if isinstance(http, dict):
        kept["httpRequest"] = {key: value for key, value in http.items() if value is not None}
    return kept
