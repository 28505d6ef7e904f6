"""Task definitions and task runs through the REST API, in-process, on a fake clock.

The in-process controller runs only the core (no agent), so these tests use the builtins;
`os_process` against real processes is in tests/integration/test_tasks.py. Every wait is on
the bus: a future is created before the action that resolves it.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from plum.bus import TaskChanged, TaskRemoved
from plum.engine.tasks import TaskState
from plum.executors.base import ExecutionResult, LogStream
from plum.executors.builtin import builtin_def_id
from tests.api.test_skeleton import assert_error
from tests.support.sse import EventStream

pytestmark = pytest.mark.timeout(30)

SAFETY = 5.0  # never reached when all is well
BUILTINS = {"builtin.echo", "builtin.delay", "builtin.sleep", "builtin.fail"}
RUN_FIELDS = (  # API.md, "Task run fields"
    "taskId, name, executor, targetKind, targetRef, state, payload, result, error, timeoutSec, "
    "maxRetries, attempt, labels, defId, originTaskId, workflowRunId, dagNodeId, scheduledOn, "
    "createdAt, startedAt, finishedAt"
).split(", ")


@pytest.fixture
async def plum(api_services):
    """(client, services); running tasks are canceled afterwards, so that stopping the engine
    does not wait its drain grace for a fake-clock delay that never ends."""
    client, svc = api_services
    yield client, svc
    for state in ("Pending", "Running"):
        for task in await list_tasks(client, state=state):
            await client.post(f"/v1/tasks/{task['taskId']}?action=cancel")


def changed(bus, task_id: str | None = None, **want) -> asyncio.Future:
    """A future for the next `TaskChanged` of that task (or any) whose fields match `want`."""

    def match(event) -> bool:
        if not isinstance(event, TaskChanged):
            return False
        task = event.task
        if task_id is not None and task.task_id != task_id:
            return False
        return all(getattr(task, key) == value for key, value in want.items())

    return bus.wait_for(match)


async def settle(future: asyncio.Future):
    return await asyncio.wait_for(future, SAFETY)


async def create(client, status: int = 201, **body) -> dict:
    response = await client.post("/v1/tasks", json={"executor": "embedded", **body})
    assert response.status == status, await response.text()
    return await response.json()


async def get_task(client, task_id: str) -> dict:
    response = await client.get(f"/v1/tasks/{task_id}")
    assert response.status == 200, await response.text()
    return await response.json()


async def list_tasks(client, **query) -> list[dict]:
    response = await client.get("/v1/tasks", params=query)
    assert response.status == 200, await response.text()
    return await response.json()


async def task_count(client) -> int:
    response = await client.get("/v1/tasks", params={"limit": 1})
    return int(response.headers["X-Total-Count"])


async def def_count(client) -> int:
    response = await client.get("/v1/task-defs", params={"limit": 1})
    return int(response.headers["X-Total-Count"])


async def create_def(client, **body) -> dict:
    response = await client.post("/v1/task-defs", json={"executor": "embedded", **body})
    assert response.status == 201, await response.text()
    return await response.json()


async def start_running(client, svc, **body) -> dict:
    """Create a Queued task, start it, and return it once it is Running."""
    task = await create(client, **body)
    running = changed(svc.bus, task["taskId"], state=TaskState.RUNNING)
    response = await client.post(f"/v1/tasks/{task['taskId']}?action=start")
    assert response.status == 200, await response.text()
    await settle(running)
    return task


# --- task definitions ---------------------------------------------------------------------


async def test_builtin_defs_exist_from_the_first_start(plum):
    client, _ = plum
    response = await client.get("/v1/task-defs")
    defs = {d["name"]: d for d in await response.json()}
    assert set(defs) == BUILTINS
    assert response.headers["X-Total-Count"] == "4"
    for name, d in defs.items():
        assert d["builtin"] is True
        assert d["executor"] == "embedded"
        assert d["defId"] == builtin_def_id(name)
        assert len(d["defId"]) == 32


async def test_builtin_defs_cannot_be_deleted(plum):
    client, _ = plum
    for name in BUILTINS:
        response = await client.delete(f"/v1/task-defs/{builtin_def_id(name)}")
        assert response.status == 403
        assert_error(await response.json(), "forbidden")
    assert await def_count(client) == 4


@pytest.mark.parametrize("name", ["builtin.echo", "builtin.mine"])
async def test_builtin_prefix_is_reserved(plum, name):
    client, _ = plum
    response = await client.post("/v1/task-defs", json={"name": name, "executor": "embedded"})
    assert response.status == 422
    assert_error(await response.json(), "invalid", "name")
    assert await def_count(client) == 4


async def test_duplicate_def_name_is_409(plum):
    client, _ = plum
    await create_def(client, name="report")
    response = await client.post("/v1/task-defs", json={"name": "report", "executor": "embedded"})
    assert response.status == 409
    assert_error(await response.json(), "conflict", "name")
    assert await def_count(client) == 5


async def test_def_create_get_list_delete(plum):
    client, _ = plum
    created = await create_def(
        client, name="nightly", description="the nightly job", labels={"team": "a"},
        defaultPayload={"x": 1}, timeoutSec=30, maxRetries=2,
    )
    def_id = created["defId"]
    assert len(def_id) == 32 and created["builtin"] is False
    one = await (await client.get(f"/v1/task-defs/{def_id}")).json()
    assert one == created
    assert (one["name"], one["description"], one["labels"]) == ("nightly", "the nightly job",
                                                               {"team": "a"})
    assert (one["defaultPayload"], one["timeoutSec"], one["maxRetries"]) == ({"x": 1}, 30, 2)
    listing = await client.get("/v1/task-defs")
    assert listing.headers["X-Total-Count"] == "5"
    assert (await listing.json())[0]["defId"] == def_id  # newest first
    assert (await client.delete(f"/v1/task-defs/{def_id}")).status == 204
    missing = await client.get(f"/v1/task-defs/{def_id}")
    assert missing.status == 404
    assert_error(await missing.json(), "not_found")
    assert (await client.delete(f"/v1/task-defs/{def_id}")).status == 404


async def test_run_def_starts_at_once_and_merges_the_default_payload(plum):
    client, svc = plum
    d = await create_def(client, name="merge", defaultPayload={"a": 1, "b": 2}, timeoutSec=30,
                         labels={"team": "a"})
    waiting = changed(svc.bus, name="merge", reason="waiting for a worker serving 'merge'")
    response = await client.post(
        f"/v1/task-defs/{d['defId']}?action=run",
        json={"payload": {"b": 3, "c": 4}, "timeoutSec": 7, "labels": {"run": "1"}},
    )
    assert response.status == 201, await response.text()
    task = await response.json()
    assert task["state"] == "Pending"  # started at once, not Queued
    assert task["attempt"] == 1
    assert (task["defId"], task["name"], task["executor"]) == (d["defId"], "merge", "embedded")
    assert task["payload"] == {"a": 1, "b": 3, "c": 4}
    assert task["timeoutSec"] == 7
    assert task["labels"] == {"team": "a", "run": "1"}
    await settle(waiting)  # no builtin or worker serves "merge": it waits Pending
    stored = await get_task(client, task["taskId"])
    assert stored["payload"] == {"a": 1, "b": 3, "c": 4}


async def test_run_def_without_body_uses_the_defaults(plum):
    client, svc = plum
    d = await create_def(client, name="plain", defaultPayload={"a": 1})
    waiting = changed(svc.bus, name="plain", reason="waiting for a worker serving 'plain'")
    response = await client.post(f"/v1/task-defs/{d['defId']}?action=run")
    assert response.status == 201, await response.text()
    assert (await response.json())["payload"] == {"a": 1}
    await settle(waiting)


async def test_run_unknown_def_is_404_and_stores_nothing(plum):
    client, _ = plum
    response = await client.post("/v1/task-defs/" + "0" * 32 + "?action=run", json={})
    assert response.status == 404
    assert_error(await response.json(), "not_found")
    assert await task_count(client) == 0


async def test_deleting_a_referenced_def_is_409_unless_forced(plum):
    client, svc = plum
    d = await create_def(client, name="referenced")
    for _ in range(2):
        waiting = changed(svc.bus, name="referenced", state=TaskState.PENDING,
                          reason="waiting for a worker serving 'referenced'")
        assert (await client.post(f"/v1/task-defs/{d['defId']}?action=run")).status == 201
        await settle(waiting)
    response = await client.delete(f"/v1/task-defs/{d['defId']}")
    assert response.status == 409
    body = await response.json()
    assert_error(body, "conflict")
    assert body["error"]["referenced"] == 2
    assert (await client.get(f"/v1/task-defs/{d['defId']}")).status == 200
    assert (await client.delete(f"/v1/task-defs/{d['defId']}?force=true")).status == 204
    assert (await client.get(f"/v1/task-defs/{d['defId']}")).status == 404


# --- task runs: create, start, builtins ---------------------------------------------------


async def test_create_is_queued_until_started(plum):
    client, svc = plum
    task = await create(client, name="builtin.echo", payload={"n": 1})
    assert task["state"] == "Queued"
    assert task["attempt"] == 0
    assert task["defId"] == builtin_def_id("builtin.echo")
    assert (await get_task(client, task["taskId"]))["state"] == "Queued"
    succeeded = changed(svc.bus, task["taskId"], state=TaskState.SUCCEEDED)
    response = await client.post(f"/v1/tasks/{task['taskId']}?action=start")
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "Pending"
    await settle(succeeded)
    again = await client.post(f"/v1/tasks/{task['taskId']}?action=start")
    assert again.status == 409
    assert_error(await again.json(), "invalid_state")


async def test_start_alias(plum):
    client, svc = plum
    task = await create(client, name="builtin.echo")
    succeeded = changed(svc.bus, task["taskId"], state=TaskState.SUCCEEDED)
    response = await client.post(f"/v1/tasks/start/{task['taskId']}")
    assert response.status == 200, await response.text()
    await settle(succeeded)


async def test_unknown_action_and_unknown_task(plum):
    client, _ = plum
    task = await create(client, name="builtin.echo")
    bad = await client.post(f"/v1/tasks/{task['taskId']}?action=explode")
    assert bad.status == 400
    assert_error(await bad.json(), "invalid", "action")
    missing = await client.get("/v1/tasks/" + "0" * 32)
    assert missing.status == 404
    assert_error(await missing.json(), "not_found")
    assert (await client.post("/v1/tasks/start/" + "0" * 32)).status == 404


async def test_echo_returns_its_payload(plum):
    client, svc = plum
    succeeded = changed(svc.bus, name="builtin.echo", state=TaskState.SUCCEEDED)
    task = await create(client, name="builtin.echo", payload={"hello": [1, 2]}, autoStart=True)
    assert task["state"] == "Pending"
    event = await settle(succeeded)
    assert event.task.task_id == task["taskId"]
    done = await get_task(client, task["taskId"])
    assert set(RUN_FIELDS) <= set(done)
    assert re.fullmatch(r"[0-9a-f]{32}", done["taskId"])
    assert done["result"] == {"echo": {"hello": [1, 2]}}
    assert done["error"] is None
    assert done["attempt"] == 1
    assert done["startedAt"] is not None and done["finishedAt"] is not None
    assert [(a["attempt"], a["state"]) for a in done["attempts"]] == [(1, "Succeeded")]


@pytest.mark.parametrize(
    ("payload", "error"),
    [({"message": "disk full"}, "disk full"), (None, "builtin fail"), ({}, "builtin fail")],
)
async def test_fail_fails_with_the_message(plum, payload, error):
    client, svc = plum
    failed = changed(svc.bus, name="builtin.fail", state=TaskState.FAILED)
    task = await create(client, name="builtin.fail", payload=payload, autoStart=True)
    await settle(failed)
    done = await get_task(client, task["taskId"])
    assert (done["state"], done["error"]) == ("Failed", error)
    assert done["attempts"][-1]["error"] == error


async def test_embedded_name_nobody_serves_waits_pending_until_its_timeout(plum, clock):
    client, svc = plum
    waiting = changed(svc.bus, name="reports.build",
                      reason="waiting for a worker serving 'reports.build'")
    task = await create(client, name="reports.build", autoStart=True, timeoutSec=5)
    await settle(waiting)
    assert (await get_task(client, task["taskId"]))["state"] == "Pending"
    timed_out = changed(svc.bus, task["taskId"], state=TaskState.TIMEOUT)
    clock.advance(5)
    await settle(timed_out)
    done = await get_task(client, task["taskId"])
    assert done["error"] == "timed out after 5s"


async def test_delay_runs_until_the_clock_reaches_it(plum, clock):
    client, svc = plum
    task = await start_running(client, svc, name="builtin.delay", payload={"seconds": 5})
    succeeded = changed(svc.bus, task["taskId"], state=TaskState.SUCCEEDED)
    clock.advance(4.999)
    assert (await get_task(client, task["taskId"]))["state"] == "Running"
    assert not succeeded.done()
    clock.advance(0.001)
    await settle(succeeded)
    done = await get_task(client, task["taskId"])
    assert done["result"] == {"seconds": 5}
    assert done["finishedAt"] - done["startedAt"] == pytest.approx(5, abs=0.002)


async def test_sleep_is_delay_with_a_default_of_one_second(plum, clock):
    client, svc = plum
    task = await start_running(client, svc, name="builtin.sleep")
    succeeded = changed(svc.bus, task["taskId"], state=TaskState.SUCCEEDED)
    clock.advance(1)
    await settle(succeeded)
    assert (await get_task(client, task["taskId"]))["result"] == {"seconds": 1}


async def test_timeout_under_the_fake_clock(plum, clock):
    client, svc = plum
    task = await start_running(
        client, svc, name="builtin.delay", payload={"seconds": 10}, timeoutSec=2
    )
    timed_out = changed(svc.bus, task["taskId"], state=TaskState.TIMEOUT)
    clock.advance(1.999)
    assert (await get_task(client, task["taskId"]))["state"] == "Running"
    assert not timed_out.done()
    clock.advance(0.001)
    await settle(timed_out)
    clock.advance(20)  # the delay was stopped: it does not come back as a success
    done = await get_task(client, task["taskId"])
    assert done["state"] == "Timeout"
    assert done["error"] == "timed out after 2s"
    assert done["result"] is None
    assert [(a["attempt"], a["state"]) for a in done["attempts"]] == [(1, "Timeout")]


async def test_retries_honour_the_backoff_and_record_attempts(plum, clock):
    client, svc = plum
    task = await create(client, name="builtin.fail", payload={"message": "boom"},
                        maxRetries=2, retryBackoffSec=1)
    task_id = task["taskId"]

    def retried(attempt: int) -> asyncio.Future:
        return changed(svc.bus, task_id, state=TaskState.PENDING, attempt=attempt,
                       error="boom")

    second = retried(2)
    assert (await client.post(f"/v1/tasks/{task_id}?action=start")).status == 200
    await settle(second)
    waiting = await get_task(client, task_id)
    assert waiting["reason"] == "retry 1 of 2 in 1s after: boom"

    running = changed(svc.bus, task_id, state=TaskState.RUNNING, attempt=2)
    third = retried(3)
    clock.advance(0.999)  # not before the backoff
    assert (await get_task(client, task_id))["attempt"] == 2
    assert not running.done()
    clock.advance(0.001)
    await settle(running)
    await settle(third)

    running = changed(svc.bus, task_id, state=TaskState.RUNNING, attempt=3)
    failed = changed(svc.bus, task_id, state=TaskState.FAILED)
    clock.advance(1.999)  # the second backoff is twice the first
    assert (await get_task(client, task_id))["state"] == "Pending"
    assert not running.done()
    clock.advance(0.001)
    await settle(failed)
    assert running.done()

    done = await get_task(client, task_id)
    assert (done["state"], done["attempt"], done["error"]) == ("Failed", 3, "boom")
    assert [(a["attempt"], a["state"], a["error"]) for a in done["attempts"]] == [
        (1, "Failed", "boom"), (2, "Failed", "boom"), (3, "Failed", "boom"),
    ]
    finished = [a["finishedAt"] for a in done["attempts"]]
    assert finished[1] - finished[0] == pytest.approx(1, abs=0.002)
    assert finished[2] - finished[1] == pytest.approx(2, abs=0.002)


# --- cancel, rerun, delete -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["query", "alias"])
async def test_cancel_a_running_delay(plum, clock, form):
    client, svc = plum
    task = await start_running(client, svc, name="builtin.delay", payload={"seconds": 10})
    task_id = task["taskId"]
    url = f"/v1/tasks/{task_id}?action=cancel" if form == "query" else f"/v1/tasks/cancel/{task_id}"
    response = await client.post(url)
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "Canceled"
    clock.advance(20)  # the stopped delay never reports back
    done = await get_task(client, task_id)
    assert (done["state"], done["error"]) == ("Canceled", "canceled")
    assert done["finishedAt"] is not None


async def test_cancel_a_queued_task(plum):
    client, _ = plum
    task = await create(client, name="builtin.echo")
    response = await client.post(f"/v1/tasks/cancel/{task['taskId']}")
    assert response.status == 200, await response.text()
    assert (await get_task(client, task["taskId"]))["state"] == "Canceled"


async def test_cancel_a_finished_task_is_409(plum):
    client, svc = plum
    succeeded = changed(svc.bus, name="builtin.echo", state=TaskState.SUCCEEDED)
    task = await create(client, name="builtin.echo", autoStart=True)
    await settle(succeeded)
    for url in (f"/v1/tasks/{task['taskId']}?action=cancel", f"/v1/tasks/cancel/{task['taskId']}"):
        response = await client.post(url)
        assert response.status == 409
        assert_error(await response.json(), "invalid_state")
    assert (await get_task(client, task["taskId"]))["state"] == "Succeeded"


@pytest.mark.parametrize("form", ["query", "alias"])
async def test_rerun_creates_a_new_run(plum, form):
    client, svc = plum
    succeeded = changed(svc.bus, name="builtin.echo", state=TaskState.SUCCEEDED)
    old = await create(client, name="builtin.echo", payload={"v": 1}, autoStart=True,
                       labels={"k": "v"}, timeoutSec=9)
    await settle(succeeded)
    succeeded = changed(svc.bus, name="builtin.echo", state=TaskState.SUCCEEDED)
    url = (f"/v1/tasks/{old['taskId']}?action=rerun" if form == "query"
           else f"/v1/tasks/rerun/{old['taskId']}")
    response = await client.post(url)
    assert response.status == 201, await response.text()
    new = await response.json()
    assert new["taskId"] != old["taskId"]
    assert new["originTaskId"] == old["taskId"]
    assert (new["payload"], new["labels"], new["timeoutSec"]) == ({"v": 1}, {"k": "v"}, 9)
    event = await settle(succeeded)
    assert event.task.task_id == new["taskId"]
    assert (await get_task(client, new["taskId"]))["result"] == {"echo": {"v": 1}}
    assert (await get_task(client, old["taskId"]))["originTaskId"] is None
    assert await task_count(client) == 2


async def test_delete_cancels_a_running_task_first(plum):
    client, svc = plum
    task = await start_running(client, svc, name="builtin.delay", payload={"seconds": 10})
    task_id = task["taskId"]
    canceled = changed(svc.bus, task_id, state=TaskState.CANCELED)
    removed = svc.bus.wait_for(lambda e: isinstance(e, TaskRemoved) and e.task_id == task_id)
    assert (await client.delete(f"/v1/tasks/{task_id}")).status == 204
    await settle(canceled)
    await settle(removed)
    assert (await client.get(f"/v1/tasks/{task_id}")).status == 404
    assert (await client.delete(f"/v1/tasks/{task_id}")).status == 404
    assert await task_count(client) == 0
    assert svc.engine.get_active(task_id) is None


async def test_delete_a_finished_task(plum):
    client, svc = plum
    succeeded = changed(svc.bus, name="builtin.echo", state=TaskState.SUCCEEDED)
    task = await create(client, name="builtin.echo", autoStart=True)
    await settle(succeeded)
    assert (await client.delete(f"/v1/tasks/{task['taskId']}")).status == 204
    assert (await client.get(f"/v1/tasks/{task['taskId']}")).status == 404


# --- listing ------------------------------------------------------------------------------


async def test_list_filters_newest_first_with_total(plum):
    client, svc = plum
    a = await create(client, name="builtin.echo")
    failed = changed(svc.bus, name="builtin.fail", state=TaskState.FAILED)
    b = await create(client, name="builtin.fail", autoStart=True)
    await settle(failed)
    c = await create(client, name="builtin.echo")
    d_def = await create_def(client, name="listed")  # no worker serves it: it waits Pending
    waiting = changed(svc.bus, name="listed", reason="waiting for a worker serving 'listed'")
    d = await (await client.post(f"/v1/task-defs/{d_def['defId']}?action=run")).json()
    await settle(waiting)

    def ids(tasks):
        return [t["taskId"] for t in tasks]

    everything = await client.get("/v1/tasks")
    assert everything.headers["X-Total-Count"] == "4"
    assert ids(await everything.json()) == [d["taskId"], c["taskId"], b["taskId"], a["taskId"]]
    assert ids(await list_tasks(client, state="Queued")) == [c["taskId"], a["taskId"]]
    assert ids(await list_tasks(client, state="Failed")) == [b["taskId"]]
    assert ids(await list_tasks(client, state="Pending")) == [d["taskId"]]
    assert ids(await list_tasks(client, name="builtin.echo")) == [c["taskId"], a["taskId"]]
    assert ids(await list_tasks(client, defId=d_def["defId"])) == [d["taskId"]]
    assert ids(await list_tasks(client, defId=builtin_def_id("builtin.fail"))) == [b["taskId"]]
    assert ids(await list_tasks(client, state="Queued", name="builtin.fail")) == []
    page = await client.get("/v1/tasks", params={"limit": 2, "offset": 1, "state": "Queued"})
    assert page.headers["X-Total-Count"] == "2"
    assert ids(await page.json()) == [a["taskId"]]
    # newest by creation, not by the last change
    succeeded = changed(svc.bus, a["taskId"], state=TaskState.SUCCEEDED)
    await client.post(f"/v1/tasks/{a['taskId']}?action=start")
    await settle(succeeded)
    assert ids(await list_tasks(client)) == [d["taskId"], c["taskId"], b["taskId"], a["taskId"]]


async def test_unknown_state_filter_is_400(plum):
    client, _ = plum
    response = await client.get("/v1/tasks?state=Bogus")
    assert response.status == 400
    assert_error(await response.json(), "invalid", "state")


# --- bad input stores nothing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "executor": "teleport"}, "executor"),
        ({"name": "x", "executor": "os_process", "payload": {"args": ["-l"]}}, "payload.command"),
        ({"name": "x", "executor": "os_process", "payload": {"command": ""}}, "payload.command"),
        ({"name": "x", "executor": "os_process"}, "payload"),
        ({"name": "builtin.echo", "executor": "embedded", "payload": [1, 2]}, "payload"),
        ({"name": "builtin.echo", "executor": "embedded", "payload": "text"}, "payload"),
        ({"name": "builtin.echo", "executor": "embedded", "timeoutSec": -1}, "timeoutSec"),
        ({"name": "builtin.echo", "executor": "embedded", "maxRetries": -1}, "maxRetries"),
        ({"name": "builtin.echo", "executor": "embedded", "maxRetries": "2"}, "maxRetries"),
        ({"name": "svc", "executor": "service"}, "targetRef"),
        ({"name": "x", "executor": "os_process", "targetKind": "node",
          "payload": {"command": "true"}}, "targetRef"),
        ({"executor": "embedded"}, "name"),
        ({"name": "", "executor": "embedded"}, "name"),
    ],
)
async def test_bad_task_is_rejected_naming_the_field(plum, body, field):
    client, _ = plum
    response = await client.post("/v1/tasks", json={**body, "autoStart": True})
    assert response.status == 422, await response.text()
    assert_error(await response.json(), "invalid", field)
    assert await task_count(client) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "d", "executor": "teleport"}, "executor"),
        ({"name": "d", "executor": "service"}, "targetRef"),
        ({"name": "d", "executor": "embedded", "timeoutSec": -5}, "timeoutSec"),
        ({"name": "d", "executor": "embedded", "maxRetries": -1}, "maxRetries"),
        ({"name": "d", "executor": "os_process", "defaultPayload": {"command": 3}},
         "defaultPayload.command"),
    ],
)
async def test_bad_def_is_rejected_naming_the_field(plum, body, field):
    client, _ = plum
    response = await client.post("/v1/task-defs", json=body)
    assert response.status == 422, await response.text()
    assert_error(await response.json(), "invalid", field)
    assert await def_count(client) == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": [1]}, "payload"),
        ({"timeoutSec": -1}, "timeoutSec"),
        ({"maxRetries": -1}, "maxRetries"),
        ({"payload": {"args": ["x"]}}, "payload.command"),
    ],
)
async def test_bad_def_run_is_rejected_naming_the_field(plum, body, field):
    client, _ = plum
    d = await create_def(client, name="proc", executor="os_process")
    response = await client.post(f"/v1/task-defs/{d['defId']}?action=run", json=body)
    assert response.status == 422, await response.text()
    assert_error(await response.json(), "invalid", field)
    assert await task_count(client) == 0


# --- fencing --------------------------------------------------------------------------------


async def test_a_result_for_an_older_attempt_changes_nothing(plum):
    client, svc = plum
    task = await create(client, name="builtin.fail", maxRetries=2, retryBackoffSec=1)
    task_id = task["taskId"]
    retrying = changed(svc.bus, task_id, state=TaskState.PENDING, attempt=2)
    await client.post(f"/v1/tasks/{task_id}?action=start")
    await settle(retrying)
    before = await get_task(client, task_id)
    published = svc.bus.published
    await svc.engine.report(task_id, 1, ExecutionResult.success({"late": True}))
    after = await get_task(client, task_id)
    assert svc.bus.published == published
    assert after == before
    assert (after["state"], after["attempt"], after["result"]) == ("Pending", 2, None)


async def test_a_duplicate_result_after_success_changes_nothing(plum):
    client, svc = plum
    succeeded = changed(svc.bus, name="builtin.echo", state=TaskState.SUCCEEDED)
    task = await create(client, name="builtin.echo", payload={"v": 1}, autoStart=True)
    await settle(succeeded)
    before = await get_task(client, task["taskId"])
    published = svc.bus.published
    await svc.engine.report(task["taskId"], 1, ExecutionResult.failure("late failure"))
    await svc.engine.report(task["taskId"], 1, ExecutionResult.success({"other": 1}))
    assert svc.bus.published == published
    after = await get_task(client, task["taskId"])
    assert after == before
    assert (after["state"], after["result"]) == ("Succeeded", {"echo": {"v": 1}})


# --- SSE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/stream?topics=tasks", "/v1/tasks/stream"])
async def test_stream_delivers_each_state_change_in_order(plum, path):
    client, _ = plum
    async with client.get(path) as response:
        assert response.status == 200
        stream = EventStream(response)
        task = await create(client, name="builtin.echo", payload={"s": 1}, autoStart=True)
        events = [await stream.next(SAFETY) for _ in range(3)]
    assert {e.event for e in events} == {"tasks"}
    assert {e.json()["taskId"] for e in events} == {task["taskId"]}
    assert [e.json()["state"] for e in events] == ["Pending", "Running", "Succeeded"]
    assert events[-1].json()["result"] == {"echo": {"s": 1}}
    ids = [int(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_stream_reports_a_deleted_task(plum):
    client, _ = plum
    task = await create(client, name="builtin.echo")
    async with client.get("/v1/stream?topics=tasks") as response:
        stream = EventStream(response)
        assert (await client.delete(f"/v1/tasks/{task['taskId']}")).status == 204
        event = await stream.next(SAFETY)
    assert event.json() == {"taskId": task["taskId"], "deleted": True}


# --- logs ---------------------------------------------------------------------------------


class ScriptedAgent:
    """A task channel in place of a real agent: logs two lines and succeeds."""

    node_id = "node-fake"
    capacity = 4

    async def run(self, request, ctx) -> ExecutionResult:
        await ctx.mark_running()
        ctx.log(LogStream.STDOUT, "hello")
        ctx.log(LogStream.STDERR, "oops")
        return ExecutionResult.success(
            {"exitCode": 0, "stdout": "hello\n", "stderr": "oops\n"}
        )


async def test_logs_of_a_builtin(plum):
    client, svc = plum
    succeeded = changed(svc.bus, name="builtin.echo", state=TaskState.SUCCEEDED)
    task = await create(client, name="builtin.echo", autoStart=True)
    await settle(succeeded)
    response = await client.get(f"/v1/tasks/{task['taskId']}/logs")
    assert response.status == 200
    assert await response.json() == {"taskId": task["taskId"], "state": "Succeeded", "lines": []}
    missing = await client.get("/v1/tasks/" + "0" * 32 + "/logs")
    assert missing.status == 404


async def test_logs_of_an_agent_task(plum):
    client, svc = plum
    await svc.agents.attach(ScriptedAgent())
    succeeded = changed(svc.bus, name="proc", state=TaskState.SUCCEEDED)
    task = await create(client, name="proc", executor="os_process",
                        payload={"command": "whatever"}, autoStart=True)
    await settle(succeeded)
    assert (await get_task(client, task["taskId"]))["scheduledOn"] == "node-fake"
    view = await (await client.get(f"/v1/tasks/{task['taskId']}/logs")).json()
    assert set(view) == {"taskId", "state", "lines"}
    assert (view["taskId"], view["state"]) == (task["taskId"], "Succeeded")
    assert [(line["stream"], line["text"]) for line in view["lines"]] == [
        ("stdout", "hello"), ("stderr", "oops"),
    ]
    assert all(isinstance(line["time"], float) for line in view["lines"])
    async with client.get(f"/v1/tasks/{task['taskId']}/logs?follow=true") as response:
        stream = EventStream(response)
        events = [await stream.next(SAFETY) for _ in range(3)]
    assert [e.event for e in events] == ["log", "log", "end"]
    assert events[2].json() == {"state": "Succeeded"}


async def test_os_process_waits_for_an_agent(plum):
    client, svc = plum
    task = await create(client, name="proc", executor="os_process",
                        payload={"command": "true"})
    reason = "waiting for an agent to run os_process tasks"
    waiting = changed(svc.bus, task["taskId"], reason=reason)
    await client.post(f"/v1/tasks/{task['taskId']}?action=start")
    await settle(waiting)
    assert (await get_task(client, task["taskId"]))["state"] == "Pending"
    response = await client.post(f"/v1/tasks/{task['taskId']}?action=cancel")
    assert (await response.json())["state"] == "Canceled"
