"""Process groups: signal one, stop one, and finish cleanup even while being cancelled.

A command Plum runs (an `os_process` task, an agent's app) leads its own process group, so
that stopping it reaches every child it started. Shared by `plum.executors.os_process` and
`plum.agent`.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine
from typing import Any

from plum.clock import Clock, clock_timer

REAP_TIMEOUT = 5.0  # after SIGKILL; only a process stuck in the kernel takes longer


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already empty


def signal_name(number: int) -> str:
    """`SIGKILL` for 9; the number itself for one that has no name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


async def stop_group(
    pgid: int, exited: asyncio.Future, grace: float, clock: Clock | None = None
) -> None:
    """SIGTERM the group, SIGKILL it once the leader has exited or `grace` seconds have
    passed (on `clock` when given, else in real time), then wait up to `REAP_TIMEOUT` for
    `exited`."""
    signal_group(pgid, signal.SIGTERM)
    if not exited.done():
        await _wait_grace(exited, grace, clock)
    signal_group(pgid, signal.SIGKILL)
    if not exited.done():
        await asyncio.wait([exited], timeout=REAP_TIMEOUT)


async def _wait_grace(exited: asyncio.Future, grace: float, clock: Clock | None) -> None:
    if clock is None:
        await asyncio.wait([exited], timeout=grace)
        return
    timer, handle = clock_timer(clock, grace)
    try:
        await asyncio.wait([exited, timer], return_when=asyncio.FIRST_COMPLETED)
    finally:
        handle.cancel()


async def run_to_completion(coro: Coroutine[Any, Any, None]) -> None:
    """Await `coro` to its end even if we are cancelled meanwhile, then re-raise that."""
    task = asyncio.create_task(coro)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
    task.result()
