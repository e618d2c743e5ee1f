"""A minimal task handler for the dispatch benchmarks: answers 200 and notes when each request
arrived. GET /__stats returns the arrivals since the last POST /__reset.

Run: python bench/handler.py PORT
"""

from __future__ import annotations

import sys
import time

from aiohttp import web

arrivals: list[tuple[float, float, str, str]] = []  # (monotonic, wall, task name, ETA header)


async def handle(request: web.Request) -> web.Response:
    arrivals.append(
        (
            time.monotonic(),
            time.time(),
            request.headers.get("X-CloudTasks-TaskName", ""),
            request.headers.get("X-CloudTasks-TaskETA", ""),
        )
    )
    await request.read()
    return web.Response(status=200)


async def stats(request: web.Request) -> web.Response:
    if request.query.get("count_only"):
        return web.json_response({"count": len(arrivals)})
    return web.json_response({"count": len(arrivals), "arrivals": arrivals})


async def reset(request: web.Request) -> web.Response:
    arrivals.clear()
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
