"""Tasks, Workflows and Runs pages in headless Chromium against a real `plum serve`.

A task created through the New-task dialog reaches Succeeded in the table through the SSE
stream (the page is never reloaded) and its drawer shows the result; a workflow created through
the dialog (after an invalid one is refused with the server's problems) is run, and the run page
shows its nodes reaching Succeeded live. Screenshots land in tests/e2e/artifacts/.
"""

import json
import re
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, async_playwright, expect

from tests.support.procs import start_plum

from .test_dashboard import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, screenshot

pytestmark = pytest.mark.e2e

WORKFLOW = {
    "name": "e2e-flow",
    "steps": [
        # The sleep keeps the run going for a moment, so that the run page sees it change.
        {"name": "builtin.sleep", "executor": "embedded", "payload": {"seconds": 1}},
        {"name": "builtin.echo", "executor": "embedded", "payload": {"from": "e2e-flow"}},
    ],
}
BAD_WORKFLOW = {
    "name": "e2e-bad",
    "nodes": [{"id": "a", "type": "task", "taskName": "builtin.echo"}],
    "edges": [{"from": "a", "to": "ghost"}],
}


def field(page: Page, testid: str) -> Locator:
    """The native input or textarea of an Element Plus field carrying `testid`."""
    return page.locator(
        f"input[data-testid='{testid}'], textarea[data-testid='{testid}'], "
        f"[data-testid='{testid}'] input, [data-testid='{testid}'] textarea"
    ).first


@pytest.mark.timeout(120)
async def test_tasks_workflows_and_runs(tmp_path: Path) -> None:
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

            # Tasks: empty at first, and the stream is live before anything is created.
            await page.goto(server.url + "/tasks")
            await expect(page.locator("h1")).to_have_text("Tasks")
            await expect(page.get_by_test_id("stream-status")).to_have_attribute(
                "data-state", "live"
            )
            table = page.get_by_test_id("tasks-table")
            await expect(table).to_contain_text("No tasks yet.")

            # New task: invalid JSON is caught on the client, then a valid payload is sent.
            await page.get_by_test_id("task-new").click()
            await field(page, "task-form-name").fill("builtin.echo")
            await field(page, "task-form-payload").fill('{"greeting": ')
            await expect(page.get_by_text("Not valid JSON")).to_be_visible()
            await field(page, "task-form-payload").fill('{"greeting": "hello from e2e"}')
            await expect(page.get_by_text("Not valid JSON")).to_have_count(0)
            await page.get_by_test_id("task-form-submit").click()
            await expect(page.get_by_test_id("task-form-submit")).to_be_hidden()

            row = table.locator("tbody tr", has_text="builtin.echo")
            await expect(row).to_have_count(1)
            await expect(row.get_by_test_id("task-state")).to_have_text("Succeeded")
            await expect(row.get_by_test_id("task-rerun")).to_be_enabled()
            task_short_id = (await row.get_by_test_id("task-open").inner_text()).strip()
            await screenshot(page, "tasks-en")

            # The drawer: fields, result, attempts.
            await row.get_by_test_id("task-open").click()
            drawer = page.get_by_role("dialog")
            await expect(page.get_by_test_id("task-detail-state")).to_have_text("Succeeded")
            await expect(page.get_by_test_id("task-detail-result")).to_contain_text(
                "hello from e2e"
            )
            await expect(page.get_by_test_id("task-attempts").locator("tbody tr")).to_have_count(1)
            await screenshot(page, "task-drawer-en")
            await page.keyboard.press("Escape")
            await expect(drawer).to_have_count(0)

            # Workflows: an invalid graph is refused with the server's problems.
            await page.get_by_test_id("nav-workflows").click()
            await expect(page).to_have_url(server.url + "/workflows")
            await page.get_by_test_id("workflow-new").click()
            editor = field(page, "workflow-dialog-json")
            await expect(editor).to_have_value(re.compile("builtin.echo"))
            await editor.fill(json.dumps(BAD_WORKFLOW))
            await page.get_by_test_id("workflow-dialog-submit").click()
            await expect(page.get_by_test_id("api-error-field")).to_contain_text("edges[0].to")
            await expect(page.get_by_test_id("api-error-problems")).to_contain_text("ghost")
            await screenshot(page, "workflow-dialog-en")

            await editor.fill(json.dumps(WORKFLOW, indent=2))
            await page.get_by_test_id("workflow-dialog-submit").click()
            await expect(page.get_by_test_id("workflow-dialog-submit")).to_be_hidden()
            workflow_row = page.get_by_test_id("workflows-table").locator(
                "tbody tr", has_text="e2e-flow"
            )
            await expect(workflow_row).to_contain_text("2")
            await screenshot(page, "workflows-en")

            # Run it (no params) and land on the run page; its nodes reach Succeeded live.
            await workflow_row.get_by_test_id("workflow-run").click()
            await page.get_by_test_id("run-dialog-submit").click()
            await expect(page).to_have_url(re.compile(r"/runs/[0-9a-f]{32}$"))
            nodes = page.get_by_test_id("run-nodes-table")
            await expect(nodes.locator("tbody tr")).to_have_count(2)
            await expect(nodes.get_by_test_id("node-state")).to_have_text(
                ["Succeeded", "Succeeded"]
            )
            await expect(page.get_by_test_id("run-detail-state")).to_have_text("Succeeded")
            await expect(page.get_by_test_id("run-retry")).to_be_disabled()
            await screenshot(page, "run-en")

            # The runs list shows it.
            await page.get_by_test_id("nav-runs").click()
            run_row = page.get_by_test_id("runs-table").locator("tbody tr", has_text="e2e-flow")
            await expect(run_row.get_by_test_id("run-state")).to_have_text("Succeeded")
            await screenshot(page, "runs-en")

            # Chinese.
            await page.get_by_test_id("lang-switch").get_by_text("中文").click()
            await page.get_by_test_id("nav-tasks").click()
            await expect(page.locator("h1")).to_have_text("任务")
            await expect(
                table.locator("tbody tr", has_text=task_short_id).get_by_test_id("task-state")
            ).to_have_text("成功")
            await screenshot(page, "tasks-zh")

            assert page_errors == []
        finally:
            await browser.close()
