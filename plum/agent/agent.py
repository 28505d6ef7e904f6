"""The agent component: tells the controller this node is alive, every `heartbeat_sec`.

It is ready once its first heartbeat is accepted; while the controller is unreachable it
retries with backoff and jitter. (Running apps and os_process tasks arrives with the
supervisor and the websocket link.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import plum
from plum.agent.host import UsageSampler, default_capacity
from plum.agent.link import ControllerLink
from plum.clock import Clock
from plum.config import Config
from plum.errors import Unavailable
from plum.executors.base import ExecutionContext, ExecutionRequest, ExecutionResult
from plum.executors.os_process import OsProcessExecutor
from plum.logging import get_logger
from plum.nodes import NodeHeartbeat

log = get_logger(__name__)


class ProcessRunner:
    """Runs os_process tasks on this node (the agent's task channel)."""

    def __init__(self, node_id: str, capacity: int, clock: Clock, env: dict[str, str]):
        self.node_id = node_id
        self.capacity = capacity
        self._executor = OsProcessExecutor(clock, extra_env=env)

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        return await self._executor.run(request, ctx)


class Agent:
    def __init__(self, config: Config, link: ControllerLink, clock: Clock):
        self._config = config
        self._link = link
        self._clock = clock
        self._usage = UsageSampler()
        self.registered = asyncio.Event()
        self.runner = ProcessRunner(
            self.node_id, default_capacity(config.agent.capacity), clock,
            {"WORKER_NODE_ID": self.node_id, "CONTROLLER_BASE": config.agent.controller,
             "CONTROLLER_GRPC_ADDR": config.server.grpc_addr},
        )

    @property
    def node_id(self) -> str:
        return self._config.node_id

    def _beat(self) -> NodeHeartbeat:
        agent = self._config.agent
        return NodeHeartbeat(
            node_id=self.node_id,
            ip=agent.ip,
            labels=agent.labels,
            capacity=default_capacity(agent.capacity),
            usage=self._usage.sample(),
            version=plum.__version__,
        )

    @asynccontextmanager
    async def running(self, *, wait_registered: bool = False) -> AsyncIterator[Agent]:
        try:
            async with asyncio.TaskGroup() as tg:
                loop = tg.create_task(self._heartbeat_loop(), name="agent-heartbeat")
                try:
                    if wait_registered:
                        await self.registered.wait()
                    await self._link.attach(self.runner)
                    yield self
                finally:
                    await self._link.detach(self.node_id)
                    loop.cancel()
        finally:
            await self._link.close()

    async def _heartbeat_loop(self) -> None:
        backoff = 0.5
        period = self._config.agent.heartbeat_sec
        while True:
            try:
                await self._link.heartbeat(self._beat())
            except Unavailable as exc:
                delay = min(backoff, period) * (0.5 + random.random())
                log.warning(
                    "agent_heartbeat_failed",
                    node_id=self.node_id,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                backoff = min(backoff * 2, 30.0)
                await self._clock.sleep(delay)
                continue
            if not self.registered.is_set():
                log.info("agent_registered", node_id=self.node_id)
                self.registered.set()
            backoff = 0.5
            await self._clock.sleep(period)
