"""The dashboard mounted on a real server's HTTP port, and switched off."""

from pathlib import Path

import aiohttp

from opentasks.app import Server, dashboard_url, startup_summary
from opentasks.config import Settings, StorageUrl, settings_from_options


async def fetch(server: Server, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.http_port}{path}", allow_redirects=False) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def serve(tmp_path: Path, **options: object) -> Server:
    settings = Settings(
        port=0,
        http_port=0,
        storage=StorageUrl("memory"),
        keys_dir=tmp_path / "keys",
        dispatch=False,
        **options,
    )
    server = Server(settings)
    await server.start()
    return server


async def test_the_server_serves_the_dashboard_beside_the_api(tmp_path: Path) -> None:
    server = await serve(tmp_path)
    try:
        status, kind, page = await fetch(server, "/ui/")
        assert status == 200 and kind.startswith("text/html")
        assert "No queues yet" in page
        status, _, _ = await fetch(server, "/v2/projects/p/locations/l/queues")
        assert status == 200  # the API is untouched
    finally:
        await server.stop()


async def test_with_tokens_the_dashboard_asks_for_a_login(tmp_path: Path) -> None:
    server = await serve(tmp_path, api_tokens=("secret-token",))
    try:
        status, _, _ = await fetch(server, "/ui/")
        assert status == 303
        status, _, page = await fetch(server, "/ui/login")
        assert status == 200 and 'id="login"' in page
    finally:
        await server.stop()


async def test_no_dashboard_leaves_ui_to_the_api_404(tmp_path: Path) -> None:
    server = await serve(tmp_path, dashboard=False)
    try:
        status, kind, _ = await fetch(server, "/ui/")
        assert status == 404 and kind.startswith("application/json")
    finally:
        await server.stop()


def test_the_dashboard_is_on_by_default_and_a_switch() -> None:
    assert Settings().dashboard is True
    assert settings_from_options({"dashboard": False, "data_dir": "/d"}).dashboard is False


def test_the_start_up_line_says_where_the_dashboard_is() -> None:
    message, fields = startup_summary(
        Settings(host="0.0.0.0", insecure_no_auth=True), 8123, 8124, api_auth=False
    )
    assert message.endswith(", dashboard at http://127.0.0.1:8124/ui/")
    assert fields["dashboard"] == "http://127.0.0.1:8124/ui/"
    assert dashboard_url("::1", 80) == "http://[::1]:80/ui/"
    message, fields = startup_summary(Settings(dashboard=False), 8123, 8124, api_auth=False)
    assert "dashboard" not in message and "dashboard" not in fields
