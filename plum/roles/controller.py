"""The controller role (and `all`, which adds an in-process agent)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import plum
from plum.agent.agent import Agent
from plum.agent.link import LocalLink
from plum.api.app import build_app
from plum.api.context import Services
from plum.bus import Bus
from plum.config import parse_hostport
from plum.discovery.registry import ServiceRegistry
from plum.engine.orchestrator import TaskEngine, WorkflowEngine
from plum.executors.agents import AgentExecutor, AgentPool
from plum.executors.base import ExecutorKind
from plum.executors.embedded import EmbeddedExecutor
from plum.executors.service import ServiceExecutor
from plum.nodes import NodeRegistry
from plum.roles.base import ReadyInfo, Role, serve_http
from plum.scheduling import Scheduler
from plum.store.sqlite import SqliteStore
from plum.taskservice import TaskService
from plum.workflows import WorkflowService


class ControllerRole(Role):
    services: Services

    async def start(self, stack: AsyncExitStack) -> ReadyInfo:
        await self.start_core(stack)
        return await self.start_http(stack)

    async def start_core(self, stack: AsyncExitStack) -> None:
        config = self.config
        started_at = self.clock.now()
        bus = Bus(self.clock)
        store = SqliteStore(
            config.db_path,
            synchronous=config.store.synchronous,
            read_connections=config.store.read_connections,
        )
        await stack.enter_async_context(store)
        nodes = NodeRegistry(store, bus, self.clock, ttl=config.controller.heartbeat_ttl_sec)
        await stack.enter_async_context(nodes.running())
        discovery = ServiceRegistry(store, bus, self.clock)
        await stack.enter_async_context(discovery.running())
        agents = AgentPool()
        service_executor = await stack.enter_async_context(ServiceExecutor(discovery))
        executors = {
            ExecutorKind.EMBEDDED: EmbeddedExecutor(self.clock),
            ExecutorKind.OS_PROCESS: AgentExecutor(agents),
            ExecutorKind.SERVICE: service_executor,
        }
        engine = TaskEngine(store, bus, self.clock, executors,
                            drain_grace=config.server.shutdown_grace_sec)
        tasks = TaskService(store, engine, bus, self.clock)
        await tasks.install_builtins()
        runs = WorkflowEngine(store, bus, self.clock, engine)
        workflows = WorkflowService(store, runs, self.clock)
        # Runs are rebuilt before the task engine recovers, so that every task end that
        # recovery produces finds its run; then runs catch up with what ended meanwhile.
        await stack.enter_async_context(runs.running())
        await stack.enter_async_context(engine.running())
        await runs.reconcile()
        schedules = Scheduler(store, workflows, bus, self.clock)
        await stack.enter_async_context(schedules.running())
        self.services = Services(
            config=config,
            clock=self.clock,
            bus=bus,
            store=store,
            nodes=nodes,
            agents=agents,
            engine=engine,
            tasks=tasks,
            workflows=workflows,
            schedules=schedules,
            version=plum.__version__,
            started_at=started_at,
            discovery=discovery,
        )

    async def start_http(self, stack: AsyncExitStack) -> ReadyInfo:
        host, port = parse_hostport(self.config.server.addr, "server.addr")
        url = await stack.enter_async_context(
            serve_http(
                build_app(self.services), host, port, grace=self.config.server.shutdown_grace_sec
            )
        )
        return ReadyInfo(role=self.config.server.role, url=url)


class AllInOneRole(ControllerRole):
    """Controller plus an agent that talks to it in-process instead of over a socket."""

    async def start(self, stack: AsyncExitStack) -> ReadyInfo:
        await self.start_core(stack)
        link = LocalLink(self.services.nodes, self.services.agents)
        agent = Agent(self.config, link, self.clock)
        await stack.enter_async_context(agent.running(wait_registered=True))
        info = await self.start_http(stack)
        return ReadyInfo(role=info.role, url=info.url, node_id=agent.node_id)
