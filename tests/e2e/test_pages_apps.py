"""Apps, Deployments and Instances pages in headless Chromium against a real `plum serve`.

The demo app is uploaded through the Apps page's dialog (a second upload is refused with the
server's 409), deployed through the New-deployment dialog with one replica on the all-in-one
node, started, and its instance is seen reaching Running in the drawer through the SSE stream
(the page is never reloaded); its logs are opened, it is stopped and seen Stopped, and the
Instances page lists it. Screenshots land in tests/e2e/artifacts/.
"""

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect

from tests.support.procs import free_port, start_plum

from .test_dashboard import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, screenshot
from .test_pages import field

pytestmark = pytest.mark.e2e

DEMO_APP = Path(__file__).resolve().parents[2] / "examples" / "demo-app"
RUN_MS = 30_000  # an app's first start unpacks it and waits for its health check


def build_demo_app(out: Path, port: int) -> Path:
    done = subprocess.run(
        [sys.executable, str(DEMO_APP / "build.py"), "--out", str(out), "--port", str(port)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return Path(done.stdout.strip())


@pytest.mark.timeout(180)
async def test_apps_deployments_and_instances(tmp_path: Path) -> None:
    expect.set_options(timeout=WAIT_MS)
    app_zip = build_demo_app(tmp_path / "app", free_port())
    async with start_plum(tmp_path) as server, async_playwright() as p:
        async with aiohttp.ClientSession() as http, http.get(server.url + "/v1/nodes") as r:
            node_id = (await r.json())[0]["nodeId"]
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                locale="en-US", viewport={"width": 1280, "height": 800}
            )
            page = await context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            # Apps: empty, then the demo app uploaded through the dialog.
            await page.goto(server.url + "/apps")
            await expect(page.locator("h1")).to_have_text("Apps")
            apps = page.get_by_test_id("apps-table")
            await expect(apps).to_contain_text("No apps yet.")
            await page.get_by_test_id("app-upload").click()
            await page.get_by_test_id("app-form-file").set_input_files(app_zip)
            await page.get_by_test_id("app-form-submit").click()
            await expect(page.get_by_test_id("app-form-submit")).to_be_hidden()
            app_row = apps.locator("tbody tr", has_text="demo-app")
            await expect(app_row).to_contain_text("1.0.0")
            await expect(app_row).to_contain_text("demo:http:")

            # The same app again: the server's 409 is shown in the dialog.
            await page.get_by_test_id("app-upload").click()
            await page.get_by_test_id("app-form-file").set_input_files(app_zip)
            await page.get_by_test_id("app-form-submit").click()
            await expect(page.get_by_test_id("api-error")).to_contain_text("exists")
            await screenshot(page, "apps-upload-conflict-en")
            await page.keyboard.press("Escape")
            await expect(page.get_by_test_id("app-dialog")).to_be_hidden()
            await screenshot(page, "apps-en")

            # Deployments: created through the dialog, 1 replica on the all-in-one node.
            await page.get_by_test_id("nav-deployments").click()
            await expect(page).to_have_url(server.url + "/deployments")
            await expect(page.get_by_test_id("stream-status")).to_have_attribute(
                "data-state", "live"
            )
            deployments = page.get_by_test_id("deployments-table")
            await expect(deployments).to_contain_text("No deployments yet.")
            await page.get_by_test_id("deployment-new").click()
            await page.get_by_test_id("deployment-form-submit").click()
            await expect(page.get_by_text("A name is required.")).to_be_visible()
            await field(page, "deployment-form-name").fill("e2e-demo")
            await expect(page.get_by_test_id("deployment-form-app")).to_contain_text(
                "demo-app 1.0.0"
            )
            await expect(page.get_by_test_id("deployment-form-node")).to_contain_text(node_id)
            await expect(field(page, "deployment-form-count")).to_have_value("1")
            await screenshot(page, "deployment-dialog-en")
            await page.get_by_test_id("deployment-form-submit").click()
            await expect(page.get_by_test_id("deployment-form-submit")).to_be_hidden()

            row = deployments.locator("tbody tr", has_text="e2e-demo")
            await expect(row.get_by_test_id("deployment-state")).to_have_text("Stopped")
            await expect(row).to_contain_text("1 / 1")
            await expect(row.get_by_test_id("deployment-phases")).to_have_text("Stopped 1")

            # Open the drawer and start from there: the instance reaches Running live.
            await row.get_by_test_id("deployment-open").click()
            drawer = page.get_by_test_id("deployment-drawer")
            phase = drawer.get_by_test_id("instance-phase")
            await expect(phase).to_have_text("Stopped")
            await drawer.get_by_test_id("deployment-detail-start").click()
            await expect(drawer.get_by_test_id("deployment-detail-state")).to_have_text("Running")
            await expect(phase).to_have_text("Running", timeout=RUN_MS)
            await expect(drawer.get_by_test_id("instances-table")).to_contain_text(node_id)
            await screenshot(page, "deployment-drawer-running-en")

            # Its logs, fetched from the agent.
            await drawer.get_by_test_id("instance-logs").click()
            logs = page.get_by_test_id("instance-logs-text")
            await expect(logs).to_contain_text("demo-app listening on")
            await screenshot(page, "instance-logs-en")
            await page.get_by_test_id("instance-logs-dialog").get_by_role(
                "button", name="Close"
            ).click()
            await expect(page.get_by_test_id("instance-logs-dialog")).to_have_count(0)
            await page.keyboard.press("Escape")
            await expect(drawer).to_have_count(0)

            # The app cannot be deleted while deployed: the server's 409 is shown.
            await page.get_by_test_id("nav-apps").click()
            await apps.locator("tbody tr", has_text="demo-app").get_by_test_id(
                "app-delete"
            ).click()
            await page.locator(".el-popconfirm").get_by_role("button", name="Delete").click()
            await expect(page.locator(".el-message--error")).to_be_visible()
            await expect(apps.locator("tbody tr", has_text="demo-app")).to_have_count(1)

            # Instances: every deployment's, Running.
            await page.get_by_test_id("nav-instances").click()
            instances = page.get_by_test_id("instances-table")
            inst_row = instances.locator("tbody tr", has_text="e2e-demo")
            await expect(inst_row.get_by_test_id("instance-phase")).to_have_text("Running")
            await screenshot(page, "instances-en")

            # Stop it from the Deployments page, with the drawer open: Stopped, live.
            await page.get_by_test_id("nav-deployments").click()
            await row.get_by_test_id("deployment-open").click()
            await expect(phase).to_have_text("Running")
            await drawer.get_by_test_id("deployment-detail-stop").click()
            await expect(drawer.get_by_test_id("deployment-detail-state")).to_have_text("Stopped")
            await expect(phase).to_have_text("Stopped", timeout=RUN_MS)
            await screenshot(page, "deployment-drawer-stopped-en")
            await page.keyboard.press("Escape")
            await expect(row.get_by_test_id("deployment-phases")).to_have_text("Stopped 1")

            # Chinese.
            await page.get_by_test_id("lang-switch").get_by_text("中文").click()
            await expect(page.locator("h1")).to_have_text("部署")
            await expect(row.get_by_test_id("deployment-state")).to_have_text("已停止")
            await screenshot(page, "deployments-zh")

            assert page_errors == [], page_errors
        finally:
            await browser.close()
