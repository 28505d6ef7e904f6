"""`/v1/deployments` and the original HTTP agent routes: desired state pushed to agents at
once, status reports, service registration, the `nodeId` SSE stream."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from plum.agent.protocol import DesiredState, InstancePhase, InstanceStatus
from plum.api.context import Services
from plum.bus import InstanceChanged, ServiceChanged
from tests.support.appzips import META, app_zip, upload
from tests.support.fake_hub import FakeHub
from tests.support.sse import EventStream

pytestmark = pytest.mark.timeout(20)


@dataclass
class Env:
    client: object
    svc: Services
    hub: FakeHub
    app: dict

    async def create(self, replicas=None, status=201, **body) -> dict:
        entry = {"artifactId": self.app["artifactId"], "startCmd": "./start.sh --port 8080",
                 "replicas": replicas if replicas is not None else {"n1": 2, "n2": 1}}
        response = await self.client.post("/v1/deployments",
                                           json={"name": "web", "entries": [entry], **body})
        assert response.status == status, await response.text()
        return await response.json()

    async def act(self, deployment_id: str, action: str, body=None, status=200) -> dict:
        response = await self.client.post(f"/v1/deployments/{deployment_id}?action={action}",
                                          json=body)
        assert response.status == status, await response.text()
        return await response.json()

    async def detail(self, deployment_id: str) -> dict:
        response = await self.client.get(f"/v1/deployments/{deployment_id}")
        assert response.status == 200, await response.text()
        return await response.json()

    def on(self, detail: dict, node_id: str) -> list[dict]:
        return [i for i in detail["instances"] if i["nodeId"] == node_id]


@pytest.fixture
async def env(make_client) -> Env:
    client, svc = await make_client()
    hub = FakeHub({"n1", "n2"})
    svc.deployments.attach(hub)
    for node_id, ip in (("n1", "10.0.0.1"), ("n2", "10.0.0.2")):
        beat = await client.post("/v1/nodes/heartbeat", json={"nodeId": node_id, "ip": ip})
        assert beat.status == 200
    app = await (await upload(client, app_zip())).json()
    return Env(client, svc, hub, app)


async def test_create_is_stopped_and_tells_the_agents(env, clock):
    created = await env.create(labels={"team": "a"}, nodeSelector={"zone": "edge"})
    deployment_id = created["deploymentId"]
    assert created["state"] == "Stopped"
    assert (created["name"], created["labels"], created["nodeSelector"]) == (
        "web", {"team": "a"}, {"zone": "edge"})
    entry = created["entries"][0]
    assert entry["artifactId"] == env.app["artifactId"]
    assert entry["artifactUrl"] == env.app["url"]
    assert (entry["appName"], entry["appVersion"]) == ("web", "1.0.0")
    assert entry["replicas"] == {"n1": 2, "n2": 1}
    assert len(created["instances"]) == 3
    for instance in created["instances"]:
        assert re.fullmatch(rf"{deployment_id}-[0-9a-f]{{8}}", instance["instanceId"])
        assert (instance["desired"], instance["phase"]) == ("Stopped", "Stopped")
        assert instance["lastReportAt"] is None
        assert instance["createdAt"] == clock.now()
    pushed = env.hub.take()
    assert [len(m.items) for m in pushed["n1"]] == [2]
    assert {a.desired for a in pushed["n1"][0].items} == {DesiredState.STOPPED}
    assert await env.detail(deployment_id) == created
    listing = await env.client.get("/v1/deployments")
    assert listing.headers["X-Total-Count"] == "1"
    assert [d["deploymentId"] for d in await listing.json()] == [deployment_id]


async def test_start_pushes_running_assignments_at_once_and_stop_stops(env):
    deployment_id = (await env.create())["deploymentId"]
    env.hub.take()
    started = await env.act(deployment_id, "start")
    assert started["state"] == "Running"
    assert {(i["desired"], i["phase"]) for i in started["instances"]} == {("Running", "Pending")}
    pushed = env.hub.take()  # already there when the response is
    assert sorted(pushed) == ["n1", "n2"]
    (message,) = pushed["n1"]
    assert len(message.items) == 2 and message.removed == []
    first = message.items[0]
    assert first.desired == DesiredState.RUNNING
    assert (first.artifact_url, first.artifact_sha256) == (env.app["url"], env.app["sha256"])
    assert (first.app_name, first.app_version) == ("web", "1.0.0")
    assert first.start_cmd == "./start.sh --port 8080"
    assert [s.service_name for s in first.services] == ["web"]
    assert {a.instance_id for a in message.items} == {
        i["instanceId"] for i in env.on(started, "n1")}

    await env.act(deployment_id, "start")  # already running: nothing to tell
    assert env.hub.take() == {}

    stopped = await env.act(deployment_id, "stop")
    assert stopped["state"] == "Stopped"
    assert {i["desired"] for i in stopped["instances"]} == {"Stopped"}
    pushed = env.hub.take()
    assert {a.desired for m in pushed["n1"] for a in m.items} == {DesiredState.STOPPED}


async def test_scale_up_and_down(env):
    deployment_id = (await env.create())["deploymentId"]
    await env.act(deployment_id, "start")
    env.hub.take()

    up = await env.act(deployment_id, "scale", {"replicas": {"n1": 4}})
    assert up["entries"][0]["replicas"] == {"n1": 4, "n2": 1}
    assert len(env.on(up, "n1")) == 4
    (message,) = env.hub.take()["n1"]
    assert len(message.items) == 2
    assert {a.desired for a in message.items} == {DesiredState.RUNNING}

    down = await env.act(deployment_id, "scale", {"replicas": {"n1": 1, "n2": 0}})
    assert down["entries"][0]["replicas"] == {"n1": 1}
    assert len(env.on(down, "n1")) == 1 and env.on(down, "n2") == []
    pushed = env.hub.take()
    assert len(pushed["n1"][0].removed) == 3 and pushed["n1"][0].items == []
    assert len(pushed["n2"][0].removed) == 1
    kept = {i["instanceId"] for i in down["instances"]}
    assert kept.isdisjoint(pushed["n1"][0].removed)

    bad = await env.client.post(f"/v1/deployments/{deployment_id}?action=scale",
                                json={"replicas": {"n1": -1}})
    assert bad.status == 422
    bad = await env.client.post(f"/v1/deployments/{deployment_id}?action=scale",
                                json={"replicas": {"n1": 1}, "entry": 3})
    assert (await bad.json())["error"]["field"] == "entry"


async def test_scale_of_a_deployment_with_several_entries_names_the_entry(env):
    response = await env.client.post("/v1/deployments", json={"name": "two", "entries": [
        {"artifactId": env.app["artifactId"], "replicas": {"n1": 1}},
        {"artifactUrl": "https://files.example/worker.zip", "replicas": {"n2": 1}},
    ]})
    deployment_id = (await response.json())["deploymentId"]
    missing = await env.client.post(f"/v1/deployments/{deployment_id}?action=scale",
                                    json={"replicas": {"n1": 2}})
    assert missing.status == 422
    assert (await missing.json())["error"]["field"] == "entry"
    scaled = await env.act(deployment_id, "scale", {"replicas": {"n1": 3}, "entry": 1})
    assert [e["replicas"] for e in scaled["entries"]] == [{"n1": 1}, {"n1": 3, "n2": 1}]
    assert sorted(i["entry"] for i in scaled["instances"]) == [0, 1, 1, 1, 1]


async def test_delete_removes_the_instances_from_their_nodes(env):
    created = await env.create()
    deployment_id = created["deploymentId"]
    env.hub.take()
    assert (await env.client.delete(f"/v1/deployments/{deployment_id}")).status == 204
    pushed = env.hub.take()
    assert set(pushed["n1"][0].removed) == {i["instanceId"] for i in env.on(created, "n1")}
    assert (await env.client.get(f"/v1/deployments/{deployment_id}")).status == 404
    assert (await env.client.delete(f"/v1/deployments/{deployment_id}")).status == 404
    assert await (await env.client.get("/v1/assignments?nodeId=n1")).json() == []


async def test_patch_changes_name_labels_and_selector(env):
    deployment_id = (await env.create())["deploymentId"]
    response = await env.client.patch(f"/v1/deployments/{deployment_id}",
                                      json={"name": "web2", "nodeSelector": {"zone": "a"}})
    assert response.status == 200, await response.text()
    patched = await response.json()
    assert (patched["name"], patched["labels"], patched["nodeSelector"]) == (
        "web2", {}, {"zone": "a"})
    assert len(patched["instances"]) == 3
    assert (await env.client.patch("/v1/deployments/nope", json={})).status == 404


@pytest.mark.parametrize("entry, field", [
    ({"artifactId": "0" * 32}, "entries[0].artifactId"),
    ({}, "entries[0]"),
    ({"artifactUrl": "/artifacts/" + "0" * 64 + ".zip"}, "entries[0].artifactUrl"),
    ({"artifactUrl": "https://x/app.zip", "replicas": {"n1": -1}}, None),
])
async def test_create_validates_entries(env, entry, field):
    response = await env.client.post("/v1/deployments", json={"name": "x", "entries": [entry]})
    assert response.status == 422, await response.text()
    if field:
        assert (await response.json())["error"]["field"] == field
    assert await (await env.client.get("/v1/deployments")).json() == []


async def test_entries_may_name_the_app_by_url_or_run_an_outside_zip(env):
    created = await env.create(replicas={"n1": 1})
    by_url = await env.client.post("/v1/deployments", json={"name": "u", "entries": [
        {"artifactUrl": "http://controller:8080" + env.app["url"], "replicas": {"n1": 1}},
        {"artifactUrl": "https://files.example/other.zip", "replicas": {"n1": 1}},
    ]})
    assert by_url.status == 201, await by_url.text()
    entries = (await by_url.json())["entries"]
    assert entries[0]["artifactId"] == created["entries"][0]["artifactId"]
    assert (entries[1]["artifactId"], entries[1]["appName"]) == ("", "")


async def test_unknown_action_and_deployment(env):
    deployment_id = (await env.create())["deploymentId"]
    response = await env.client.post(f"/v1/deployments/{deployment_id}?action=explode")
    assert response.status == 400
    assert (await env.client.post("/v1/deployments/nope?action=start")).status == 404


# -- status reports and discovery
async def running_instance(env: Env) -> tuple[str, str]:
    deployment_id = (await env.create(replicas={"n1": 1}))["deploymentId"]
    started = await env.act(deployment_id, "start")
    return deployment_id, started["instances"][0]["instanceId"]


def status(instance_id: str, phase: InstancePhase, **kw) -> InstanceStatus:
    return InstanceStatus(instance_id=instance_id, node_id=kw.pop("node_id", "n1"), phase=phase,
                          **kw)


def registered(instance_id: str, removed: bool = False):
    return lambda e: (isinstance(e, ServiceChanged) and e.removed == removed
                      and e.endpoint.instance_id == instance_id)


async def discovered(env: Env) -> list[dict]:
    return await (await env.client.get("/v1/discovery?service=web")).json()


async def test_link_reports_update_instances_and_register_services(env, clock):
    deployment_id, instance_id = await running_instance(env)
    changed = env.svc.bus.wait_for(lambda e: isinstance(e, InstanceChanged)
                                   and e.instance.phase == InstancePhase.RUNNING)
    up = env.svc.bus.wait_for(registered(instance_id))
    env.hub.report(status(instance_id, InstancePhase.RUNNING, healthy=True, pid=42, restarts=1))
    await changed
    await up
    (instance,) = (await env.detail(deployment_id))["instances"]
    assert (instance["phase"], instance["pid"], instance["restarts"]) == ("Running", 42, 1)
    assert instance["healthy"] is True
    assert instance["lastReportAt"] == clock.now()
    (endpoint,) = await discovered(env)
    assert (endpoint["ip"], endpoint["port"], endpoint["protocol"]) == ("10.0.0.1", 8080, "http")
    assert (endpoint["instanceId"], endpoint["nodeId"], endpoint["version"]) == (
        instance_id, "n1", "1.0.0")

    down = env.svc.bus.wait_for(registered(instance_id, removed=True))
    env.hub.report(status(instance_id, InstancePhase.FAILED, exit_code=3, restarts=2))
    await down
    assert await discovered(env) == []
    (instance,) = (await env.detail(deployment_id))["instances"]
    assert (instance["phase"], instance["exitCode"], instance["restarts"]) == ("Failed", 3, 2)


async def test_running_but_unhealthy_is_not_registered(env):
    deployment_id, instance_id = await running_instance(env)
    response = await env.client.post("/v1/instances/status", json={
        "instanceId": instance_id, "nodeId": "n1", "phase": "Running", "healthy": False})
    assert response.status == 200
    assert (await response.json())["phase"] == "Running"
    assert await discovered(env) == []


async def test_stop_and_delete_deregister_at_once(env):
    deployment_id, instance_id = await running_instance(env)
    up = env.svc.bus.wait_for(registered(instance_id))
    env.hub.report(status(instance_id, InstancePhase.RUNNING, healthy=True))
    await up
    await env.act(deployment_id, "stop")
    assert await discovered(env) == []
    await env.act(deployment_id, "start")
    up = env.svc.bus.wait_for(registered(instance_id))
    env.hub.report(status(instance_id, InstancePhase.RUNNING, healthy=True))
    await up
    assert len(await discovered(env)) == 1
    assert (await env.client.delete(f"/v1/deployments/{deployment_id}")).status == 204
    assert await discovered(env) == []


async def test_endpoints_stay_fresh_while_their_node_heartbeats(env, clock):
    _, instance_id = await running_instance(env)
    up = env.svc.bus.wait_for(registered(instance_id))
    env.hub.report(status(instance_id, InstancePhase.RUNNING, healthy=True))
    await up
    for _ in range(3):  # 60 s: twice the endpoints' freshness window
        clock.advance(20)
        refreshed = env.svc.bus.wait_for(registered(instance_id))
        await env.client.post("/v1/nodes/heartbeat", json={"nodeId": "n1", "ip": "10.0.0.1"})
        await refreshed
    (endpoint,) = await discovered(env)
    assert endpoint["lastSeen"] == clock.now()


async def test_reports_for_unknown_instances_or_from_other_nodes(env):
    _, instance_id = await running_instance(env)
    unknown = await env.client.post("/v1/instances/status", json={
        "instanceId": "nope", "nodeId": "n1", "phase": "Running"})
    assert unknown.status == 404
    elsewhere = await env.client.post("/v1/instances/status", json={
        "instanceId": instance_id, "nodeId": "n2", "phase": "Running"})
    assert elsewhere.status == 409
    bad = await env.client.post("/v1/instances/status", json={
        "instanceId": instance_id, "nodeId": "n1", "phase": "Dancing"})
    assert bad.status == 422


# -- the original HTTP agent routes
async def test_assignment_routes(env):
    created = await env.create()
    deployment_id = created["deploymentId"]
    response = await env.client.get("/v1/assignments?nodeId=n1")
    assert response.headers["X-Total-Count"] == "2"
    items = await response.json()
    assert {a["instanceId"] for a in items} == {i["instanceId"] for i in env.on(created, "n1")}
    assert items[0]["desired"] == "Stopped"
    assert items[0]["artifactUrl"] == env.app["url"]
    assert items[0]["deploymentId"] == deployment_id
    assert (await env.client.get("/v1/assignments")).status == 400
    assert await env.hub.source("n2") == [
        a for a in await env.svc.deployments.assignments_for("n2")]

    env.hub.take()
    target = items[0]["instanceId"]
    patched = await env.client.patch(f"/v1/assignments/{target}", json={"desired": "Running"})
    assert patched.status == 200, await patched.text()
    assert ((await patched.json())["desired"], (await patched.json())["phase"]) == (
        "Running", "Pending")
    (message,) = env.hub.take()["n1"]
    assert [(a.instance_id, a.desired) for a in message.items] == [
        (target, DesiredState.RUNNING)]
    bad = await env.client.patch(f"/v1/assignments/{target}", json={"desired": "Flying"})
    assert bad.status == 422

    assert (await env.client.delete(f"/v1/assignments/{target}")).status == 204
    assert env.hub.take()["n1"][0].removed == [target]
    detail = await env.detail(deployment_id)
    assert detail["entries"][0]["replicas"] == {"n1": 1, "n2": 1}
    assert target not in {i["instanceId"] for i in detail["instances"]}
    assert (await env.client.delete(f"/v1/assignments/{target}")).status == 404


async def test_node_stream_sends_the_assignments_on_connect_and_on_change(env):
    deployment_id = (await env.create())["deploymentId"]
    async with env.client.get("/v1/stream?nodeId=n1") as response:
        stream = EventStream(response)
        first = await stream.next()
        assert first.event == "update"
        assert [a["desired"] for a in first.json()] == ["Stopped", "Stopped"]
        await env.act(deployment_id, "start")
        update = await stream.next()
        assert [a["desired"] for a in update.json()] == ["Running", "Running"]
        await env.client.delete(f"/v1/deployments/{deployment_id}")
        assert (await stream.next()).json() == []


async def test_meta_ini_services_become_assignment_services(env):
    meta = META.replace("1.0.0", "2.0.0") + "service=admin:grpc:9090\n"
    app = await (await upload(env.client, app_zip(meta))).json()
    response = await env.client.post("/v1/deployments", json={"name": "svc", "entries": [
        {"artifactId": app["artifactId"], "replicas": {"n2": 1}}]})
    assert response.status == 201
    (assignment,) = await (await env.client.get("/v1/assignments?nodeId=n2")).json()
    assert assignment["services"] == [
        {"serviceName": "web", "protocol": "http", "port": 8080, "version": "2.0.0"},
        {"serviceName": "admin", "protocol": "grpc", "port": 9090, "version": "2.0.0"},
    ]
