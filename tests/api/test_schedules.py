"""`/v1/schedules`: the routes, validation, and schedules starting real workflow runs."""

from __future__ import annotations

import asyncio

import pytest

from plum.bus import ScheduleChanged
from tests.support.sse import EventStream

pytestmark = pytest.mark.timeout(20)

START = 1_700_000_000.0  # FakeClock's start: 2023-11-14 22:13:20 UTC


async def create_workflow(client, name: str = "nightly") -> str:
    response = await client.post("/v1/workflows", json={
        "name": name,
        "params": {"who": "nobody"},
        "nodes": [{"id": "a", "type": "task", "taskName": "builtin.echo",
                   "payload": {"who": "${params.who}"}}],
    })
    assert response.status == 201, await response.text()
    return (await response.json())["workflowId"]


async def create(client, **body) -> dict:
    response = await client.post("/v1/schedules", json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def error_of(response, status: int) -> str | None:
    assert response.status == status, await response.text()
    return (await response.json())["error"].get("field")


async def test_create_get_list(api_services, clock):
    client, _ = api_services
    wf = await create_workflow(client)
    other = await create_workflow(client, "other")
    first = await create(client, workflowId=wf, cron="0 * * * *")
    assert first == {
        "scheduleId": first["scheduleId"],
        "workflowId": wf,
        "cron": "0 * * * *",
        "timezone": "UTC",
        "params": {},
        "enabled": True,
        "catchup": False,
        "nextRunAt": 1_700_002_800.0,  # 23:00 UTC
        "lastRunAt": None,
        "lastRunId": None,
        "lastError": None,
        "createdAt": START,
        "updatedAt": START,
    }
    second = await create(client, workflowId=other, cron="0 9 * * *", timezone="Europe/Berlin",
                          params={"who": "Ada"}, enabled=False, catchup=True)
    assert (second["nextRunAt"], second["enabled"], second["catchup"], second["params"]) == (
        None, False, True, {"who": "Ada"})
    third = await create(client, workflowId=wf, cron="@daily", timezone="America/New_York")
    assert third["nextRunAt"] == 1_700_024_400.0  # midnight EST is 05:00 UTC

    response = await client.get(f"/v1/schedules/{first['scheduleId']}")
    assert response.status == 200
    assert await response.json() == first

    response = await client.get("/v1/schedules?limit=2")
    assert response.headers["X-Total-Count"] == "3"
    assert [s["scheduleId"] for s in await response.json()] == [
        third["scheduleId"], second["scheduleId"]]
    response = await client.get(f"/v1/schedules?workflowId={wf}&offset=1")
    assert response.headers["X-Total-Count"] == "2"
    assert [s["scheduleId"] for s in await response.json()] == [first["scheduleId"]]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"workflowId": "ghost", "cron": "* * * * *"}, 422, "workflowId"),
        ({"cron": "* * * * *"}, 422, "workflowId"),
        ({"workflowId": "WF", "cron": "every minute"}, 422, "cron"),
        ({"workflowId": "WF", "cron": "* * * * * *"}, 422, "cron"),
        ({"workflowId": "WF", "cron": "0 0 31 2 *"}, 422, "cron"),
        ({"workflowId": "WF"}, 422, "cron"),
        ({"workflowId": "WF", "cron": "* * * * *", "timezone": "Mars/Olympus"}, 422, "timezone"),
        ({"workflowId": "WF", "cron": "* * * * *", "timezone": ""}, 422, "timezone"),
        ({"workflowId": "WF", "cron": "* * * * *", "params": [1]}, 422, "params"),
        ({"workflowId": "WF", "cron": "* * * * *", "enabled": "yes"}, 422, "enabled"),
    ],
)
async def test_create_rejects_bad_input_and_changes_nothing(api_services, body, status, field):
    client, services = api_services
    wf = await create_workflow(client)
    if body.get("workflowId") == "WF":
        body = {**body, "workflowId": wf}
    assert await error_of(await client.post("/v1/schedules", json=body), status) == field
    assert (await (await client.get("/v1/schedules")).json()) == []


async def test_malformed_json_is_a_400(api):
    response = await api.post("/v1/schedules", data=b"{nope")
    assert response.status == 400


