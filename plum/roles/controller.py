"""The controller role (and `all`, which adds an in-process agent)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import plum
from plum.agent.agent import run_node_agent
from plum.agent.link import LocalLink
from plum.agenthub import AgentHub
from plum.api.app import build_app
from plum.api.context import Services
from plum.apps import AppService
from plum.appzip import ZipLimits
from plum.bus import Bus
from plum.config import Config, parse_hostport
from plum.deployments import DeploymentService
from plum.discovery.registry import ServiceRegistry
from plum.engine.orchestrator import TaskEngine, WorkflowEngine
from plum.executors.agents import AgentExecutor, AgentPool
from plum.executors.base import ExecutorKind
from plum.executors.embedded import EmbeddedExecutor
from plum.executors.service import ServiceExecutor
from plum.executors.workers import WorkerPool
from plum.failover import Failover
from plum.nodes import NodeRegistry
from plum.roles.base import ReadyInfo, Role, serve_http
from plum.rpc.server import TaskServiceHandler, serve_grpc
from plum.scheduling import Scheduler
from plum.store.sqlite import SqliteStore
from plum.taskservice import TaskService
from plum.workers.registry import WorkerRegistry
from plum.workflows import WorkflowService


class ControllerRole(Role):
    services: Services
    grpc_addr: str  # `host:port` the gRPC server is bound to (set by `start_core`)
    local_agent = False  # `all` runs an agent in this process

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
        workers = WorkerRegistry(
            store, bus, self.clock, WorkerPool(),
            default_capacity=config.workers.default_capacity,
            idle_timeout=config.workers.idle_timeout_sec,
            reconnect_grace=config.workers.reconnect_grace_sec,
        )
        await stack.enter_async_context(workers.running())
        service_executor = await stack.enter_async_context(ServiceExecutor(discovery))
        executors = {
            ExecutorKind.EMBEDDED: EmbeddedExecutor(self.clock, workers.pool),
            ExecutorKind.OS_PROCESS: AgentExecutor(agents),
            ExecutorKind.SERVICE: service_executor,
        }
        engine = TaskEngine(store, bus, self.clock, executors,
                            drain_grace=config.server.shutdown_grace_sec)
        tasks = TaskService(store, engine, bus, self.clock)
        await tasks.install_builtins()
        hub = AgentHub(
            nodes, agents, engine, self.clock,
            heartbeat_sec=config.agent.heartbeat_sec, ttl=config.controller.heartbeat_ttl_sec,
            local_node=config.node_id if self.local_agent else None,
        )  # built before the engine recovers: it adopts tasks still running on agents
        apps = AppService(store, self.clock, artifacts_dir=config.artifacts_path,
                          limits=_zip_limits(config), max_upload_bytes=config.max_body_bytes)
        apps.prepare()
        deployments = DeploymentService(store, apps, nodes, discovery, bus, self.clock)
        deployments.attach(hub)  # before any agent connects: hello asks for assignments
        runs = WorkflowEngine(store, bus, self.clock, engine)
        workflows = WorkflowService(store, runs, self.clock)
        # Runs are rebuilt before the task engine recovers, so that every task end that
        # recovery produces finds its run; then runs catch up with what ended meanwhile.
        await stack.enter_async_context(runs.running())
        await stack.enter_async_context(engine.running())
        await stack.enter_async_context(hub.running())
        await runs.reconcile()
        # gRPC workers: served after the engine starts, stopped before it stops.
        grpc_host, grpc_port = parse_hostport(config.server.grpc_addr, "server.grpc_addr")
        rpc = TaskServiceHandler(workers, engine, tasks, bus,
                                 auth_tokens=config.server.auth_tokens)
        self.grpc_addr = await stack.enter_async_context(
            serve_grpc(rpc, grpc_host, grpc_port, ping_interval=config.workers.ping_interval_sec)
        )
        schedules = Scheduler(store, workflows, bus, self.clock)
        await stack.enter_async_context(schedules.running())
        await stack.enter_async_context(deployments.running())
        failover = Failover(deployments, nodes, bus, self.clock,
                            enabled=config.controller.auto_migration_enabled,
                            grace=config.controller.migration_grace_sec)
        await stack.enter_async_context(failover.running())
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
            agents_hub=hub,
            workers=workers,
            apps=apps,
            deployments=deployments,
        )

    async def start_http(self, stack: AsyncExitStack) -> ReadyInfo:
        host, port = parse_hostport(self.config.server.addr, "server.addr")
        url = await stack.enter_async_context(
            serve_http(
                build_app(self.services), host, port, grace=self.config.server.shutdown_grace_sec
            )
        )
        return ReadyInfo(role=self.config.server.role, url=url, grpc_addr=self.grpc_addr)


def _zip_limits(config: Config) -> ZipLimits:
    mib = 1024 * 1024
    return ZipLimits(
        max_total_bytes=config.controller.app_max_uncompressed_mb * mib,
        max_entry_bytes=config.controller.app_max_entry_mb * mib,
        max_entries=config.controller.app_max_entries,
    )


class AllInOneRole(ControllerRole):
    """Controller plus an agent that talks to it in-process instead of over a socket."""

    local_agent = True

    async def start(self, stack: AsyncExitStack) -> ReadyInfo:
        await self.start_core(stack)
        # HTTP first: the agent's apps download their artifacts from the bound URL.
        info = await self.start_http(stack)
        link = LocalLink(self.services.agents_hub, self.clock)
        agent = await stack.enter_async_context(run_node_agent(
            self.config, link, self.clock, controller_base=info.url or "",
            stop_apps_on_exit=True, wait_registered=True))
        return ReadyInfo(role=info.role, url=info.url, node_id=agent.node_id,
                         grpc_addr=info.grpc_addr)
