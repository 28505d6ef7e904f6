"""Every program in `examples/` as a smoke test.

worker-demo: `build.py` makes a valid, reproducible app zip; unpacked as the agent unpacks
it, its `start.sh` runs a worker (with the environment the agent gives apps) that serves
`demo.add`, `demo.wordcount` and the README's DAG workflow against a real `plum serve`,
and drains and exits 0 on SIGTERM. The zip is also accepted by `POST /v1/apps/upload`.

demo-app: `build.py` makes a valid, reproducible app zip (`--port` moves the service port);
deployed on a real all-in-one `plum serve` with the bodies of its README's curl commands,
it runs, is discovered at the node's address, answers there, serves the README's
`service` task and workflow, and stops without leaving a process or an endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from plum.agent.artifacts import extract_app, read_app
from plum.engine.machine import RunState
from plum.engine.tasks import TaskState
from plum.sdk import Client
from tests.support.pids import wait_gone
from tests.support.procs import PlumProcess, start_plum
from tests.support.sse import open_stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DEMO = EXAMPLES / "worker-demo"
DEADLINE = 30.0  # generous; never reached when all is well
SMOKE_TESTED = {"worker-demo", "demo-app"}


def test_every_example_has_a_smoke_test():
    examples = {p.name for p in EXAMPLES.iterdir() if p.is_dir()}
    assert examples == SMOKE_TESTED, "add a smoke test for each new example here"
    for name in examples:
        assert (EXAMPLES / name / "README.md").is_file()
        assert f"`{name}/`" in (EXAMPLES / "README.md").read_text()


def build_demo(out: Path) -> Path:
    done = subprocess.run([sys.executable, str(DEMO / "build.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=DEADLINE, check=True)
    return Path(done.stdout.strip())


def test_worker_demo_builds_a_valid_reproducible_app(tmp_path):
    first = build_demo(tmp_path / "one")
    assert first == tmp_path / "one" / "worker-demo-1.0.0.zip"
    meta = read_app(first)  # the agent's own checks
    assert (meta.name, meta.version) == ("worker-demo", "1.0.0")
    with zipfile.ZipFile(first) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    assert set(infos) == {"start.sh", "meta.ini", "worker.py"}
    assert infos["start.sh"].external_attr >> 16 & 0o111
    assert build_demo(tmp_path / "two").read_bytes() == first.read_bytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(grpc_addr: str, plum_url: str) -> dict[str, str]:
    """What the agent gives an app, on top of a clean environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PLUM_", "CONTROLLER_", "WORKER_"))}
    return {**env, "PLUM_PYTHON": sys.executable, "PYTHONUNBUFFERED": "1",
            "CONTROLLER_GRPC_ADDR": grpc_addr, "CONTROLLER_BASE": plum_url,
            "PLUM_INSTANCE_ID": "demo0000000000000000000000000000-0a1b2c3d",
            "PLUM_APP_NAME": "worker-demo", "PLUM_APP_VERSION": "1.0.0",
            "WORKER_NODE_ID": "smoke-node"}


