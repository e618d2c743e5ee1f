"""Baseline for the REST CreateTask benchmark: a bare aiohttp server that answers CreateTask with
the task it was sent (plus a name), and CreateQueue and PauseQueue with what it was sent, doing
no validation and no storage. It runs on uvloop, as opentasks does: the best the bare tool does
here."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys

import uvloop
from aiohttp import web

_ids = itertools.count(1)


async def create_task(request: web.Request) -> web.Response:
    task = (await request.json())["task"]
    task["name"] = f"{request.match_info['queue']}/tasks/{next(_ids)}"
    return web.Response(body=json.dumps(task).encode(), content_type="application/json")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v2/{queue:projects/[^/]+/locations/[^/]+/queues/[^/:]+}/tasks", create_task)
    app.router.add_post("/v2/{path:.*}", echo)
    app.router.add_get("/ready", ready)
    uvloop.run(_serve(app, port))


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    main(int(sys.argv[1]))
