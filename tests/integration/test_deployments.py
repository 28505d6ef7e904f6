"""Deployments with real processes: a controller (`--role controller`) and agents
(`--role agent`, nodes nodeA-nodeC on 127.0.0.2-4, each with its own data directory)
running examples/demo-app, built here. Replicas run, are registered for discovery at their
agents' addresses and answer HTTP there (and through the `service` executor); a killed app
is restarted; a stopped deployment leaves no process and no endpoint; an agent killed with
`kill -9` has its node Unhealthy within the TTL and its instances re-placed within TTL +
grace, and once restarted on the same data directory it stops the stale copies (no
duplicates); unsafe and oversize app zips are refused over real HTTP.

Everything is awaited on the controller's SSE stream (`/v1/stream`), whose events are
folded into a local view of instances, nodes, endpoints and tasks; only "a process that is
not my child is gone" is polled (`wait_gone`), as no event exists for it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.support.appzips import app_zip, make_zip
from tests.support.pids import alive, wait_gone
from tests.support.procs import PlumProcess, launch_agent, start_plum
from tests.support.sse import EventStream, SseEvent, open_stream, read_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
DEMO_BUILD = ROOT / "examples" / "demo-app" / "build.py"
SERVICE = "demo"  # the demo app's meta.ini: service=demo:http:<port>
DEADLINE = 45.0  # generous: the machine may be loaded; never reached when all is well
TTL = 4.0  # HEARTBEAT_TTL_SEC
GRACE = 2.0  # MIGRATION_GRACE_SEC
SLACK = 4.0  # for timing bounds: process start-up and scheduling on a loaded 2-core machine
AGENT_IPS = {"nodeA": "127.0.0.2", "nodeB": "127.0.0.3", "nodeC": "127.0.0.4"}
MIB = 1024 * 1024
CONTROLLER_ENV = {
    "HEARTBEAT_TTL_SEC": str(TTL),
    "AGENT_HEARTBEAT_SEC": "1",  # sent to agents in `welcome`
    "AUTO_MIGRATION_ENABLED": "true",
    "MIGRATION_GRACE_SEC": str(GRACE),
    "PLUM_APP_MAX_UNCOMPRESSED_MB": "1",
    "PLUM_MAX_BODY_MB": "2",
}
AGENT_ENV = {"AGENT_HEARTBEAT_SEC": "1", "PLUM_STOP_APPS_ON_EXIT": "true"}
TOPICS = "instances,nodes,deployments,services,tasks"

T = TypeVar("T")


def free_port(ips: list[str]) -> int:
    """A port below the ephemeral range that is free on every address in `ips`."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            for ip in ips:
                with socket.socket() as sock:
                    sock.bind((ip, port))
        except OSError:
            continue
        return port
    raise AssertionError(f"no free port on {ips}")


def build_demo(out: Path, port: int) -> Path:
    done = subprocess.run([sys.executable, str(DEMO_BUILD), "--out", str(out), "--port",
                           str(port)], capture_output=True, text=True, timeout=30, check=True)
    return Path(done.stdout.strip())


def is_ours(pid: int, root: Path) -> bool:
    """A live process working under `root` (an app instance directory of this test)."""
    try:
        return alive(pid) and Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(root)
    except OSError:
        return False