@asynccontextmanager
async def demo_app(tmp_path: Path, grpc_addr: str,
                   plum: PlumProcess) -> AsyncIterator[asyncio.subprocess.Process]:
    """The built app, unpacked as the agent unpacks it, started through its start.sh."""
    app_dir = tmp_path / "instance"
    app_dir.mkdir()
    extract_app(build_demo(tmp_path / "dist"), app_dir)
    with (tmp_path / "worker-demo.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(app_dir / "start.sh"), cwd=app_dir, env=app_env(grpc_addr, plum.url or ""),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def readme_workflow() -> dict:
    """The DAG workflow exactly as the README's curl command sends it."""
    text = (DEMO / "README.md").read_text()
    body = re.search(r"POST \$PLUM/v1/workflows -d '(.*?)'\n", text, re.S)
    assert body, "the README's workflow command is gone"
    return json.loads(body.group(1))


async def test_worker_demo_serves_its_tasks_and_the_readme_workflow(tmp_path):
    grpc_addr = f"127.0.0.1:{free_port()}"
    async with start_plum(tmp_path, "--grpc-addr", grpc_addr) as plum, \
            demo_app(tmp_path, grpc_addr, plum) as worker, Client(plum.url) as client:
        add = await client.create_task("demo.add", "embedded", {"a": 2, "b": 3})
        count = await client.create_task("demo.wordcount", "embedded",
                                         {"text": "to be or not to be"})
        added = await client.wait_task(add.task_id, DEADLINE)
        assert (added.state, added.result) == (TaskState.SUCCEEDED, {"sum": 5})
        counted = await client.wait_task(count.task_id, DEADLINE)
        assert counted.state == TaskState.SUCCEEDED
        assert counted.result == {"words": 6, "top": [["to", 2], ["be", 2], ["or", 1]]}

        workflow = await client.create_workflow(readme_workflow())
        run = await client.run_workflow(workflow.workflow_id, {"a": 1, "b": 2})
        done = await client.wait_run(run.run_id, DEADLINE)
        assert done.state == RunState.SUCCEEDED, done
        nodes = {n.node_id: n for n in done.nodes}
        assert nodes["add"].result == {"sum": 3}
        assert nodes["count"].input == {"text": "the answer is 3 the answer"}
        assert nodes["count"].result["words"] == 6

        worker.send_signal(signal.SIGTERM)  # start.sh exec'd python: the worker drains
        assert await asyncio.wait_for(worker.wait(), DEADLINE) == 0, \
            (tmp_path / "worker-demo.log").read_text()


async def test_worker_demo_zip_is_accepted_by_the_upload_api(tmp_path):
    archive = build_demo(tmp_path / "dist")
    async with start_plum(tmp_path) as plum, aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("file", archive.read_bytes(), filename=archive.name,
                       content_type="application/zip")
        async with session.post(f"{plum.url}/v1/apps/upload", data=form) as response:
            body = await response.json()
            assert response.status in (200, 201), body
    assert (body["name"], body["version"]) == ("worker-demo", "1.0.0")
    assert body["sizeBytes"] == archive.stat().st_size


async def test_worker_demo_deploys_through_the_agent_as_the_readme_says(tmp_path):
    """Upload, deploy, start (the all-in-one agent runs start.sh), run a task, stop."""
    archive = build_demo(tmp_path / "dist")
    grpc_addr = f"127.0.0.1:{free_port()}"
    async with start_plum(tmp_path, "--grpc-addr", grpc_addr) as plum, \
            aiohttp.ClientSession() as session, Client(plum.url) as client:
        app = await upload(session, plum, archive)
        async with session.get(f"{plum.url}/v1/nodes") as response:
            [node] = await response.json()
        deployment = await post(session, f"{plum.url}/v1/deployments", {
            "name": "worker-demo",
            "entries": [{"artifactId": app["artifactId"], "replicas": {node["nodeId"]: 1}}],
        })
        deployment_id = deployment["deploymentId"]
        await post(session, f"{plum.url}/v1/deployments/{deployment_id}?action=start", {})

        task = await client.create_task("demo.add", "embedded", {"a": 40, "b": 2})
        done = await client.wait_task(task.task_id, DEADLINE)
        assert (done.state, done.result) == (TaskState.SUCCEEDED, {"sum": 42})

        async with session.get(f"{plum.url}/v1/embedded-workers") as response:
            [worker] = await response.json()
        [instance] = deployment["instances"]
        assert worker["workerId"] == worker["instanceId"] == instance["instanceId"]
        assert (worker["appName"], worker["appVersion"]) == ("worker-demo", "1.0.0")

        # the instance's output is readable through the API (from its agent's log file)
        logs_url = f"{plum.url}/v1/instances/{instance['instanceId']}/logs?tailBytes=100000"
        async with session.get(logs_url) as response:
            logs = await response.json()
            assert response.status == 200, logs
        assert "worker_started" in logs["text"], logs
        assert logs["nodeId"] == instance["nodeId"]
        async with session.get(f"{plum.url}/v1/instances/nope/logs") as response:
            assert response.status == 404

        # apps outlive their agent: stop it before the controller goes
        url = f"{plum.url}/v1/stream?topics=instances"
        async with open_stream(session, url) as events:
            await post(session, f"{plum.url}/v1/deployments/{deployment_id}?action=stop", {})
            await events.wait_for(
                lambda e: e.event == "instances"
                and e.json().get("instanceId") == instance["instanceId"]
                and e.json().get("phase") in ("Stopped", "Completed", "Failed"), DEADLINE)


async def upload(session: aiohttp.ClientSession, plum: PlumProcess, archive: Path) -> dict:
    form = aiohttp.FormData()
    form.add_field("file", archive.read_bytes(), filename=archive.name,
                   content_type="application/zip")
    async with session.post(f"{plum.url}/v1/apps/upload", data=form) as response:
        body = await response.json()
        assert response.status == 201, body
        return body


async def post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url, json=body) as response:
        answer = await response.json()
        assert response.status in (200, 201), answer
        return answer


# -- demo-app --------------------------------------------------------------------------------
DEMO_APP = EXAMPLES / "demo-app"


def build_demo_app(out: Path, *options: str) -> Path:
    done = subprocess.run([sys.executable, str(DEMO_APP / "build.py"), "--out", str(out),
                           *options], capture_output=True, text=True, timeout=DEADLINE,
                          check=True)
    return Path(done.stdout.strip())


