"""A role builds its components from config and runs them: start in dependency order,
report readiness, wait for the stop signal, stop in reverse. Roles hold no business logic."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from plum.clock import Clock, SystemClock
from plum.config import Config
from plum.config import Role as RoleName
from plum.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    role: RoleName
    url: str | None = None
    node_id: str | None = None
    grpc_addr: str | None = None


class Role(ABC):
    def __init__(self, config: Config, clock: Clock | None = None):
        self.config = config
        self.clock = clock or SystemClock()

    @abstractmethod
    async def start(self, stack: AsyncExitStack) -> ReadyInfo:
        """Enter each component into `stack`, in dependency order."""

    async def run(self, ready: asyncio.Future, stop: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            info = await self.start(stack)
            if not ready.done():
                ready.set_result(info)
            await stop.wait()
            log.info("role_stopping", role=self.config.server.role.value)
        log.info("role_stopped", role=self.config.server.role.value)


@asynccontextmanager
async def serve_http(app: web.Application, host: str, port: int, *, grace: float):
    """Listen until the context exits; on exit stop accepting, drain within `grace`, close.
    Yields the URL actually bound (port 0 picks a free port)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=grace)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("http_listening", url=f"http://{shown}:{bound_port}/")
        yield f"http://{shown}:{bound_port}"
    finally:
        await runner.cleanup()


def build_role(config: Config, clock: Clock | None = None) -> Role:
    from plum.roles.agent import AgentRole
    from plum.roles.controller import AllInOneRole, ControllerRole

    roles = {
        RoleName.CONTROLLER: ControllerRole,
        RoleName.AGENT: AgentRole,
        RoleName.ALL: AllInOneRole,
    }
    return roles[config.server.role](config, clock)
