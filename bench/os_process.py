"""Overhead of `run_process` over a bare `create_subprocess_exec` + `wait()`, on /bin/true.

Both run `n` times after a warm-up, interleaved one by one so that drift in machine load hits
both alike. `run_process` does more on purpose (a new session, stdout/stderr pipes read to EOF,
stdin from /dev/null, an environment built per run); the goal is a ratio of 1.5 or less.

    .venv/bin/python bench/os_process.py [-n 300]

Another bench script imports `measure` as `from os_process import measure` (scripts in bench/
have this directory on sys.path) or `from bench.os_process import measure` (repo root on it).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

from plum.clock import SystemClock
from plum.executors.os_process import OsProcessPayload, run_process

TRUE = "/bin/true"
WARM_UP = 20


async def bare_once() -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(TRUE)
    await proc.wait()
    return time.perf_counter() - start


async def run_process_once(spec: OsProcessPayload, clock: SystemClock) -> float:
    start = time.perf_counter()
    result = await run_process(spec, clock=clock)
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"{TRUE} failed: {result.error}")
    return elapsed


async def measure(n: int) -> dict:
    """Mean milliseconds per run of each, and their ratio (run_process / bare)."""
    spec, clock = OsProcessPayload(command=TRUE), SystemClock()
    for _ in range(WARM_UP):
        await bare_once()
        await run_process_once(spec, clock)
    bare = ours = 0.0
    for _ in range(n):
        bare += await bare_once()
        ours += await run_process_once(spec, clock)
    bare_ms, ours_ms = bare / n * 1000, ours / n * 1000
    return {"n": n, "bare_ms": bare_ms, "run_process_ms": ours_ms, "ratio": ours_ms / bare_ms}


async def main(n: int) -> None:
    figures = await measure(n)
    print(f"bare create_subprocess_exec + wait: {figures['bare_ms']:.3f} ms/run (n={n})")
    print(f"run_process:                        {figures['run_process_ms']:.3f} ms/run")
    print(f"ratio: {figures['ratio']:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300)
    uvloop.run(main(parser.parse_args().n))
