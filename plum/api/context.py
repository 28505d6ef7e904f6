"""What handlers reach: the controller's services, stored on the aiohttp app."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from plum.agenthub import AgentHub
from plum.apps import AppService
from plum.bus import Bus
from plum.clock import Clock
from plum.config import Config
from plum.deployments import DeploymentService
from plum.discovery.registry import ServiceRegistry
from plum.engine.orchestrator import TaskEngine
from plum.executors.agents import AgentPool
from plum.nodes import NodeRegistry
from plum.scheduling import Scheduler
from plum.store.base import Store
from plum.taskservice import TaskService
from plum.workers.registry import WorkerRegistry
from plum.workflows import WorkflowService


@dataclass(frozen=True, slots=True)
class Services:
    config: Config
    clock: Clock
    bus: Bus
    store: Store
    nodes: NodeRegistry
    agents: AgentPool
    engine: TaskEngine
    tasks: TaskService
    workflows: WorkflowService
    schedules: Scheduler
    version: str
    started_at: float
    discovery: ServiceRegistry
    agents_hub: AgentHub
    workers: WorkerRegistry
    apps: AppService
    deployments: DeploymentService


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
