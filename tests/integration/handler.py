"""A task handler in its own process, for integration tests.

Every request is printed to stdout as one JSON line. Answers are scripted by the path:
``/plan/503-404-200`` answers each task's n-th attempt with the n-th code (the last repeats),
``/sleep/<seconds>`` waits before answering 200, ``/switch/<key>`` answers the code last set for
``key`` by ``POST /_set/<key>/<code>`` (200 until then; that request is not recorded), anything
else answers 200.

Run: python handler.py PORT
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections import Counter

from aiohttp import web

attempts: Counter[tuple[str, str]] = Counter()
switches: dict[str, int] = {}


async def handle(request: web.Request) -> web.Response:
    body = await request.read()
    parts = request.path.strip("/").split("/")
    if parts[0] == "_set" and len(parts) == 3:
        switches[parts[1]] = int(parts[2])
        return web.Response(status=204)
    task = request.headers.get("X-CloudTasks-TaskName") or request.headers.get("X-AppEngine-TaskName", "")
    record = {
        "method": request.method,
        "path": request.path_qs,
        "headers": list(request.headers.items()),
        "body": base64.b64encode(body).decode(),
        "t": time.monotonic(),  # CLOCK_MONOTONIC is system-wide: comparable with the test's clock
    }
    print(json.dumps(record), flush=True)
    if parts[0] == "sleep":
        await asyncio.sleep(float(parts[1]))
        return web.Response(status=200)
    if parts[0] == "plan":
        plan = [int(code) for code in parts[1].split("-")]
        index = attempts[(request.path, task)]
        attempts[(request.path, task)] += 1
        return web.Response(status=plan[min(index, len(plan) - 1)])
    if parts[0] == "switch":
        return web.Response(status=switches.get(parts[1], 200))
    return web.Response(status=200, text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, shutdown_timeout=0.5
    )


if __name__ == "__main__":
    main()