@dataclass
class Cluster:
    tmp_path: Path
    controller: PlumProcess
    session: aiohttp.ClientSession
    events: EventStream
    agents: dict[str, PlumProcess] = field(default_factory=dict)
    # what the stream said last, keyed by id
    instances: dict[str, dict] = field(default_factory=dict)
    nodes: dict[str, dict] = field(default_factory=dict)
    endpoints: dict[tuple, dict] = field(default_factory=dict)
    tasks: dict[str, dict] = field(default_factory=dict)
    reports: list[dict] = field(default_factory=list)  # every instance event, in order
    app_pids: set[int] = field(default_factory=set)  # every app pid seen, for cleanup

    @property
    def url(self) -> str:
        assert self.controller.url is not None
        return self.controller.url

    async def start_agent(self, node_id: str) -> PlumProcess:
        self.agents[node_id] = await launch_agent(
            self.tmp_path, self.url, node_id, AGENT_IPS[node_id], env=AGENT_ENV)
        return self.agents[node_id]

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.session.request(method, f"{self.url}{path}", json=body) as response:
            answer = await response.json()
            assert response.status == status, answer
            return answer

    async def upload(self, data: bytes, status: int = 201) -> dict:
        form = aiohttp.FormData()
        form.add_field("file", data, filename="app.zip", content_type="application/zip")
        async with self.session.post(f"{self.url}/v1/apps/upload", data=form) as response:
            answer = await response.json()
            assert response.status == status, answer
            return answer

    # -- the stream
    async def until(self, check: Callable[[], T], what: str, timeout: float = DEADLINE) -> T:
        """Fold stream events into the view until `check()` is truthy; returns its value."""
        try:
            async with asyncio.timeout(timeout):
                while not (result := check()):
                    await self._fold(await read_event(self.events.response))
                return result
        except TimeoutError:
            raise AssertionError(f"not within {timeout}s: {what}\ninstances: "
                                 f"{list(self.instances.values())}") from None

    async def _fold(self, event: SseEvent) -> None:
        if event.event == "resync":  # we were too slow for the bus: read the state instead
            await self._refetch()
            return
        if event.event not in ("instances", "nodes", "services", "tasks"):
            return
        data = event.json()
        gone = data.get("deleted", False)
        match event.event:
            case "instances":
                self.reports.append(data)
                self._put(self.instances, data["instanceId"], data, gone)
                if data.get("pid"):
                    self.app_pids.add(data["pid"])
            case "nodes":
                self._put(self.nodes, data["nodeId"], data, gone)
            case "services":
                key = (data["instanceId"], data["serviceName"], data["port"])
                self._put(self.endpoints, key, data, gone)
            case "tasks":
                self._put(self.tasks, data["taskId"], data, gone)

    @staticmethod
    def _put(view: dict, key: Any, data: dict, gone: bool) -> None:
        if gone:
            view.pop(key, None)
        else:
            view[key] = data

    async def _refetch(self) -> None:
        self.nodes = {n["nodeId"]: n for n in await self.call("GET", "/v1/nodes")}
        self.instances = {}
        for deployment in await self.call("GET", "/v1/deployments?limit=1000"):
            detail = await self.call("GET", f"/v1/deployments/{deployment['deploymentId']}")
            self.instances.update({i["instanceId"]: i for i in detail["instances"]})
        self.endpoints = {(e["instanceId"], e["serviceName"], e["port"]): e
                          for e in await self.call("GET", "/v1/services?limit=1000")}

    # -- views
    def serving(self, deployment_id: str) -> list[dict]:
        """Live instances that run, healthy, as wanted."""
        return [i for i in self.instances.values() if i["deploymentId"] == deployment_id
                and not i["replacedBy"] and i["desired"] == "Running"
                and i["phase"] == "Running" and i["healthy"]]

    def healthy_endpoints(self) -> list[dict]:
        return [e for e in self.endpoints.values() if e["serviceName"] == SERVICE
                and e["healthy"]]

    async def wait_serving(self, deployment_id: str, nodes: set[str]) -> list[dict]:
        """Until exactly one healthy Running instance per node in `nodes` and their
        endpoints are registered; the instances."""

        def ready() -> list[dict] | None:
            running = self.serving(deployment_id)
            registered = {e["instanceId"] for e in self.healthy_endpoints()}
            if sorted(i["nodeId"] for i in running) == sorted(nodes) \
                    and registered == {i["instanceId"] for i in running}:
                return running
            return None

        return await self.until(ready, f"one serving instance on each of {sorted(nodes)}")

    async def deploy(self, app: dict, replicas: dict[str, int]) -> str:
        created = await self.call("POST", "/v1/deployments", {
            "name": "demo", "entries": [{"artifactId": app["artifactId"],
                                         "replicas": replicas}]}, status=201)
        deployment_id = created["deploymentId"]
        await self.call("POST", f"/v1/deployments/{deployment_id}?action=start")
        return deployment_id


@asynccontextmanager
async def cluster(tmp_path: Path, *agents: str) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        controller = await stack.enter_async_context(
            start_plum(tmp_path, "--role", "controller", env=CONTROLLER_ENV, name="controller"))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        events = await stack.enter_async_context(
            open_stream(session, f"{controller.url}/v1/stream?topics={TOPICS}"))
        c = Cluster(tmp_path, controller, session, events)
        try:
            for node_id in agents:
                await c.start_agent(node_id)
            await c.until(lambda: all(c.nodes.get(n, {}).get("health") == "Healthy"
                                      for n in agents), f"agents {agents} linked")
            yield c
        finally:
            await stop_everything(c)


