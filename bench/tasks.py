"""Task engine figures: builtin.echo runs per second through the engine and through REST,
create -> Running latency, and os_process overhead against a bare subprocess.

    .venv/bin/python bench/tasks.py [--engine-tasks 20000] [--rest-tasks 6000]

Everything is durable (SQLite WAL, synchronous=FULL): each run is stored as Pending,
Running and Succeeded, each transition committed before it is acted on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plum.bus import Bus, TaskChanged
from plum.clock import SystemClock
from plum.engine.orchestrator import TaskEngine
from plum.engine.tasks import TaskRun, TaskState
from plum.executors.base import ExecutorKind
from plum.executors.embedded import EmbeddedExecutor
from plum.ids import new_id
from plum.logging import setup_logging
from plum.store.sqlite import SqliteStore


def echo_task(clock) -> TaskRun:
    now = clock.now()
    return TaskRun(task_id=new_id(), name="builtin.echo", executor="embedded",
                   state=TaskState.QUEUED, payload={"n": 1}, created_at=now, updated_at=now)


async def engine_figures(folder: Path, n: int) -> None:
    clock = SystemClock()
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(SqliteStore(folder / "engine.db"))
        bus = Bus(clock)
        engine = TaskEngine(store, bus, clock, {ExecutorKind.EMBEDDED: EmbeddedExecutor(clock)})
        await stack.enter_async_context(engine.running())

        # latency: one task at a time, create -> Running event
        samples = []
        for _ in range(500):
            task = echo_task(clock)
            running = bus.wait_for(lambda e, t=task.task_id: isinstance(e, TaskChanged)
                                   and e.task.task_id == t and e.task.state == TaskState.RUNNING)
            done = bus.wait_for(lambda e, t=task.task_id: isinstance(e, TaskChanged)
                                and e.task.task_id == t and e.task.terminal)
            start = time.perf_counter()
            await engine.submit(task, start=True)
            await running
            samples.append((time.perf_counter() - start) * 1000)
            await done
        samples.sort()
        p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
        print(f"create -> Running (engine, sequential, durable): "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")

        # throughput: n tasks submitted concurrently, until all have succeeded
        remaining = n
        all_done = asyncio.get_running_loop().create_future()

        def on_end(task: TaskRun) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                all_done.set_result(None)

        engine.add_listener(on_end)
        start = time.perf_counter()
        for first in range(0, n, 2000):  # bounded windows of concurrent submissions
            batch = min(2000, n - first)
            await asyncio.gather(*(engine.submit(echo_task(clock), start=True)
                                   for _ in range(batch)))
        await all_done
        elapsed = time.perf_counter() - start
        print(f"builtin.echo through the engine: {n / elapsed:,.0f} runs/s "
              f"({n} runs in {elapsed:.2f} s; {store.stats['writes'] / store.stats['commits']:.0f}"
              f" writes per commit)")


async def rest_figures(folder: Path, n: int, clients: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plum", "serve", "--role", "controller", "--addr", "127.0.0.1:0",
        "--grpc-addr", "127.0.0.1:0", "--data-dir", str(folder / "rest"), cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PLUM_LOG_LEVEL": "warning"},
    )
    try:
        line = (await proc.stdout.readline()).decode()
        url = line.split("listening on ")[1].split("/ ")[0].rstrip("/")
        body = {"name": "builtin.echo", "executor": "embedded", "payload": {"n": 1},
                "autoStart": True}
        per_client = n // clients
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:
            async def client() -> None:
                for _ in range(per_client):
                    async with http.post(f"{url}/v1/tasks", json=body) as response:
                        assert response.status == 201, await response.text()

            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            created = time.perf_counter() - start
            while True:
                async with http.get(f"{url}/v1/tasks?state=Succeeded&limit=1") as response:
                    if int(response.headers["X-Total-Count"]) >= per_client * clients:
                        break
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - start
        total = per_client * clients
        print(f"builtin.echo through REST, {clients} clients: {total / elapsed:,.0f} runs/s "
              f"completed ({total} runs; all created after {created:.2f} s, "
              f"all succeeded after {elapsed:.2f} s)")
    finally:
        proc.terminate()
        await proc.wait()


async def os_process_figures() -> None:
    from bench.os_process import measure

    figures = await measure(300)
    print("os_process overhead: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else
                                               f"{k} {v}" for k, v in figures.items()))


async def main(args: argparse.Namespace) -> None:
    setup_logging("warning")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        await engine_figures(Path(tmp), args.engine_tasks)
        await rest_figures(Path(tmp).resolve(), args.rest_tasks, args.clients)
    await os_process_figures()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-tasks", type=int, default=20_000)
    parser.add_argument("--rest-tasks", type=int, default=6_400)
    parser.add_argument("--clients", type=int, default=32)
    uvloop.run(main(parser.parse_args()))
