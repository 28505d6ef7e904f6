"""Worker dispatch figures: round trip through one gRPC worker, and throughput through four.

    .venv/bin/python bench/workers.py [--samples 1000] [--tasks 20000]

The controller core runs in this process (SQLite WAL, synchronous=FULL, every transition
committed before it is acted on); the workers run in a child process and are built from the
raw generated messages (not the SDK). Their handler answers at once, so the figures are the
dispatch cost alone:

- round trip: one task at a time, from `submit` (stored `Pending`) to its result stored
  (`Succeeded` committed and published), through one worker;
- throughput: 4 workers of capacity 16 each, until all tasks have succeeded; fed by a
  steady producer that keeps `--outstanding` tasks unfinished, then by a burst (windows of
  2,000 submitted at once: most tasks wait `Pending`, and each stores why it waits).
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

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plum.bus import Bus, TaskChanged, WorkerChanged
from plum.config import load_config
from plum.engine.model import Health
from plum.engine.tasks import TaskRun, TaskState
from plum.ids import new_id
from plum.logging import setup_logging
from plum.roles.controller import ControllerRole


# -- the workers (child process) --------------------------------------------------------------
async def run_workers(addr: str, prefix: str, count: int, capacity: int) -> None:
    from grpclib.client import Channel
    from grpclib.const import Cardinality

    from plum.rpc._proto.plum.task import TaskAck, TaskRequest, TaskResponse, WorkerRegister

    host, _, port = addr.rpartition(":")

    async def worker(n: int) -> None:
        channel = Channel(host, int(port))
        async with channel.request("/plum.task.TaskService/TaskStream",
                                   Cardinality.STREAM_STREAM, TaskAck, TaskRequest) as stream:
            await stream.send_message(TaskAck(register=WorkerRegister(
                worker_id=f"{prefix}-{n}", tasks=["bench.noop"], capacity=capacity)))
            async for request in stream:
                if request.cancel:
                    continue
                await stream.send_message(TaskAck(result=TaskResponse(
                    task_id=request.task_id, result='{"ok":true}', attempt=request.attempt)))

    await asyncio.gather(*(worker(n) for n in range(count)))


# -- the controller (this process) ------------------------------------------------------------
def noop_task(now: float) -> TaskRun:
    return TaskRun(task_id=new_id(), name="bench.noop", executor="embedded",
                   state=TaskState.QUEUED, payload={"n": 1}, created_at=now, updated_at=now)


async def start_workers(bus: Bus, addr: str, prefix: str, count: int,
                        capacity: int) -> asyncio.subprocess.Process:
    wanted = {f"{prefix}-{n}" for n in range(count)}
    healthy: set[str] = set()

    def registered(event) -> bool:
        if isinstance(event, WorkerChanged) and event.worker.worker_id in wanted \
                and event.worker.health == Health.HEALTHY:
            healthy.add(event.worker.worker_id)
        return healthy == wanted

    ready = bus.wait_for(registered)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--workers", addr, prefix, str(count), str(capacity),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    await asyncio.wait_for(ready, 30)
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await proc.wait()


def task_event_time(bus: Bus, task_id: str, states: frozenset[TaskState]) -> list[float]:
    """Times when the task reached one of `states`, taken as the event is published."""
    seen: list[float] = []

    def match(event) -> bool:
        if isinstance(event, TaskChanged) and event.task.task_id == task_id \
                and event.task.state in states:
            seen.append(time.perf_counter())
            return True
        return False

    bus.wait_for(match)
    return seen


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"


async def round_trip(svc, addr: str, samples: int) -> None:
    engine, bus, clock = svc.engine, svc.bus, svc.clock
    proc = await start_workers(bus, addr, "rt", 1, 16)
    try:
        dispatch, total = [], []
        for i in range(samples + 100):
            task = noop_task(clock.now())
            pending = task_event_time(bus, task.task_id, frozenset({TaskState.PENDING}))
            done = bus.wait_for(lambda e, t=task.task_id: isinstance(e, TaskChanged)
                                and e.task.task_id == t and e.task.terminal)
            start = time.perf_counter()
            await engine.submit(task, start=True)
            event = await done
            end = time.perf_counter()
            assert event.task.state == TaskState.SUCCEEDED, event.task.error
            if i >= 100:  # warm-up excluded
                dispatch.append((end - pending[0]) * 1000)
                total.append((end - start) * 1000)
        print(f"gRPC worker round trip, Pending stored -> result stored (one at a time, "
              f"durable): {percentiles(dispatch)}; from submit: {percentiles(total)} "
              f"({samples} samples)")
    finally:
        await stop(proc)


async def throughput(svc, addr: str, n: int, workers: int, capacity: int, *,
                     outstanding: int | None) -> None:
    """`outstanding`: keep that many tasks submitted and unfinished (a steady producer);
    None: submit in windows of 2,000 (a burst: most tasks queue, each storing why)."""
    engine, bus, clock = svc.engine, svc.bus, svc.clock
    proc = await start_workers(bus, addr, f"tp{outstanding or 0}", workers, capacity)
    try:
        remaining = n
        all_done = asyncio.get_running_loop().create_future()
        slots = asyncio.Semaphore(outstanding or n)

        def on_end(task: TaskRun) -> None:
            nonlocal remaining
            if task.name != "bench.noop":
                return
            slots.release()
            remaining -= 1
            if remaining == 0 and not all_done.done():
                all_done.set_result(None)

        engine.add_listener(on_end)
        store = svc.store
        commits, writes = store.stats["commits"], store.stats["writes"]
        start = time.perf_counter()
        if outstanding is None:
            for first in range(0, n, 2000):
                batch = min(2000, n - first)
                await asyncio.gather(*(engine.submit(noop_task(clock.now()), start=True)
                                       for _ in range(batch)))
        else:
            async with asyncio.TaskGroup() as tg:  # submits overlap: inserts share commits
                for _ in range(n):
                    await slots.acquire()
                    tg.create_task(engine.submit(noop_task(clock.now()), start=True))
        await all_done
        elapsed = time.perf_counter() - start
        per_commit = (store.stats["writes"] - writes) / max(1, store.stats["commits"] - commits)
        how = (f"{outstanding} outstanding" if outstanding is not None
               else "burst, windows of 2,000")
        print(f"throughput through {workers} gRPC workers of capacity {capacity} ({how}): "
              f"{n / elapsed:,.0f} tasks/s ({n} tasks in {elapsed:.2f} s; "
              f"{per_commit:.0f} writes per commit)")
    finally:
        await stop(proc)


async def main(args: argparse.Namespace) -> None:
    setup_logging("warning")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        config = load_config(None, environ={"CONTROLLER_DATA_DIR": str(Path(tmp) / "data"),
                                            "CONTROLLER_GRPC_ADDR": "127.0.0.1:0"},
                             dotenv=None)
        role = ControllerRole(config)
        async with AsyncExitStack() as stack:
            await role.start_core(stack)
            await round_trip(role.services, role.grpc_addr, args.samples)
            await throughput(role.services, role.grpc_addr, args.tasks, 4, 16,
                             outstanding=args.outstanding)
            await throughput(role.services, role.grpc_addr, args.tasks, 4, 16,
                             outstanding=None)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--workers":
        addr, prefix, count, capacity = sys.argv[2:6]
        try:
            uvloop.run(run_workers(addr, prefix, int(count), int(capacity)))
        except KeyboardInterrupt:
            pass
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--outstanding", type=int, default=128)
    uvloop.run(main(parser.parse_args()))