async def test_patch_recomputes_next_run_at(api_services, clock):
    client, _ = api_services
    wf = await create_workflow(client)
    s = await create(client, workflowId=wf, cron="0 * * * *")
    url = f"/v1/schedules/{s['scheduleId']}"
    clock.advance(60)

    response = await client.patch(url, json={"cron": "*/5 * * * *", "params": {"who": "Bo"}})
    assert response.status == 200, await response.text()
    patched = await response.json()
    assert (patched["cron"], patched["params"], patched["nextRunAt"], patched["updatedAt"]) == (
        "*/5 * * * *", {"who": "Bo"}, 1_700_000_100.0, START + 60)
    assert patched["createdAt"] == START

    off = await (await client.patch(url, json={"enabled": False})).json()
    assert (off["enabled"], off["nextRunAt"]) == (False, None)
    on = await (await client.patch(url, json={"enabled": True, "timezone": "Asia/Kolkata",
                                              "cron": "30 4 * * *"})).json()
    assert on["nextRunAt"] == 1_700_002_800.0  # 04:30 IST = 23:00 UTC
    assert await (await client.get(url)).json() == on

    for body, field in (({"cron": "60 * * * *"}, "cron"), ({"timezone": "Nowhere"}, "timezone"),
                        ({"catchup": 3}, "catchup"), ({"params": "x"}, "params")):
        assert await error_of(await client.patch(url, json=body), 422) == field
    assert await (await client.get(url)).json() == on
    assert await error_of(await client.patch("/v1/schedules/ghost", json={}), 404) in (
        None, "scheduleId")


async def test_delete(api):
    wf = await create_workflow(api)
    s = await create(api, workflowId=wf, cron="* * * * *")
    url = f"/v1/schedules/{s['scheduleId']}"
    assert (await api.delete(url)).status == 204
    assert (await api.get(url)).status == 404
    assert (await api.delete(url)).status == 404
    assert (await api.get("/v1/schedules")).headers["X-Total-Count"] == "0"


async def test_a_schedule_starts_real_runs(api_services, clock):
    client, services = api_services
    wf = await create_workflow(client)
    s = await create(client, workflowId=wf, cron="*/10 * * * *", params={"who": "Ada"})
    assert s["nextRunAt"] == 1_700_000_400.0
    fired = services.bus.wait_for(
        lambda e: isinstance(e, ScheduleChanged) and e.schedule.last_run_at is not None)
    clock.advance(s["nextRunAt"] - clock.now())
    schedule = (await asyncio.wait_for(fired, 5)).schedule
    assert (schedule.last_run_at, schedule.next_run_at, schedule.last_error) == (
        1_700_000_400.0, 1_700_001_000.0, None)

    response = await client.get(f"/v1/workflow-runs/{schedule.last_run_id}")
    assert response.status == 200, await response.text()
    run = await response.json()
    assert (run["workflowId"], run["trigger"], run["params"]["who"]) == (wf, "schedule", "Ada")
    got = await (await client.get(f"/v1/schedules/{s['scheduleId']}")).json()
    assert (got["lastRunId"], got["lastRunAt"], got["nextRunAt"]) == (
        schedule.last_run_id, 1_700_000_400.0, 1_700_001_000.0)


async def test_a_deleted_workflow_is_recorded_and_the_schedule_moves_on(api_services, clock):
    client, services = api_services
    wf = await create_workflow(client)
    s = await create(client, workflowId=wf, cron="*/10 * * * *")
    assert (await client.delete(f"/v1/workflows/{wf}")).status == 204
    fired = services.bus.wait_for(
        lambda e: isinstance(e, ScheduleChanged) and e.schedule.last_run_at is not None)
    clock.advance(s["nextRunAt"] - clock.now())
    schedule = (await asyncio.wait_for(fired, 5)).schedule
    assert schedule.last_run_id is None
    assert schedule.last_error
    assert schedule.next_run_at == s["nextRunAt"] + 600


async def test_schedule_changes_stream_on_the_schedules_topic(api):
    wf = await create_workflow(api)
    async with api.get("/v1/stream?topics=schedules") as stream:
        assert stream.status == 200
        s = await create(api, workflowId=wf, cron="* * * * *")
        event = await EventStream(stream).next()
        assert (event.event, event.json()) == ("schedules", s)
        await api.delete(f"/v1/schedules/{s['scheduleId']}")
        event = await EventStream(stream).next()
        assert event.json() == {"scheduleId": s["scheduleId"], "deleted": True}


async def test_openapi_describes_the_routes(api):
    doc = await (await api.get("/v1/openapi.json")).json()
    assert set(doc["paths"]["/v1/schedules"]) == {"get", "post"}
    assert set(doc["paths"]["/v1/schedules/{scheduleId}"]) == {"get", "patch", "delete"}
    schema = doc["components"]["schemas"]["Schedule"]
    assert {"nextRunAt", "lastRunId", "lastError", "catchup", "timezone"} <= set(
        schema["properties"])
