"""The dashboard in a real headless Chromium, against the app on a real 127.0.0.1 socket.

Uses Debian's ``chromium`` (``.ci/run`` installs it) through Playwright's Python package; a
screenshot of the demo organisation is saved to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration_health.checks import default_registry
from integration_health.demo import (
    DEMO_ORG_ID,
    DEMO_SECRETS,
    DEMO_USER_ID,
    DemoVendors,
    demo_definitions,
    demo_vendors,
    seed_demo,
)
from integration_health.settings import Settings
from integration_health.store import SQLiteStore, TypeMode
from integration_health.web import create_app
from tests.web.live import HS_SECRET, LiveServer, claims_for, hs_token

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def in_own_thread(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine function to completion in a thread of its own (Playwright's sync API
    keeps an event loop running in this one)."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if failures:
        raise failures[0]


@dataclass
class Site:
    """The demo organisation served by the app, with its simulated vendors."""

    url: str
    vendors: DemoVendors
    database_url: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, DemoVendors]]:
    """The demo organisation in SQLite, with the fake vendors running (not checked yet: the
    app's own registry runs every check, as vendors like Visma rotate refresh tokens)."""
    for name, value in DEMO_SECRETS.items():
        os.environ.setdefault(name, value)
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'demo.db'}"
    settings = Settings(database_url=url, allow_private_networks=True)
    with demo_vendors() as vendors:

        async def seed() -> None:
            store = await SQLiteStore.open(url)
            registry = default_registry(settings)
            try:
                await seed_demo(store, registry, vendors.targets)
            finally:
                await store.aclose()

        in_own_thread(seed)
        yield url, vendors


@pytest.fixture(scope="module")
def site(demo_database: tuple[str, DemoVendors]) -> Iterator[Site]:
    """The unauthenticated (loopback) app polling every half second."""
    url, vendors = demo_database
    settings = Settings(
        database_url=url,
        allow_private_networks=True,
        dashboard_poll_s=0.5,
        run_now_interval_s=0,
    )
    with LiveServer(create_app(settings)) as server:
        first = httpx.post(f"{server.url}/api/orgs/{DEMO_ORG_ID}/health/checks", timeout=60)
        assert first.status_code == 200, first.text
        yield Site(server.url, vendors, url)


def tile_of(page: Any, name: str) -> Any:
    return page.locator(".tile", has=page.get_by_role("heading", name=name, exact=True))