async def stop_everything(c: Cluster) -> None:
    """The controller first (so nothing is failed over while agents stop), then the agents
    (which stop their apps: PLUM_STOP_APPS_ON_EXIT), then what a `kill -9`ed agent left."""
    if c.controller.proc.returncode is None:
        await c.controller.terminate()
    for agent in c.agents.values():
        if agent.proc.returncode is None:
            await agent.terminate()
    for pid in c.app_pids:
        if is_ours(pid, c.tmp_path):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def hello(session: aiohttp.ClientSession, endpoint: dict) -> dict:
    url = f"http://{endpoint['ip']}:{endpoint['port']}/hello"
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def demo_zip(tmp_path: Path) -> tuple[bytes, int]:
    port = free_port(list(AGENT_IPS.values()))
    return build_demo(tmp_path / "dist", port).read_bytes(), port


async def test_replicas_serve_restart_after_a_crash_and_stop(tmp_path):
    archive, port = demo_zip(tmp_path)
    async with cluster(tmp_path, "nodeA", "nodeB") as c:
        app = await c.upload(archive)
        assert app["services"] == [{"serviceName": SERVICE, "protocol": "http", "port": port,
                                    "version": "1.0.0"}]
        deployment_id = await c.deploy(app, {"nodeA": 1, "nodeB": 1})
        running = await c.wait_serving(deployment_id, {"nodeA", "nodeB"})

        # discoverable at the agents' addresses, and answering there
        found = await c.call("GET", f"/v1/discovery?service={SERVICE}")
        assert sorted((e["nodeId"], e["ip"], e["port"]) for e in found) == [
            ("nodeA", "127.0.0.2", port), ("nodeB", "127.0.0.3", port)]
        pids = {i["instanceId"]: i["pid"] for i in running}
        for endpoint in found:
            answer = await hello(c.session, endpoint)
            assert (answer["instanceId"], answer["nodeId"], answer["ip"], answer["pid"]) == (
                endpoint["instanceId"], endpoint["nodeId"], endpoint["ip"],
                pids[endpoint["instanceId"]])

        # the `service` executor reaches it through discovery
        task = await c.call("POST", "/v1/tasks", {
            "name": "demo.greet", "executor": "service", "targetRef": SERVICE,
            "payload": {"name": "Plum"}, "autoStart": True}, status=201)
        done = await c.until(lambda: (t := c.tasks.get(task["taskId"])) and t["state"] in (
            "Succeeded", "Failed", "Timeout", "Canceled") and t, "the service task ended")
        assert done["state"] == "Succeeded", done
        assert done["result"]["greeting"] == "hello, Plum"
        assert done["result"]["servedBy"]["instanceId"] in pids

        # a crashed app is restarted, reported, and registered again
        [victim] = [i for i in running if i["nodeId"] == "nodeA"]
        os.kill(victim["pid"], signal.SIGKILL)
        back = await c.until(
            lambda: (i := c.instances[victim["instanceId"]])["phase"] == "Running"
            and i["healthy"] and i["pid"] != victim["pid"] and i, "the killed app restarted")
        assert back["restarts"] == victim["restarts"] + 1
        assert any(r["instanceId"] == victim["instanceId"] and r["phase"] == "Failed"
                   and r["exitCode"] == -signal.SIGKILL for r in c.reports), c.reports
        assert not alive(victim["pid"])
        running = await c.wait_serving(deployment_id, {"nodeA", "nodeB"})
        [endpoint] = [e for e in c.healthy_endpoints() if e["nodeId"] == "nodeA"]
        assert (await hello(c.session, endpoint))["pid"] == back["pid"]

        # stop: every process gone, every endpoint deregistered
        await c.call("POST", f"/v1/deployments/{deployment_id}?action=stop")
        for instance in running:
            assert await wait_gone(instance["pid"], DEADLINE), instance
        stopped = await c.until(
            lambda: len(s := [i for i in c.instances.values() if i["phase"] == "Stopped"
                              and i["deploymentId"] == deployment_id]) == 2 and s,
            "the instances stopped")
        assert all(i["pid"] is None for i in stopped), stopped
        await c.until(lambda: not c.endpoints, "the endpoints deregistered")
        assert await c.call("GET", f"/v1/discovery?service={SERVICE}&all=true") == []
        detail = await c.call("GET", f"/v1/deployments/{deployment_id}")
        assert detail["state"] == "Stopped"
        assert sorted((i["nodeId"], i["desired"], i["phase"]) for i in detail["instances"]) == [
            ("nodeA", "Stopped", "Stopped"), ("nodeB", "Stopped", "Stopped")]


