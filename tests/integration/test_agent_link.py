"""The agent link with real processes: a controller (`--role controller`) and agents
(`--role agent`) on their own loopback addresses, linked by websockets. Node health, remote
os_process tasks with their output, cancel, an agent killed mid-task, and a controller
restarted while an agent runs a task."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support.pids import wait_gone
from tests.support.procs import PlumProcess, launch_agent, start_plum
from tests.support.sse import EventStream, SseEvent, open_stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEADLINE = 30.0  # generous: the machine may be loaded; never reached when all is well
TERMINAL = {"Succeeded", "Failed", "Timeout", "Canceled"}
TOKEN = "agent-link-secret"
AUTH = {"PLUM_AUTH_TOKENS": TOKEN}
AGENT_IPS = {"nodeB": "127.0.0.2", "nodeC": "127.0.0.3"}


def sh(script: str) -> dict:
    return {"command": "/bin/sh", "args": ["-c", script]}


@dataclass
class Cluster:
    tmp_path: Path
    controller: PlumProcess
    session: aiohttp.ClientSession
    events: EventStream
    agents: dict[str, PlumProcess] = field(default_factory=dict)
    leftovers: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.controller.url is not None
        return self.controller.url

    async def start_agent(self, node_id: str) -> PlumProcess:
        self.agents[node_id] = await launch_agent(
            self.tmp_path, self.url, node_id, AGENT_IPS[node_id], env=AUTH)
        return self.agents[node_id]

    async def get(self, path: str):
        async with self.session.get(f"{self.url}{path}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def create(self, **body) -> str:
        body = {"name": "sh", "executor": "os_process", "autoStart": True, **body}
        async with self.session.post(f"{self.url}/v1/tasks", json=body) as response:
            assert response.status == 201, await response.text()
            return (await response.json())["taskId"]

    async def wait_task(self, task_id: str, *states: str, attempt: int | None = None) -> dict:
        """The task as of its next SSE event in one of `states` (of `attempt`, if given)."""

        def matches(e: SseEvent) -> bool:
            if e.event != "tasks" or e.json().get("taskId") != task_id:
                return False
            data = e.json()
            return data["state"] in states and attempt in (None, data["attempt"])

        return (await self.events.wait_for(matches, DEADLINE)).json()

    async def wait_tasks(self, task_ids: set[str], *states: str) -> dict[str, dict]:
        """Each task as of its next SSE event in one of `states`, in whatever order."""
        seen: dict[str, dict] = {}
        while len(seen) < len(task_ids):
            event = await self.events.wait_for(
                lambda e: e.event == "tasks" and e.json().get("taskId") in task_ids - set(seen)
                and e.json()["state"] in states, DEADLINE)
            seen[event.json()["taskId"]] = event.json()
        return seen

    async def wait_node(self, node_id: str, health: str) -> dict:
        def matches(e: SseEvent) -> bool:
            return (e.event == "nodes" and e.json().get("nodeId") == node_id
                    and e.json().get("health") == health)

        return (await self.events.wait_for(matches, DEADLINE)).json()

    async def first_stdout(self, task_id: str, count: int = 1) -> list[str]:
        """The first `count` stdout lines of a task, from its followed logs."""
        lines: list[str] = []
        url = f"{self.url}/v1/tasks/{task_id}/logs?follow=true"
        async with open_stream(self.session, url) as stream:
            while len(lines) < count:
                event = await stream.next(DEADLINE)
                assert event.event == "log", f"the task ended before printing {count} lines"
                if event.json()["stream"] == "stdout":
                    lines.append(event.json()["text"])
        return lines

    async def pid_of(self, task_id: str, count: int = 1) -> int:
        """A task that starts with `echo $$` (and `exec`s): its process, kept for cleanup."""
        pid = int((await self.first_stdout(task_id, count))[-1])
        self.leftovers.append(pid)
        return pid


@asynccontextmanager
async def cluster(tmp_path: Path, *agents: str) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        controller = await stack.enter_async_context(
            start_plum(tmp_path, "--role", "controller", env=AUTH, name="controller"))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}))
        events = await stack.enter_async_context(
            open_stream(session, f"{controller.url}/v1/stream?topics=tasks,nodes"))
        c = Cluster(tmp_path, controller, session, events)
        try:
            for node_id in agents:
                await c.start_agent(node_id)
            for node_id in agents:  # each shows up with its usage (the first beat is at once)
                await c.events.wait_for(
                    lambda e, n=node_id: e.event == "nodes" and e.json()["nodeId"] == n
                    and e.json()["health"] == "Healthy"
                    and e.json()["usage"]["memTotalBytes"] > 0, DEADLINE)
            yield c
        finally:
            for agent in c.agents.values():
                if agent.proc.returncode is None:
                    await agent.terminate()
            for pid in c.leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


async def test_agents_link_up_run_remote_tasks_and_cancel_them(tmp_path):
    async with cluster(tmp_path, "nodeB", "nodeC") as c:
        nodes = {n["nodeId"]: n for n in await c.get("/v1/nodes")}
        assert set(nodes) == {"nodeB", "nodeC"}  # the controller role runs no agent
        for node_id, ip in AGENT_IPS.items():
            assert (nodes[node_id]["health"], nodes[node_id]["ip"]) == ("Healthy", ip)
            assert nodes[node_id]["usage"]["memTotalBytes"] > 0
            assert nodes[node_id]["capacity"] > 0

        script = 'echo "WORKER_NODE_ID=$WORKER_NODE_ID"'
        targeted = await c.create(targetKind="node", targetRef="nodeC", payload=sh(script))
        task = await c.wait_task(targeted, *TERMINAL)
        assert (task["state"], task["scheduledOn"]) == ("Succeeded", "nodeC"), task
        assert task["result"]["stdout"] == "WORKER_NODE_ID=nodeC\n"
        logs = await c.get(f"/v1/tasks/{targeted}/logs")
        assert [line["text"] for line in logs["lines"]] == ["WORKER_NODE_ID=nodeC"]

        anywhere = await c.create(payload=sh(script))
        task = await c.wait_task(anywhere, *TERMINAL)
        assert task["state"] == "Succeeded", task
        assert task["scheduledOn"] in AGENT_IPS
        assert task["result"]["stdout"] == f"WORKER_NODE_ID={task['scheduledOn']}\n"

        sleeper = await c.create(targetKind="node", targetRef="nodeB",
                                 payload=sh("echo $$; exec sleep 300"))
        pid = await c.pid_of(sleeper)
        async with c.session.post(f"{c.url}/v1/tasks/{sleeper}?action=cancel") as response:
            assert response.status == 200, await response.text()
        assert (await c.wait_task(sleeper, *TERMINAL))["state"] == "Canceled"
        assert await wait_gone(pid, DEADLINE), "the canceled remote process survived"


async def test_a_killed_agent_loses_its_tasks_promptly(tmp_path):
    sleeper = sh("echo $$; exec sleep 300")
    async with cluster(tmp_path, "nodeB", "nodeC") as c:
        retried = await c.create(maxRetries=1, retryBackoffSec=0.1, payload=sleeper)
        first = await c.wait_task(retried, "Running")
        lost_node = first["scheduledOn"]
        [other] = set(AGENT_IPS) - {lost_node}
        await c.pid_of(retried)
        await c.agents[lost_node].kill()  # kill -9: the link drops, no goodbye

        await c.wait_node(lost_node, "Unhealthy")
        task = await c.wait_task(retried, "Running", attempt=2)
        assert task["scheduledOn"] == other
        detail = await c.get(f"/v1/tasks/{retried}")
        assert [(a["attempt"], a["state"], a["error"], a["scheduledOn"])
                for a in detail["attempts"]][:1] == [(1, "Failed", "agent lost", lost_node)]
        await c.pid_of(retried, 2)

        single = await c.create(maxRetries=0, payload=sleeper)  # only `other` is left
        assert (await c.wait_task(single, "Running"))["scheduledOn"] == other
        await c.pid_of(single)
        await c.agents[other].kill()
        ended = await c.wait_tasks({single, retried}, *TERMINAL)  # the retry had none left
        for task in ended.values():
            assert (task["state"], task["error"]) == ("Failed", "agent lost"), task

        await c.start_agent(lost_node)
        await c.wait_node(lost_node, "Healthy")
        nodes = {n["nodeId"]: n["health"] for n in await c.get("/v1/nodes")}
        assert nodes == {lost_node: "Healthy", other: "Unhealthy"}  # no duplicate


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
async def test_a_task_outlives_a_controller_restart_and_is_recorded_once(tmp_path, stop):
    gate = tmp_path / "go"
    script = f"echo $$; while [ ! -e {gate} ]; do sleep 0.02; done; echo finished"
    async with cluster(tmp_path, "nodeB") as c:
        task_id = await c.create(targetKind="node", targetRef="nodeB", maxRetries=2,
                                 payload=sh(script))
        await c.wait_task(task_id, "Running")  # stored Running: the new controller adopts it
        pid = await c.pid_of(task_id)
        if stop == "kill":
            await c.controller.kill()
        else:
            assert await c.controller.terminate() == 0
        gate.touch()  # the task ends while the controller is away: the agent keeps the result
        assert await wait_gone(pid, DEADLINE)

        port = c.url.rsplit(":", 1)[1]
        async with (
            start_plum(tmp_path, "--role", "controller", "--addr", f"127.0.0.1:{port}",
                       env=AUTH, name="controller") as controller,
            open_stream(c.session, f"{controller.url}/v1/stream?topics=tasks") as events,
        ):
            c.controller, c.events = controller, events
            task = await c.get(f"/v1/tasks/{task_id}")
            if task["state"] not in TERMINAL:
                task = await c.wait_task(task_id, *TERMINAL)
            assert (task["state"], task["attempt"], task["scheduledOn"]) == (
                "Succeeded", 1, "nodeB"), task
            assert task["result"]["stdout"].endswith("finished\n")
            detail = await c.get(f"/v1/tasks/{task_id}")
            assert [(a["attempt"], a["state"]) for a in detail["attempts"]] == [
                (1, "Succeeded")]
            assert "task_adopted" in controller.log_text()
