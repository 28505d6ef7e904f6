"""Workflow runs against real `plum serve` processes (all-in-one: the in-process agent runs
os_process tasks as real subprocesses): the seed example with a real HTTP service and a real
process, trigger rules around a failed node, and a `kill -9` of the controller halfway
through a 50-node workflow."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from tests.support.procs import PlumProcess, plum_with_stream, start_plum
from tests.support.sse import EventStream, open_stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DEADLINE = 60.0  # generous: the machine may be loaded; never reached when all is well
RUN_TERMINAL = {"Succeeded", "Failed", "Canceled"}


# --- a real HTTP service ---------------------------------------------------------------------


class ScoreService:
    """`POST /task` answers with what it was sent; `GET /healthz` answers ok."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.port = 0

    async def task(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        return web.json_response({"accepted": body["payload"], "by": "scorer"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


@asynccontextmanager
async def serve_scorer() -> AsyncIterator[ScoreService]:
    service = ScoreService()
    app = web.Application()
    app.router.add_post("/task", service.task)
    app.router.add_get("/healthz", service.healthz)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        service.port = runner.addresses[0][1]
        yield service
    finally:
        await runner.cleanup()


# --- helpers ---------------------------------------------------------------------------------


async def post_json(session: aiohttp.ClientSession, url: str, body: dict | None,
                    status: int = 201) -> dict:
    async with session.post(url, json=body) as response:
        assert response.status == status, await response.text()
        return await response.json()


async def get_json(session: aiohttp.ClientSession, url: str):
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def create_def(session: aiohttp.ClientSession, plum: PlumProcess, **body) -> str:
    return (await post_json(session, f"{plum.url}/v1/task-defs", body))["defId"]


async def create_workflow(session: aiohttp.ClientSession, plum: PlumProcess, body: dict) -> str:
    return (await post_json(session, f"{plum.url}/v1/workflows", body))["workflowId"]


async def start_run(session: aiohttp.ClientSession, plum: PlumProcess, workflow_id: str,
                    params: dict | None = None) -> str:
    url = f"{plum.url}/v1/workflows/{workflow_id}?action=run"
    return (await post_json(session, url, {"params": params or {}}))["runId"]


async def get_run(session: aiohttp.ClientSession, plum: PlumProcess, run_id: str) -> dict:
    return await get_json(session, f"{plum.url}/v1/workflow-runs/{run_id}")


def nodes_of(detail: dict) -> dict[str, dict]:
    return {n["nodeKey"]: n for n in detail["nodes"]}


async def wait_run_end(session: aiohttp.ClientSession, plum: PlumProcess,
                       events: EventStream, run_id: str) -> dict:
    """The run's detail once it has ended, from SSE (opened before the run could end)."""
    while True:
        event = await events.next(DEADLINE)
        if event.event == "resync":  # fell behind: the stored state decides
            detail = await get_run(session, plum, run_id)
            if detail["state"] in RUN_TERMINAL:
                return detail
            continue
        data = event.json()
        if data.get("runId") == run_id and "node" not in data \
                and data["state"] in RUN_TERMINAL:
            return await get_run(session, plum, run_id)


async def run_to_end(session: aiohttp.ClientSession, plum: PlumProcess, workflow_id: str,
                     params: dict | None = None) -> dict:
    async with open_stream(session, f"{plum.url}/v1/stream?topics=runs") as events:
        run_id = await start_run(session, plum, workflow_id, params)
        return await wait_run_end(session, plum, events, run_id)


# --- the seed example ------------------------------------------------------------------------


def seed_workflow(service_def: str, process_def: str) -> dict:
    """echo → branch(score > 60) → service | os_process → parallel → loop of 3."""
    return {
        "name": "seed",
        "params": {"score": 0},
        "nodes": [
            {"id": "echo", "taskName": "builtin.echo", "payload": {"score": "${params.score}"}},
            {"id": "check", "type": "branch",
             "condition": {"field": "result.echo.score", "operator": ">", "value": 60}},
            {"id": "high", "taskDefId": service_def,
             "payload": {"score": "${nodes.echo.result.echo.score}"}},
            {"id": "low", "taskDefId": process_def,
             "payload": {"args": ["low", "score=${params.score}"]}},
            {"id": "join", "type": "parallel", "triggerRule": "one_success"},
            {"id": "repeat", "type": "loop", "loop": {"mode": "count", "count": 3},
             "body": {"nodes": [{"id": "tick", "taskName": "builtin.echo",
                                 "payload": {"i": "${loop.index}", "score": "${params.score}"}}]}},
        ],
        "edges": [
            {"from": "echo", "to": "check"},
            {"from": "check", "to": "high", "edgeType": "true"},
            {"from": "check", "to": "low", "edgeType": "false"},
            {"from": "high", "to": "join"},
            {"from": "low", "to": "join"},
            {"from": "join", "to": "repeat"},
        ],
    }


def loop_result(score: int) -> dict:
    return {"iterations": 3,
            "results": [{"tick": {"echo": {"i": i, "score": score}}} for i in range(3)]}


async def test_seed_example_end_to_end_with_real_executors(tmp_path):
    async with (
        serve_scorer() as scorer,
        start_plum(tmp_path) as plum,
        aiohttp.ClientSession() as session,
    ):
        await post_json(session, f"{plum.url}/v1/services/register", {
            "instanceId": "scorer-1", "ip": "127.0.0.1",
            "endpoints": [{"serviceName": "scorer", "port": scorer.port, "protocol": "http"}],
        }, status=200)
        service_def = await create_def(session, plum, name="score-service", executor="service",
                                       targetKind="service", targetRef="scorer", timeoutSec=30)
        process_def = await create_def(session, plum, name="low-score", executor="os_process",
                                       defaultPayload={"command": "echo"}, timeoutSec=30)
        workflow_id = await create_workflow(session, plum,
                                            seed_workflow(service_def, process_def))

        high = await run_to_end(session, plum, workflow_id, {"score": 80})
        assert high["state"] == "Succeeded", high
        nodes = nodes_of(high)
        states = {k: n["state"] for k, n in nodes.items()}
        assert states == {"echo": "Succeeded", "check": "Succeeded", "high": "Succeeded",
                          "low": "Skipped", "join": "Succeeded", "repeat": "Succeeded",
                          "repeat#0/tick": "Succeeded", "repeat#1/tick": "Succeeded",
                          "repeat#2/tick": "Succeeded"}
        assert nodes["check"]["result"] == {"value": 80, "result": True}
        assert nodes["high"]["result"] == {"accepted": {"score": 80}, "by": "scorer"}
        assert scorer.calls == [{"taskId": nodes["high"]["taskId"], "name": "score-service",
                                 "payload": {"score": 80}}]
        assert nodes["repeat"]["result"] == loop_result(80)
        assert high["result"] == {"repeat": loop_result(80)}

        low = await run_to_end(session, plum, workflow_id, {"score": 10})
        assert low["state"] == "Succeeded", low
        nodes = nodes_of(low)
        assert (nodes["high"]["state"], nodes["low"]["state"]) == ("Skipped", "Succeeded")
        assert nodes["check"]["result"] == {"value": 10, "result": False}
        process = nodes["low"]["result"]
        assert (process["command"], process["args"]) == ("echo", ["low", "score=10"])
        assert (process["exitCode"], process["stdout"]) == (0, "low score=10\n")
        task = await get_json(session, f"{plum.url}/v1/tasks/{nodes['low']['taskId']}")
        assert task["executor"] == "os_process" and task["scheduledOn"], task
        assert len(scorer.calls) == 1  # the service was not called this time
        assert low["result"] == {"repeat": loop_result(10)}


# --- trigger rules around a failure ----------------------------------------------------------


async def test_failed_middle_node_fails_its_successors_and_cleanup_still_runs(tmp_path):
    async with start_plum(tmp_path) as plum, aiohttp.ClientSession() as session:
        process_def = await create_def(session, plum, name="say", executor="os_process",
                                       defaultPayload={"command": "echo"}, timeoutSec=30)
        workflow_id = await create_workflow(session, plum, {"name": "broken-middle", "nodes": [
            {"id": "first", "taskDefId": process_def, "payload": {"args": ["first"]}},
            {"id": "boom", "taskName": "builtin.fail", "payload": {"message": "middle broke"}},
            {"id": "after", "taskName": "builtin.echo"},
            {"id": "later", "taskDefId": process_def, "payload": {"args": ["later"]}},
            {"id": "cleanup", "taskDefId": process_def, "triggerRule": "all_done",
             "payload": {"args": ["cleaned"]}},
        ], "edges": [
            {"from": "first", "to": "boom"}, {"from": "boom", "to": "after"},
            {"from": "after", "to": "later"}, {"from": "boom", "to": "cleanup"},
        ]})
        detail = await run_to_end(session, plum, workflow_id)
        assert detail["state"] == "Failed", detail
        assert detail["error"] == "later UpstreamFailed"
        nodes = nodes_of(detail)
        assert {k: n["state"] for k, n in nodes.items()} == {
            "first": "Succeeded", "boom": "Failed", "after": "UpstreamFailed",
            "later": "UpstreamFailed", "cleanup": "Succeeded"}
        assert nodes["boom"]["error"] == "middle broke"
        assert nodes["first"]["result"]["stdout"] == "first\n"
        assert nodes["cleanup"]["result"]["stdout"] == "cleaned\n"
        assert nodes["after"]["taskId"] is None and nodes["later"]["taskId"] is None
        tasks = await get_json(session, f"{plum.url}/v1/tasks?workflowRunId={detail['runId']}")
        assert sorted(t["dagNodeId"] for t in tasks) == ["boom", "cleanup", "first"]


# --- kill -9 halfway ------------------------------------------------------------------------


CHAIN = 50
KILL_AFTER = 20


def chain_workflow(append_def: str, log_path: str) -> dict:
    nodes = [{"id": f"n{i}", "taskDefId": append_def,
              "payload": {"args": ["-c", f"echo n{i} >> '{log_path}'; sleep 0.2"]}}
             for i in range(CHAIN)]
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(CHAIN - 1)]
    return {"name": "long-chain", "nodes": nodes, "edges": edges}


async def wait_succeeded_nodes(session: aiohttp.ClientSession, plum: PlumProcess,
                               events: EventStream, run_id: str, count: int) -> None:
    done: set[str] = set()
    while len(done) < count:
        event = await events.next(DEADLINE)
        if event.event == "resync":
            detail = await get_run(session, plum, run_id)
            done |= {k for k, n in nodes_of(detail).items() if n["state"] == "Succeeded"}
            continue
        data = event.json()
        node = data.get("node")
        if data.get("runId") == run_id and node and node["state"] == "Succeeded":
            done.add(node["nodeKey"])


async def test_kill_9_mid_workflow_then_restart_finishes_every_node(tmp_path):
    log_path = tmp_path / "executed.log"
    log_path.touch()
    async with plum_with_stream(tmp_path, "runs") as (plum, session, events):
        # maxRetries 1: an attempt lost with the controller runs once more after the restart
        append_def = await create_def(session, plum, name="append", executor="os_process",
                                      defaultPayload={"command": "/bin/sh"}, timeoutSec=60,
                                      maxRetries=1, retryBackoffSec=0)
        workflow_id = await create_workflow(session, plum,
                                            chain_workflow(append_def, str(log_path)))
        run_id = await start_run(session, plum, workflow_id)
        await wait_succeeded_nodes(session, plum, events, run_id, KILL_AFTER)
        await plum.kill()

    async with plum_with_stream(tmp_path, "runs") as (plum, session, events):
        detail = await get_run(session, plum, run_id)
        succeeded_before = sum(1 for n in detail["nodes"] if n["state"] == "Succeeded")
        assert KILL_AFTER <= succeeded_before < CHAIN, detail["state"]
        if detail["state"] not in RUN_TERMINAL:
            detail = await wait_run_end(session, plum, events, run_id)
        assert detail["state"] == "Succeeded", detail
        nodes = nodes_of(detail)
        assert len(nodes) == CHAIN
        assert {n["state"] for n in nodes.values()} == {"Succeeded"}
        assert sum(1 for n in nodes.values() if n["attempt"] > 1) <= 1

    # Orphans of the killed server only ever sleep 0.2 s after writing their line.
    lines = Counter(log_path.read_text().split())
    assert set(lines) == {f"n{i}" for i in range(CHAIN)}, lines
    twice = [node for node, count in lines.items() if count > 1]
    assert max(lines.values()) <= 2, lines
    assert len(twice) <= 1, twice
