"""`plum serve` as a real process: readiness, health, SIGTERM, restart, the agent role."""

import asyncio
import json
import sys

import aiohttp
import pytest

from tests.support.procs import launch_plum, plum_with_stream, start_plum

pytestmark = pytest.mark.integration


async def get_json(session: aiohttp.ClientSession, url: str):
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_serve_health_and_graceful_sigterm(tmp_path):
    plum = await launch_plum(tmp_path / "c")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{plum.url}/healthz") as response:
            assert await response.text() == "ok"
        info = await get_json(session, f"{plum.url}/v1/system/info")
        assert info["role"] == "all"
        assert info["nodeCount"] == 1
    assert await plum.terminate() == 0
    events = [
        json.loads(line)["event"] for line in plum.log_text().splitlines() if line.startswith("{")
    ]
    assert "shutdown_requested" in events
    assert events.index("role_stopping") < events.index("role_stopped")


async def test_state_survives_a_restart(tmp_path):
    async with start_plum(tmp_path) as plum, aiohttp.ClientSession() as session:
        async with session.post(
            f"{plum.url}/v1/nodes/heartbeat", json={"nodeId": "edge-9", "ip": "127.0.0.9"}
        ) as response:
            assert response.status == 200
        await plum.kill()  # kill -9: nothing flushed on the way out
    async with start_plum(tmp_path) as plum, aiohttp.ClientSession() as session:
        nodes = await get_json(session, f"{plum.url}/v1/nodes")
        assert "edge-9" in {n["nodeId"] for n in nodes}


async def test_bad_config_stops_startup_naming_the_key(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "plum",
        "serve",
        cwd=tmp_path,
        env={"HEARTBEAT_TTL_SEC": "soon", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"HEARTBEAT_TTL_SEC" in err


async def test_agent_role_registers_with_a_controller(tmp_path):
    async with plum_with_stream(
        tmp_path, "nodes", "--role", "controller", name="controller"
    ) as (controller, session, events):
        async with start_plum(
            tmp_path,
            "--role",
            "agent",
            "--controller",
            controller.url,
            "--node-id",
            "node-b",
            "--agent-ip",
            "127.0.0.2",
            name="agent",
        ):
            event = await events.wait_for(lambda e: e.json()["nodeId"] == "node-b")
            assert event.json()["health"] == "Healthy"
            assert event.json()["ip"] == "127.0.0.2"
            info = await get_json(session, f"{controller.url}/v1/system/info")
            assert info["role"] == "controller"
            assert info["nodeCount"] == 1  # the controller-only role runs no agent of its own
