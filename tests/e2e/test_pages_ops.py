"""Workers, Services and Schedules pages in headless Chromium against a real `plum serve`.

An HTTP worker and a service endpoint registered over REST while their page is open appear
through the SSE stream (the page is never reloaded); a schedule is created through the dialog
(a bad cron first, refused with the server's message under the cron field), shows its next run,
and switching it off clears that. Screenshots land in tests/e2e/artifacts/.
"""

import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.support.procs import start_plum

from .test_dashboard import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, screenshot
from .test_pages import field

pytestmark = pytest.mark.e2e

TIMEZONE = "Europe/Berlin"
WORKFLOW = {
    "name": "e2e-scheduled",
    "steps": [{"name": "builtin.echo", "executor": "embedded", "payload": {"from": "cron"}}],
}
WORKER = {
    "workerId": "e2e-http-worker",
    "nodeId": "e2e-node",
    "url": "http://127.0.0.1:9/run",
    "tasks": ["e2e.alpha", "e2e.beta"],
    "labels": {},
    "capacity": 3,
}
SERVICE = {
    "instanceId": "e2e-instance-1",
    "ip": "127.0.0.1",
    "endpoints": [{"serviceName": "e2e-svc", "port": 18080, "protocol": "http", "version": "1.2"}],
}


async def post(http: aiohttp.ClientSession, url: str, body: object) -> dict:
    async with http.post(url, json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def go(page: Page, url: str, title: str) -> None:
    await page.goto(url)
    await expect(page.locator("h1")).to_have_text(title)
    await expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")


@pytest.mark.timeout(120)
async def test_workers_services_and_schedules(tmp_path: Path) -> None:
    expect.set_options(timeout=WAIT_MS)
    async with (
        start_plum(tmp_path) as server,
        aiohttp.ClientSession() as http,
        async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                locale="en-US", timezone_id=TIMEZONE, viewport={"width": 1400, "height": 800}
            )
            page = await context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            # Workers: empty, then the worker registered over REST appears live.
            await go(page, server.url + "/workers", "Workers")
            workers = page.get_by_test_id("workers-table")
            await expect(workers).to_contain_text("No workers have registered yet.")
            await post(http, server.url + "/v1/workers/register", WORKER)
            row = workers.locator("tbody tr", has_text="e2e-http-worker")
            await expect(row).to_have_count(1)
            await expect(row.get_by_test_id("worker-transport")).to_have_text("http")
            await expect(row.get_by_test_id("worker-task")).to_have_text(["e2e.alpha", "e2e.beta"])
            await expect(row.get_by_test_id("worker-health")).to_have_text("Healthy")
            await expect(row).to_contain_text("e2e-node")
            await screenshot(page, "workers-en")

            # Delete it (confirmed in the popover).
            await row.get_by_test_id("worker-delete").click()
            await page.locator(".el-popconfirm").get_by_role("button", name="Delete").click()
            await expect(workers).to_contain_text("No workers have registered yet.")

            # Services: the endpoint registered over REST appears live; expanding shows it.
            await page.get_by_test_id("nav-services").click()
            await expect(page.locator("h1")).to_have_text("Services")
            services = page.get_by_test_id("services-table")
            await expect(services).to_contain_text("No services have registered yet.")
            await post(http, server.url + "/v1/services/register", SERVICE)
            service_row = services.locator("tbody tr", has_text="e2e-svc")
            await expect(service_row).to_have_count(1)
            await expect(service_row).to_contain_text("1.2")
            await service_row.locator(".el-table__expand-icon").click()
            endpoints = page.get_by_test_id("service-endpoints")
            endpoint_row = endpoints.locator("tbody tr", has_text="18080")
            await expect(endpoint_row).to_contain_text("127.0.0.1")
            await expect(endpoint_row).to_contain_text("e2e-instance-1")
            await expect(endpoint_row.get_by_test_id("endpoint-health")).to_have_count(1)
            await screenshot(page, "services-en")

            # Schedules: a workflow made over REST, then a schedule through the dialog.
            workflow = await post(http, server.url + "/v1/workflows", WORKFLOW)
            await page.get_by_test_id("nav-schedules").click()
            await expect(page.locator("h1")).to_have_text("Schedules")
            schedules = page.get_by_test_id("schedules-table")
            await expect(schedules).to_contain_text("No schedules yet.")
            await page.get_by_test_id("schedule-new").click()
            await expect(field(page, "schedule-form-timezone")).to_have_value(TIMEZONE)
            await page.get_by_test_id("schedule-form-workflow").click()
            await page.locator(".el-select-dropdown__item", has_text="e2e-scheduled").click()
            await field(page, "schedule-form-cron").fill("every five minutes")
            await page.get_by_test_id("schedule-form-submit").click()
            cron_item = page.get_by_test_id("schedule-form-cron-item")
            await expect(cron_item.locator(".el-form-item__error")).to_contain_text("cron")
            await screenshot(page, "schedule-dialog-en")

            await field(page, "schedule-form-cron").fill("*/5 * * * *")
            await field(page, "schedule-form-params").fill('{"who": "e2e"}')
            await page.get_by_test_id("schedule-form-submit").click()
            await expect(page.get_by_test_id("schedule-form-submit")).to_be_hidden()

            schedule_row = schedules.locator("tbody tr", has_text="e2e-scheduled")
            await expect(schedule_row).to_have_count(1)
            await expect(schedule_row.get_by_test_id("schedule-cron")).to_have_text("*/5 * * * *")
            await expect(schedule_row).to_contain_text(TIMEZONE)
            next_run = schedule_row.get_by_test_id("schedule-next")
            await expect(next_run).to_have_text(re.compile(r"\d"))
            await screenshot(page, "schedules-en")

            async with http.get(server.url + "/v1/schedules") as response:
                [stored] = await response.json()
            assert stored["workflowId"] == workflow["workflowId"]
            assert stored["timezone"] == TIMEZONE and stored["params"] == {"who": "e2e"}

            # Switched off: no next run.
            switch = schedule_row.get_by_test_id("schedule-enabled")
            await switch.click()
            await expect(next_run).to_have_text("—")
            await expect(switch).not_to_have_class(re.compile("is-checked"))
            async with http.get(server.url + "/v1/schedules") as response:
                [stored] = await response.json()
            assert stored["enabled"] is False and stored["nextRunAt"] is None
            await screenshot(page, "schedules-disabled-en")

            # Chinese.
            await page.get_by_test_id("lang-switch").get_by_text("中文").click()
            await expect(page.locator("h1")).to_have_text("定时计划")
            await screenshot(page, "schedules-zh")

            assert page_errors == []
        finally:
            await browser.close()