async def test_a_killed_agent_is_failed_over_and_drops_its_stale_instance_on_return(tmp_path):
    archive, port = demo_zip(tmp_path)
    loop = asyncio.get_running_loop()
    async with cluster(tmp_path, "nodeA", "nodeB", "nodeC") as c:
        app = await c.upload(archive)
        deployment_id = await c.deploy(app, {"nodeA": 1, "nodeB": 1})
        running = await c.wait_serving(deployment_id, {"nodeA", "nodeB"})
        [lost] = [i for i in running if i["nodeId"] == "nodeA"]

        killed_at = loop.time()
        await c.agents["nodeA"].kill()  # kill -9: the link drops; the app lives on
        await c.until(lambda: c.nodes["nodeA"]["health"] == "Unhealthy", "nodeA Unhealthy")
        unhealthy_after = loop.time() - killed_at
        assert unhealthy_after <= TTL, f"nodeA Unhealthy only after {unhealthy_after:.1f}s"

        def moved() -> dict | None:
            return next((i for i in c.instances.values() if i["deploymentId"] == deployment_id
                         and i["nodeId"] == "nodeC" and i["phase"] == "Running"), None)

        replacement = await c.until(moved, "the instance re-placed on nodeC")
        moved_after = loop.time() - killed_at
        assert moved_after <= TTL + GRACE + SLACK, f"re-placed only after {moved_after:.1f}s"
        print(f"nodeA Unhealthy {unhealthy_after:.2f}s after kill -9, its instance Running on "
              f"nodeC after {moved_after:.2f}s (TTL {TTL:g}s, grace {GRACE:g}s)")
        assert c.instances[lost["instanceId"]]["replacedBy"] == replacement["instanceId"]
        assert c.instances[lost["instanceId"]]["desired"] == "Stopped"
        await c.wait_serving(deployment_id, {"nodeB", "nodeC"})
        found = await c.call("GET", f"/v1/discovery?service={SERVICE}")
        assert sorted((e["nodeId"], e["ip"], e["port"]) for e in found) == [
            ("nodeB", "127.0.0.3", port), ("nodeC", "127.0.0.4", port)]
        assert alive(lost["pid"])  # the stale copy outlived its agent

        # the agent comes back on the same data directory: it stops the stale copy
        await c.start_agent("nodeA")
        await c.until(lambda: c.nodes["nodeA"]["health"] == "Healthy", "nodeA back")
        assert await wait_gone(lost["pid"], DEADLINE), "the stale instance kept running"
        await c.until(lambda: lost["instanceId"] not in c.instances, "the stale one dropped")
        instance_dir = c.agents["nodeA"].data_dir / "agent" / "nodeA" / lost["instanceId"]
        assert not instance_dir.exists()

        detail = await c.call("GET", f"/v1/deployments/{deployment_id}")
        assert sorted((i["nodeId"], i["phase"], i["replacedBy"]) for i in detail["instances"]) \
            == [("nodeB", "Running", ""), ("nodeC", "Running", "")]
        assert detail["entries"][0]["replicas"] == {"nodeB": 1, "nodeC": 1}
        assert sorted(e["nodeId"] for e in await c.call(
            "GET", f"/v1/discovery?service={SERVICE}")) == ["nodeB", "nodeC"]
        with pytest.raises(OSError):  # nothing listens on nodeA's address any more
            socket.create_connection((AGENT_IPS["nodeA"], port), timeout=2).close()


async def test_unsafe_and_oversize_app_zips_are_refused(tmp_path):
    archive, _ = demo_zip(tmp_path)
    refused = {
        "zip slip": app_zip(**{"../escape.sh": "echo gotcha"}),
        "absolute path": app_zip(**{"/etc/escape.sh": "echo gotcha"}),
        "symlink": make_zip({"start.sh": "#!/bin/sh\n", "meta.ini": "name=a\nversion=1\n"},
                            links={"passwd": "/etc/passwd"}),
        "over the unpacked cap": app_zip(**{"big.bin": bytes(2 * MIB)}),  # 1 MiB cap
    }
    async with cluster(tmp_path) as c:
        for case, data in refused.items():
            error = (await c.upload(data, status=400))["error"]
            assert (error["code"], error["field"]) == ("invalid", "file"), (case, error)
        # over the upload cap (PLUM_MAX_BODY_MB=2): incompressible, so it is big on the wire
        error = (await c.upload(app_zip(**{"noise.bin": os.urandom(3 * MIB)}), status=413))
        assert error["error"]["code"] == "too_large", error
        assert await c.call("GET", "/v1/apps") == []
        leftovers = list((c.controller.data_dir / "artifacts").iterdir())
        assert leftovers == [], leftovers
        app = await c.upload(archive)  # within every cap
        assert (app["name"], app["version"]) == ("demo-app", "1.0.0")
