"""The dashboard in headless Chromium against a real `plum serve` (all-in-one role).

Home shows the controller's version, role, a ticking uptime and the node count, kept live by
the SSE stream; the language switch is remembered across reloads; Nodes lists the nodes.
Screenshots of each language land in tests/e2e/artifacts/ (git-ignored) for a person to look at.
"""

import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright, expect

import plum
from tests.support.procs import start_plum

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT_MS = 10_000  # generous for a loaded CI machine; every wait ends as soon as its fact holds

UPTIME_EN = re.compile(r"^(\d+d )?\d+h \d{2}m \d{2}s$")
UPTIME_ZH = re.compile(r"^(\d+天 )?\d+小时 \d{2}分 \d{2}秒$")

# `make test` installs Debian's chromium; a missing browser is a failure, never a skip.
pytestmark = pytest.mark.e2e


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True, animations="disabled")


async def post_heartbeat(base_url: str, node_id: str, ip: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base_url}/v1/nodes/heartbeat", json={"nodeId": node_id, "ip": ip}
        ) as response:
            assert response.status < 300, await response.text()


@pytest.mark.timeout(120)
async def test_dashboard_home_nodes_and_language(tmp_path: Path) -> None:
    expect.set_options(timeout=WAIT_MS)
    async with start_plum(tmp_path) as server, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                locale="en-US", viewport={"width": 1280, "height": 800}
            )
            page = await context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            # Home, in English (the browser's language): facts of this controller.
            await page.goto(server.url + "/")
            await expect(page.get_by_test_id("home-version")).to_have_text(plum.__version__)
            await expect(page.get_by_test_id("home-role")).to_have_text("all")
            await expect(page.get_by_test_id("home-node-count")).to_have_text("1")
            await expect(page.get_by_test_id("home-healthy-count")).to_have_text("1")
            await expect(page.get_by_test_id("nav-nodes")).to_have_text("Nodes")

            # The uptime ticks on the client.
            uptime = page.get_by_test_id("home-uptime")
            await expect(uptime).to_have_text(UPTIME_EN)
            before = await uptime.inner_text()
            await expect(uptime).not_to_have_text(before)

            # A node joining shows up without a reload, through the SSE stream.
            await expect(page.get_by_test_id("stream-status")).to_have_attribute(
                "data-state", "live"
            )
            await post_heartbeat(server.url, "edge-1", "127.0.0.2")
            await expect(page.get_by_test_id("home-node-count")).to_have_text("2")
            await expect(page.get_by_test_id("home-healthy-count")).to_have_text("2")
            await screenshot(page, "home-en")

            # Switch to Chinese; the choice survives a reload.
            await page.get_by_test_id("lang-switch").get_by_text("中文").click()
            await expect(page.get_by_test_id("nav-nodes")).to_have_text("节点")
            await expect(page.get_by_test_id("home-uptime")).to_have_text(UPTIME_ZH)
            await page.reload()
            await expect(page.get_by_test_id("nav-nodes")).to_have_text("节点")
            await expect(page.get_by_test_id("home-uptime")).to_have_text(UPTIME_ZH)
            await expect(page.get_by_test_id("home-node-count")).to_have_text("2")
            assert await page.evaluate("localStorage.getItem('plum.locale')") == "zh"
            await screenshot(page, "home-zh")

            # Nodes lists both the all-in-one agent's node and edge-1.
            await page.get_by_test_id("nav-nodes").click()
            await expect(page).to_have_url(server.url + "/nodes")
            table = page.get_by_test_id("nodes-table")
            edge_row = table.locator("tr", has_text="edge-1")
            await expect(edge_row).to_contain_text("127.0.0.2")
            await expect(edge_row.get_by_test_id("node-health")).to_have_text("健康")
            await expect(table.locator("tbody tr")).to_have_count(2)
            await screenshot(page, "nodes-zh")

            await page.get_by_test_id("lang-switch").get_by_text("English").click()
            await expect(page.get_by_test_id("nav-nodes")).to_have_text("Nodes")
            await expect(edge_row.get_by_test_id("node-health")).to_have_text("Healthy")
            await screenshot(page, "nodes-en")

            assert page_errors == []
        finally:
            await browser.close()


@pytest.mark.timeout(120)
async def test_dashboard_asks_for_the_token_once(tmp_path: Path) -> None:
    expect.set_options(timeout=WAIT_MS)
    env = {"PLUM_AUTH_TOKENS": "s3cret-token"}
    async with start_plum(tmp_path, env=env) as server, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(locale="en-US")
            # A page that makes no REST call: the refused stream alone must bring the prompt.
            await page.goto(server.url + "/schedules")
            dialog = page.get_by_role("dialog")
            await expect(dialog).to_be_visible()
            await page.get_by_test_id("token-input").fill("s3cret-token")
            await page.get_by_test_id("token-submit").click()
            await expect(dialog).to_be_hidden()
            await expect(page.get_by_test_id("stream-status")).to_have_attribute(
                "data-state", "live"
            )
            assert await page.evaluate("localStorage.getItem('plum.token')") == "s3cret-token"

            await page.get_by_test_id("nav-home").click()
            await expect(page.get_by_test_id("home-version")).to_have_text(plum.__version__)

            # Remembered: a reload goes straight to the data.
            await page.reload()
            await expect(page.get_by_test_id("home-version")).to_have_text(plum.__version__)
            await expect(page.get_by_test_id("stream-status")).to_have_attribute(
                "data-state", "live"
            )
            await expect(dialog).to_have_count(0)
        finally:
            await browser.close()
