"""Process lifecycle: uvloop, logging, the role, and signals.

The first SIGINT/SIGTERM stops intake and drains (each component stops in reverse order
within the grace period); a second one exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import uvloop

import plum
from plum.clock import Clock
from plum.config import Config
from plum.logging import get_logger, setup_logging
from plum.roles import ReadyInfo, build_role

log = get_logger(__name__)


def run(config: Config) -> int:
    setup_logging(config.server.log_level, config.server.log_format)
    return uvloop.run(serve(config))


async def serve(config: Config, *, clock: Clock | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            stop.set()
        else:
            log.warning("shutdown_forced", signal=signal.Signals(signum).name)
            os._exit(130)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    role = build_role(config, clock)
    ready: asyncio.Future[ReadyInfo] = loop.create_future()
    runner = asyncio.create_task(role.run(ready, stop), name="role")
    await asyncio.wait([runner, ready], return_when=asyncio.FIRST_COMPLETED)
    if ready.done() and not ready.cancelled():
        announce(ready.result())
    await runner
    return 0


def announce(info: ReadyInfo) -> None:
    """One plain line on stdout that people (and tests) read: where Plum listens."""
    if info.url:
        print(
            f"Plum {plum.__version__} ({info.role.value}) listening on {info.url}/ "
            f"- dashboard: {info.url}/"
            + (f" - gRPC workers: {info.grpc_addr}" if info.grpc_addr else ""),
            flush=True,
        )
    else:
        print(f"Plum {plum.__version__} ({info.role.value}) node {info.node_id} ready", flush=True)
    sys.stdout.flush()
