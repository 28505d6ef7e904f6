"""Watching processes a test did not start as children (process groups, orphans)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


def alive(pid: int) -> bool:
    """Still running: exists and is not a zombie waiting for a reaper that may never come."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_gone(pid: int, deadline: float = 10.0) -> bool:
    """Poll until `pid` is gone. No event exists for "a process that is not my child died",
    so this is the one poll-with-deadline the tests allow themselves."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while alive(pid) and loop.time() < end:  # noqa: ASYNC110 - nothing to wait on instead
        await asyncio.sleep(0.02)
    return not alive(pid)
