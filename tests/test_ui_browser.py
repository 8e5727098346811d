"""`auditlock ui` end to end in a real browser: Debian's Chromium driven by Playwright, the view served by
uvicorn on a free loopback port, the archive written by the real agent to a moto S3 server.

Skips when /usr/bin/chromium is missing (fails instead with AUDITLOCK_REQUIRE_BROWSER=1; `.ci/install-chromium`
installs it). Playwright never downloads a browser here: it is always given Debian's executable.
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from auditlock.query.columns import EVENT_NAMES
from tests.support.query_env import OLDEST, QueryEnv
from tests.support.ui_env import PASSWORD, UiEnv, newest_first
from tests.support.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER_ENV = "AUDITLOCK_REQUIRE_BROWSER"
# Without the background-networking flags Chromium keeps calling home on a network that is closed here.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> Any:
    """A headless Debian Chromium under Playwright (skips, or fails when required, without one)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (install it with .ci/install-chromium)"
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(f"{reason} [{REQUIRE_BROWSER_ENV}=1]", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def served(story: QueryEnv, tmp_path: Path) -> Iterator[tuple[str, UiEnv]]:
    """The view served by uvicorn in a thread on 127.0.0.1 (a free port); yields its base URL."""
    ui = UiEnv(story, tmp_path / "cache", tmp_path / "ui-spool")
    server = uvicorn.Server(uvicorn.Config(ui.app(ui.config(page_size=50)), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="auditlock-ui-test-server", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn started")
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", ui
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class TestBrowser:
    def test_login_search_detail_export(self, chromium: Any, served: tuple[str, UiEnv], story: QueryEnv,
                                        tmp_path: Path) -> None:
        """Sign in, filter by target, see the right rows, open an event's diff, download the CSV; each step is
        in the view's own audit trail."""
        from playwright.sync_api import expect

        base, ui = served
        expected = newest_first([e for e in story.written if e.get("target_id") == "1001"])
        context = chromium.new_context(viewport={"width": 1366, "height": 820}, accept_downloads=True)
        page = context.new_page()
        try:
            response = page.goto(base + "/?target_type=Order")
            assert response is not None
            assert response.status == 401
            page.fill("#user", "alice")
            page.fill("#password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(base + "/?target_type=Order")
            expect(page.locator(".viewer")).to_contain_text("user:alice")

            page.fill("#f-target_id", "1001")
            page.fill("#f-since", OLDEST.start.date().isoformat())
            page.get_by_role("button", name="Search").click()
            expect(page.locator("#total")).to_have_text(str(len(expected)))
            rows = page.locator("table.events tbody tr")
            expect(rows).to_have_count(len(expected))
            links = [rows.nth(i).locator("td.time a").get_attribute("href") for i in range(len(expected))]
            assert [href.rsplit("/", 1)[-1] for href in links if href] == expected
            page.screenshot(path=str(tmp_path / "ui-search.png"), full_page=True)

            rows.filter(has_text="status: new → paid").locator("td.time a").click()
            expect(page.locator("table.diff del")).to_have_text("new")
            expect(page.locator("table.diff ins")).to_have_text("paid")
            page.screenshot(path=str(tmp_path / "ui-event.png"), full_page=True)

            page.get_by_role("link", name="All events for this target").click()
            expect(page.locator("#total")).to_have_text(str(len(expected)))
            with page.expect_download() as info:
                page.get_by_role("link", name="CSV").click()
            download = info.value
            assert download.suggested_filename.startswith("auditlock-shop-")
            with open(download.path(), newline="") as f:
                exported = list(csv.DictReader(f))
        finally:
            context.close()
        assert list(exported[0]) == list(EVENT_NAMES)
        assert [r["event_id"] for r in exported] == expected
        recorded = [(e["event_type"], e["actor_id"]) for e in ui.recorded("audit_log.searched", "audit_log.viewed",
                                                                            "audit_log.exported")]
        assert recorded == [("audit_log.searched", "user:alice"), ("audit_log.searched", "user:alice"),
                            ("audit_log.viewed", "user:alice"), ("audit_log.searched", "user:alice"),
                            ("audit_log.exported", "user:alice")]


class TestCrossSiteLinks:
    def test_link_from_another_site_is_not_recorded_until_followed_here(self, chromium: Any,
                                                                       served: tuple[str, UiEnv]) -> None:
        """A signed-in viewer clicking a search link on another site (its SameSite=Lax cookie is sent) gets 403
        and nothing is recorded; following the view's own link on that page runs and records the search."""
        from playwright.sync_api import expect

        base, ui = served
        other_site = "http://localhost:9/page"  # another site than 127.0.0.1 (Chromium fetches nothing there)
        context = chromium.new_context()
        page = context.new_page()
        try:
            page.goto(base + "/login")
            page.fill("#user", "alice")
            page.fill("#password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator(".viewer")).to_contain_text("user:alice")
            page.route(other_site, lambda route: route.fulfill(
                content_type="text/html", body=f'<a id="go" href="{base}/?actor=user%231">see this</a>'))
            page.goto(other_site)
            with page.expect_navigation() as navigation:
                page.click("#go")
            refused = navigation.value
            assert refused is not None
            assert refused.status == 403
            assert ui.recorded("audit_log.searched") == []
            page.get_by_role("link", name="Open /?actor=user%231").click()
            expect(page.locator("#total")).to_be_visible()
        finally:
            context.close()
        assert [e["payload"]["filters"] for e in ui.recorded("audit_log.searched")] == [{"actor": "user#1"}]
