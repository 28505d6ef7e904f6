"""Workflow engine figures, all durable (every node and task transition committed):

- hop latency over a 200-node chain of builtin.echo (upstream Succeeded -> downstream Running)
- 40 sequential builtin.echo tasks, start to finish
- a root, 200 parallel builtin.echo tasks and a join
- a 10,000-node fan-out/fan-in, nodes per second
- controller RSS after storing 100,000 finished runs (a real `plum serve` process)

    .venv/bin/python bench/dag.py [--skip-rss]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plum.bus import Bus, RunUpdated, TaskChanged
from plum.config import load_config
from plum.engine.dag import Workflow
from plum.engine.machine import NodeRecord, RunState, WorkflowRun
from plum.engine.rules import NodeState
from plum.engine.tasks import TaskState
from plum.ids import new_id
from plum.logging import setup_logging
from plum.roles.controller import ControllerRole
from plum.store.sqlite import SqliteStore

ECHO = {"taskName": "builtin.echo", "payload": {"n": 1}}


class StampingBus(Bus):
    """Records when each task reaches Running or Succeeded (perf_counter)."""

    def __init__(self, clock):
        super().__init__(clock)
        self.running: dict[str, float] = {}
        self.finished: dict[str, float] = {}

    def publish(self, event):
        if isinstance(event, TaskChanged) and event.task.dag_node_id:
            key = (event.task.workflow_run_id, event.task.dag_node_id)
            if event.task.state == TaskState.RUNNING:
                self.running[key] = time.perf_counter()
            elif event.task.state == TaskState.SUCCEEDED:
                self.finished[key] = time.perf_counter()
        return super().publish(event)


def chain(n: int, name: str) -> dict:
    nodes = [{"id": f"n{i}", **ECHO} for i in range(n)]
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(n - 1)]
    return {"name": name, "nodes": nodes, "edges": edges}


def fan(n: int, name: str) -> dict:
    nodes = [{"id": "root", **ECHO}, {"id": "join", **ECHO}]
    nodes += [{"id": f"p{i}", **ECHO} for i in range(n)]
    edges = [{"from": "root", "to": f"p{i}"} for i in range(n)]
    edges += [{"from": f"p{i}", "to": "join"} for i in range(n)]
    return {"name": name, "nodes": nodes, "edges": edges}


async def run_once(svc, body: dict) -> tuple[float, WorkflowRun]:
    workflow = await svc.workflows.create(body)
    done = svc.bus.wait_for(lambda e: isinstance(e, RunUpdated) and
                            e.run.workflow_id == workflow.workflow_id and
                            e.run.state in (RunState.SUCCEEDED, RunState.FAILED))
    start = time.perf_counter()
    await svc.workflows.run(workflow.workflow_id, {})
    event = await asyncio.wait_for(done, 600)
    elapsed = time.perf_counter() - start
    assert event.run.state == RunState.SUCCEEDED, event.run.error
    return elapsed, event.run


async def engine_figures(folder: Path) -> None:
    config = load_config(None, environ={"CONTROLLER_DATA_DIR": str(folder / "engine"),
                                        "CONTROLLER_GRPC_ADDR": "127.0.0.1:0"},
                         dotenv=None)
    role = ControllerRole(config)
    async with AsyncExitStack() as stack:
        import plum.roles.controller as controller_module

        controller_module.Bus = StampingBus  # stamp transitions as they are published
        await role.start_core(stack)
        svc = role.services
        bus: StampingBus = svc.bus  # type: ignore[assignment]

        await run_once(svc, chain(5, "warmup"))
        _, run = await run_once(svc, chain(200, "chain-200"))
        hops = sorted(
            (bus.running[(run.run_id, f"n{i + 1}")] - bus.finished[(run.run_id, f"n{i}")]) * 1000
            for i in range(199))
        print(f"hop latency, 200-node chain: p50 {statistics.median(hops):.2f} ms, "
              f"p99 {hops[int(len(hops) * 0.99)]:.2f} ms, max {hops[-1]:.2f} ms")

        times = [(await run_once(svc, chain(40, f"seq-40-{i}")))[0] for i in range(5)]
        print(f"40 sequential builtin.echo: best {min(times):.3f} s, "
              f"median {statistics.median(times):.3f} s")

        times = [(await run_once(svc, fan(200, f"fan-200-{i}")))[0] for i in range(5)]
        print(f"root + 200 parallel + join: best {min(times):.3f} s, "
              f"median {statistics.median(times):.3f} s")

        start = time.perf_counter()
        workflow = await svc.workflows.create(fan(9_998, "fan-10000"))
        validated = time.perf_counter() - start
        elapsed, _ = await run_once_existing(svc, workflow)
        print(f"10,000-node fan-out/fan-in: created+validated in {validated:.2f} s, ran in "
              f"{elapsed:.2f} s = {10_000 / elapsed:,.0f} nodes/s")


async def run_once_existing(svc, workflow: Workflow) -> tuple[float, WorkflowRun]:
    done = svc.bus.wait_for(lambda e: isinstance(e, RunUpdated) and
                            e.run.workflow_id == workflow.workflow_id and
                            e.run.state in (RunState.SUCCEEDED, RunState.FAILED))
    start = time.perf_counter()
    await svc.workflows.run(workflow.workflow_id, {})
    event = await asyncio.wait_for(done, 600)
    return time.perf_counter() - start, event.run


async def rss_figure(folder: Path, runs: int) -> None:
    data = folder / "rss"
    store = SqliteStore(data / "plum.db")
    await store.start()
    try:
        now = time.time()
        for first in range(0, runs, 2_000):
            writes = []
            for i in range(first, min(runs, first + 2_000)):
                run = WorkflowRun(run_id=new_id(), workflow_id="w" * 32, version=1,
                                  state=RunState.SUCCEEDED, workflow_name="bench",
                                  result={"a": {"echo": i}}, created_at=now, updated_at=now,
                                  started_at=now, finished_at=now)
                node = NodeRecord(node_key="a", node_id="a", type="task",
                                  state=NodeState.SUCCEEDED, result={"echo": i})
                writes.append(store.save_run(run.run_id, run, [node]))
            await asyncio.gather(*writes)
    finally:
        await store.stop()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plum", "serve", "--role", "controller", "--addr", "127.0.0.1:0",
        "--grpc-addr", "127.0.0.1:0", "--data-dir", str(data), cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PLUM_LOG_LEVEL": "warning"})
    try:
        line = (await proc.stdout.readline()).decode()
        url = line.split("listening on ")[1].split("/ ")[0].rstrip("/")
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for _ in range(20):  # exercise the read path a little
                async with http.get(f"{url}/v1/workflow-runs?limit=100") as response:
                    await response.read()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS"))
        print(f"controller RSS with {runs:,} finished runs stored: {rss / 1024:.0f} MB")
    finally:
        proc.terminate()
        await proc.wait()


async def main(args: argparse.Namespace) -> None:
    setup_logging("warning")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        await engine_figures(Path(tmp))
        if not args.skip_rss:
            await rss_figure(Path(tmp).resolve(), args.runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--runs", type=int, default=100_000)
    uvloop.run(main(parser.parse_args()))