def test_demo_org_tiles_chart_and_a_live_status_change(browser: Any, site: Site) -> None:
    """The demo org shows a tile per integration with status word, a trend chart with data
    points, and a status change appears without reloading the page."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(site.url + "/")
    page.wait_for_url(f"**/orgs/{DEMO_ORG_ID}")  # the only organisation: redirected to it
    names = [item["name"] for item in demo_definitions(site.vendors.targets)]
    expect(page.locator(".tile")).to_have_count(len(names))
    assert page.locator("#org-title").inner_text() == "Demo Company AS"
    words = {
        name: tile_of(page, name).locator(".tile-status .status-word").inner_text()
        for name in names
    }
    assert words.pop("Reporting API (slow)") == "Degraded"
    assert words.pop("Invoice API (expired token)") == "Unreachable"
    assert set(words.values()) == {"Healthy"}, words  # every other type, on its fake vendor
    for name in names:  # every tile draws its trend from the history endpoint
        tile_of(page, name).locator(".chart .point").first.wait_for(state="attached")

    webhook = tile_of(page, "Order webhook receiver")
    assert webhook.locator(".tile-status .status-word").inner_text() == "Healthy"
    webhook.locator(".chart .point").first.wait_for()
    assert webhook.locator(".chart .point").count() >= 1
    assert "Latency of the last" in webhook.locator("figcaption").inner_text()
    summary = page.locator(".summary").inner_text()
    assert "healthy" in summary and "unreachable" in summary

    page.evaluate("window.__stillTheSamePage = 42")
    site.vendors.http.health_status = 503
    try:
        ran = httpx.post(f"{site.url}/api/orgs/{DEMO_ORG_ID}/health/checks", timeout=30)
        assert ran.status_code == 200, ran.text
        webhook.locator(".tile-status .status-word", has_text="Unreachable").wait_for(
            timeout=10_000
        )
        webhook.locator(".chart .change-unreachable").wait_for(state="attached", timeout=10_000)
        assert webhook.locator(".problem .advice").inner_text().startswith("What to do")
        assert page.evaluate("window.__stillTheSamePage") == 42  # no reload happened
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    finally:
        site.vendors.http.health_status = 200
    assert errors == []
    page.close()


def test_dashboard_is_keyboard_usable_with_landmarks(browser: Any, site: Site) -> None:
    """Landmarks and labels are present, the chart has a text alternative, and "Check all
    now" can be reached and pressed with the keyboard alone."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{site.url}/orgs/{DEMO_ORG_ID}")
    page.locator(".tile").first.wait_for()
    for role in ("banner", "main", "contentinfo", "navigation"):
        assert page.get_by_role(role).count() >= 1, role
    chart = page.locator(".tile .chart").first
    assert chart.get_attribute("role") == "img"
    caption_id = chart.get_attribute("aria-labelledby")
    page.locator(f"[id='{caption_id}']").filter(has_text="check").wait_for()

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "check-now":
            break
    else:
        pytest.fail("'Check all now' is not reachable with Tab")
    page.keyboard.press("Enter")
    page.locator("#check-now-state", has_text="Checked").wait_for(timeout=15_000)
    page.close()


def test_check_now_says_what_the_vendor_asked_us_to_wait_for(browser: Any, site: Site) -> None:
    """With a type paused for rate limiting, "Check all now" probes the others and says which
    integration was not probed and until when."""
    until = datetime.now(UTC) + timedelta(hours=1)

    async def pause(mode: TypeMode | None) -> None:
        store = await SQLiteStore.open(site.database_url)
        try:
            await store.set_type_mode(mode, integration_type="fiken")
        finally:
            await store.aclose()

    in_own_thread(lambda: pause(TypeMode("fiken", until, "rate limited 5 times", until)))
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{site.url}/orgs/{DEMO_ORG_ID}")
        page.locator(".tile").first.wait_for()
        page.get_by_role("button", name="Check all now").click()
        state = page.locator("#check-now-state", has_text="Checked")
        state.wait_for(timeout=15_000)
        assert "1 not probed: the vendor asked us to wait (Fiken until" in state.inner_text()
        page.close()
    finally:
        in_own_thread(lambda: pause(None))


def test_signed_in_dashboard_asks_for_a_token(
    browser: Any, demo_database: tuple[str, DemoVendors]
) -> None:
    """With JWT auth configured the dashboard asks for a token, refuses a bad one, and shows
    the organisation once a member's token is given (kept in sessionStorage)."""
    url, _ = demo_database
    settings = Settings(database_url=url, jwt_secret=HS_SECRET, dashboard_poll_s=0.5)
    with LiveServer(create_app(settings)) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.locator("#login").wait_for()
        assert page.locator("#content").is_hidden()
        page.get_by_label("Access token").fill("not-a-valid-token")
        page.get_by_role("button", name="Sign in").click()
        page.locator("#login-reason", has_text="refused").wait_for()

        page.get_by_label("Access token").fill(hs_token(claims_for(DEMO_USER_ID)))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"**/orgs/{DEMO_ORG_ID}")
        page.locator(".tile").first.wait_for()
        stored = page.evaluate("sessionStorage.getItem('integration-health.token')")
        assert stored and stored.count(".") == 2
        page.get_by_role("button", name="Sign out").click()
        page.locator("#login").wait_for()
        assert page.evaluate("sessionStorage.getItem('integration-health.token')") is None
        page.close()
