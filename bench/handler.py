"""A minimal task handler for the dispatch benchmarks: answers 200 and notes when each request
arrived; ``/slow/MS`` answers after MS milliseconds (a slow handler) and notes it then. GET
/__stats returns the arrivals since the last POST /__reset; GET /__stats?by_queue=1 the requests
and the last one's time by X-CloudTasks-QueueName.

Run: python bench/handler.py PORT
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import web

arrivals: list[tuple[float, float, str, str]] = []  # (monotonic, wall, task name, ETA header)
queues: dict[str, list[float]] = {}  # queue name -> [requests, monotonic time of the last one]


async def handle(request: web.Request) -> web.Response:
    await request.read()
    if request.path.startswith("/slow/"):  # counted once answered, as a client counts it
        await asyncio.sleep(int(request.path.rsplit("/", 1)[1]) / 1000)
    now = time.monotonic()
    arrivals.append(
        (
            now,
            time.time(),
            request.headers.get("X-CloudTasks-TaskName", ""),
            request.headers.get("X-CloudTasks-TaskETA", ""),
        )
    )
    seen = queues.setdefault(request.headers.get("X-CloudTasks-QueueName", ""), [0, now])
    seen[0] += 1
    seen[1] = now
    return web.Response(status=200)


async def stats(request: web.Request) -> web.Response:
    if request.query.get("by_queue"):
        return web.json_response(queues)
    if request.query.get("count_only"):
        return web.json_response({"count": len(arrivals)})
    return web.json_response({"count": len(arrivals), "arrivals": arrivals})


async def reset(request: web.Request) -> web.Response:
    arrivals.clear()
    queues.clear()
    return web.json_response({})


def main() -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_get("/__stats", stats)
    app.router.add_post("/__reset", reset)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
