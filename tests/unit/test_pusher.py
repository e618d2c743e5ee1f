"""The aiohttp pusher against a real loopback handler: statuses, and the DNS-level guard."""

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from opentasks.domain.outbound import OutboundRequest
from opentasks.domain.target_policy import TargetDenied, TargetPolicy
from opentasks.domain.task import AttemptFailure
from opentasks.service.pusher import AiohttpPusher, Http1Pusher

PusherType = type[AiohttpPusher] | type[Http1Pusher]


@pytest.fixture(params=[AiohttpPusher, Http1Pusher], ids=["aiohttp", "http1"])
def pusher_type(request: pytest.FixtureRequest) -> PusherType:
    """Every behaviour holds for both the general client and the lean HTTP/1.1 one."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def handler_port() -> AsyncIterator[int]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query.get("status", "200")))

    app = web.Application()
    app.router.add_route("*", "/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


def request(url: str) -> OutboundRequest:
    return OutboundRequest("POST", url, {"X-Test": "1"}, b"body", 5.0)


async def test_statuses_and_unreachable_handlers(handler_port: int, pusher_type: PusherType) -> None:
    pusher = pusher_type()
    try:
        assert (await pusher.push(request(f"http://127.0.0.1:{handler_port}/?status=503"))).http_status == 503
        assert (await pusher.push(request(f"http://localhost:{handler_port}/"))).http_status == 200
        closed = await pusher.push(request("http://127.0.0.1:9/"))
        assert closed.failure == AttemptFailure.UNREACHABLE
    finally:
        await pusher.close()


async def test_a_name_resolving_to_a_denied_address_is_refused(
    handler_port: int, pusher_type: PusherType
) -> None:
    pusher = pusher_type(TargetPolicy(deny=("127.0.0.0/8", "::1/128")))
    try:
        with pytest.raises(TargetDenied, match=r"localhost \(127\.0\.0\.1\)|localhost \(::1\)"):
            await pusher.push(request(f"http://localhost:{handler_port}/"))
    finally:
        await pusher.close()
