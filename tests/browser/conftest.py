"""Real-browser tests of the dashboard (``/ui/`` on the server's HTTP port): Debian's Chromium,
headless, driven through Selenium against a real server subprocess.

One browser serves the whole session and one server each module. Every wait is a
``WebDriverWait`` on a condition, bounded by ``WAIT_S``. Screenshots of the pages visited go to
``$OPENTASKS_TEST_ARTIFACTS`` (default ``<repo>/test-artifacts/screenshots``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from google.cloud import tasks_v2
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from opentasks.testing import ServerProcess
from tests.integration.conftest import sqlite_server
from tests.integration.handlers import HandlerProcess

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS_ENV = "OPENTASKS_TEST_ARTIFACTS"
WAIT_S = 15.0  # the longest any one condition is waited for
WINDOW = (1400, 900)
T = TypeVar("T")


def chromedriver_path() -> str | None:
    """Where chromedriver is: on PATH, else where Debian's chromium-driver puts it."""
    found = shutil.which("chromedriver")
    if found:
        return found
    return "/usr/bin/chromedriver" if os.access("/usr/bin/chromedriver", os.X_OK) else None


@pytest.fixture(scope="session")
def driver() -> Iterator[WebDriver]:
    """Headless Chromium for the whole session; its console log is kept (``get_log('browser')``)."""
    path = chromedriver_path()
    if path is None:
        reason = "chromedriver is not installed (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser:
        options.binary_location = browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(path), options=options)
    chrome.set_page_load_timeout(30)
    chrome.set_script_timeout(15)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots are saved."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "test-artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def handler() -> Iterator[HandlerProcess]:
    with HandlerProcess() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per module, on an SQLite file; each test uses queues of its own."""
    with sqlite_server(tmp_path_factory.mktemp("browser-server")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> tasks_v2.CloudTasksClient:
    return server.client()


class Dashboard:
    """The dashboard of one server, seen through the session's browser."""

    def __init__(self, driver: WebDriver, server: ServerProcess, artifacts: Path) -> None:
        self.driver = driver
        self.server = server
        self.artifacts = artifacts
        self.base = f"{server.rest_url}/ui/"

    def open(self, path: str = "") -> None:
        """Load ``/ui/<path>``."""
        self.driver.get(self.base + path.lstrip("/"))

    def until(
        self,
        condition: Callable[[WebDriver], Literal[False] | T],
        message: str = "",
        timeout_s: float = WAIT_S,
    ) -> T:
        """``condition``'s first truthy answer, polled for at most ``timeout_s``. An element
        missing or replaced meanwhile (the live regions are swapped every 2 s) counts as a
        false answer."""
        wait = WebDriverWait(
            self.driver,
            timeout_s,
            poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        return wait.until(condition, message)

    def find(self, css: str, timeout_s: float = WAIT_S) -> WebElement:
        """The first visible element matching ``css``, once there is one."""
        return self.until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, css)), f"no visible {css}", timeout_s
        )

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def absent(self, css: str) -> bool:
        return not self.all(css)

    def text_of(self, css: str, timeout_s: float = WAIT_S) -> str:
        """The text of the first visible element matching ``css``, once there is one."""
        return self.find(css, timeout_s).text

    def wait_text(self, css: str, text: str, timeout_s: float = WAIT_S) -> None:
        """Wait until the element at ``css`` shows ``text``."""
        self.until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text), f"{css} never showed {text!r}"
        )

    def click(self, css: str) -> None:
        """Click the element at ``css`` once it is visible (found again if a live region was
        swapped between finding and clicking it)."""

        def clicked(driver: WebDriver) -> bool:
            found = driver.find_element(By.CSS_SELECTOR, css)
            if not found.is_displayed():
                return False
            found.click()
            return True

        self.until(clicked, f"could not click {css}")

    def press(self, value: str, *, within: str = "", confirm: bool | None = None) -> None:
        """Press the action button ``value`` (``<button name=action value=...>``, inside
        ``within`` if given). ``confirm`` answers the confirm dialog it opens: True accepts it,
        False dismisses it."""
        self.click(f'{within} button[name="action"][value="{value}"]'.strip())
        if confirm is not None:
            dialog = self.until(ec.alert_is_present(), "no confirm dialog")
            if confirm:
                dialog.accept()
            else:
                dialog.dismiss()

    def alert_open(self) -> bool:
        try:
            self.driver.switch_to.alert  # noqa: B018 - raises if none is open
        except NoAlertPresentException:
            return False
        return True

    def screenshot(self, name: str) -> Path:
        """Save what the window shows as ``<artifacts>/<name>.png``."""
        path = self.artifacts / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"could not save {path}"
        return path

    def console(self) -> list[dict[str, Any]]:
        """The browser's console messages since the last call (reading empties the log)."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return entries

    def csp_violations(self) -> list[str]:
        """Console messages since the last call that report a Content Security Policy violation."""
        return [
            entry["message"]
            for entry in self.console()
            if "Content Security Policy" in entry["message"] or "Content-Security-Policy" in entry["message"]
        ]


@pytest.fixture(scope="module")
def ui(driver: WebDriver, server: ServerProcess, artifacts: Path) -> Dashboard:
    """The dashboard of this module's server, with no cookie left from another module's server
    (cookies do not tell ports apart)."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    return Dashboard(driver, server, artifacts)


@pytest.fixture(autouse=True)
def _no_csp_violations(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every browser test ends without a CSP violation in the console."""
    if "ui" not in request.fixturenames:
        yield
        return
    dashboard: Dashboard = request.getfixturevalue("ui")
    dashboard.console()  # forget what earlier tests left
    yield
    assert dashboard.csp_violations() == []