def test_demo_app_builds_a_valid_reproducible_app(tmp_path):
    first = build_demo_app(tmp_path / "one")
    assert first == tmp_path / "one" / "demo-app-1.0.0.zip"
    meta = read_app(first)  # the agent's own checks
    assert (meta.name, meta.version) == ("demo-app", "1.0.0")
    assert [(s.service_name, s.protocol, s.port) for s in meta.services] == [
        ("demo", "http", 18080)]
    with zipfile.ZipFile(first) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    assert set(infos) == {"start.sh", "meta.ini", "server.py"}
    assert infos["start.sh"].external_attr >> 16 & 0o111
    assert build_demo_app(tmp_path / "two").read_bytes() == first.read_bytes()
    moved = read_app(build_demo_app(tmp_path / "three", "--port", "24680"))
    assert [s.port for s in moved.services] == [24680]


def free_service_port() -> int:
    """A port below the ephemeral range, free on 127.0.0.1 (where the demo app listens)."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port")


def readme_body(readme: str, command: str, **values: str) -> dict:
    """The JSON body of the README's `curl ... -X POST <command> -d '...'`, with its shell
    variables (`'$NAME'`) replaced by `values`."""
    found = re.search(re.escape(f"POST {command} -d '") + r"(.*?)'\n", readme, re.S)
    assert found, f"the README's POST {command} command is gone"
    text = found.group(1)
    for name, value in values.items():
        text = text.replace(f"'${name}'", value)
    return json.loads(text)


async def test_demo_app_deploys_is_discovered_and_serves_the_readme_calls(tmp_path):
    port = free_service_port()
    archive = build_demo_app(tmp_path / "dist", "--port", str(port))
    readme = (DEMO_APP / "README.md").read_text()
    async with start_plum(tmp_path) as plum, aiohttp.ClientSession() as session, \
            Client(plum.url) as client:
        base = plum.url
        app = await upload(session, plum, archive)
        async with session.get(f"{base}/v1/nodes") as response:
            [node] = await response.json()
        body = readme_body(readme, "$PLUM/v1/deployments", ARTIFACT=app["artifactId"],
                           NODE=node["nodeId"])
        deployment = await post(session, f"{base}/v1/deployments", body)
        deployment_id = deployment["deploymentId"]
        [instance] = deployment["instances"]
        async with open_stream(session, f"{base}/v1/stream?topics=services") as events:
            await post(session, f"{base}/v1/deployments/{deployment_id}?action=start", {})
            await events.wait_for(  # registered once Running and healthy
                lambda e: e.json().get("instanceId") == instance["instanceId"]
                and e.json().get("healthy") and not e.json().get("deleted"), DEADLINE)
        async with session.get(f"{base}/v1/deployments/{deployment_id}") as response:
            [running] = (await response.json())["instances"]
        assert (running["phase"], running["healthy"]) == ("Running", True), running

        async with session.get(f"{base}/v1/discovery?service=demo") as response:
            [endpoint] = await response.json()
        assert (endpoint["ip"], endpoint["port"], endpoint["instanceId"]) == (
            "127.0.0.1", port, instance["instanceId"])
        async with session.get(f"http://127.0.0.1:{port}/hello") as response:
            hello = await response.json()
        assert (hello["instanceId"], hello["pid"]) == (instance["instanceId"], running["pid"])

        task = await post(session, f"{base}/v1/tasks", readme_body(readme, "$PLUM/v1/tasks"))
        done = await client.wait_task(task["taskId"], DEADLINE)
        assert done.state == TaskState.SUCCEEDED, done
        assert done.result["greeting"] == "hello, Plum"
        assert done.result["servedBy"]["instanceId"] == instance["instanceId"]

        task_def = await post(session, f"{base}/v1/task-defs",
                              readme_body(readme, "$PLUM/v1/task-defs"))
        workflow = await post(session, f"{base}/v1/workflows",
                              readme_body(readme, "$PLUM/v1/workflows", DEF=task_def["defId"]))
        run_body = readme_body(readme, '"$PLUM/v1/workflows/<workflowId>?action=run"')
        run = await post(session, f"{base}/v1/workflows/{workflow['workflowId']}?action=run",
                         run_body)
        finished = await client.wait_run(run["runId"], DEADLINE)
        assert finished.state == RunState.SUCCEEDED, finished
        results = {n.node_id: n.result for n in finished.nodes}
        assert results["greet"]["greeting"] == "hello, Plum"
        assert results["again"]["greeting"] == "hello, hello, Plum"

        async with open_stream(session, f"{base}/v1/stream?topics=instances") as events:
            await post(session, f"{base}/v1/deployments/{deployment_id}?action=stop", {})
            await events.wait_for(
                lambda e: e.json().get("instanceId") == instance["instanceId"]
                and e.json().get("phase") == "Stopped", DEADLINE)
        assert await wait_gone(running["pid"], DEADLINE)
        async with session.get(f"{base}/v1/discovery?service=demo&all=true") as response:
            assert await response.json() == []
