"""Store interfaces: small, one per concern, returning Plum values (never rows).

Implementations: `plum.store.sqlite.SqliteStore` (production) and
`plum.testing.memory_store.MemoryStore` (tests, SDK users). Both pass the contract suite in
`tests/store/test_contract.py`. Nothing outside an implementation writes SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from plum.discovery.model import Endpoint, EndpointKey
from plum.engine.dag import Workflow, WorkflowSpec
from plum.engine.deployments import App, Deployment, Instance
from plum.engine.machine import NodeRecord, WorkflowRun
from plum.engine.model import Node
from plum.engine.schedules import Schedule
from plum.engine.tasks import Attempt, TaskDef, TaskFilter, TaskRun
from plum.workers.model import Transport, Worker

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


class NodeRepo(Protocol):
    async def upsert_node(self, node: Node) -> None: ...
    async def get_node(self, node_id: str) -> Node:
        """Raises `NotFound`."""

    async def list_nodes(self, *, limit: int = 100, offset: int = 0) -> Page[Node]: ...
    async def delete_node(self, node_id: str) -> None:
        """Raises `NotFound`."""


class MetaRepo(Protocol):
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...


class TaskDefRepo(Protocol):
    async def insert_def(self, task_def: TaskDef) -> None:
        """Raises `Conflict` (field `name`) when the name is taken."""

    async def ensure_defs(self, defs: list[TaskDef]) -> None:
        """Insert those whose name is not stored yet (the builtins, at start)."""

    async def get_def(self, def_id: str) -> TaskDef: ...
    async def get_def_by_name(self, name: str) -> TaskDef | None: ...
    async def list_defs(self, *, limit: int = 100, offset: int = 0) -> Page[TaskDef]: ...
    async def delete_def(self, def_id: str, *, force: bool = False) -> None:
        """Raises `Conflict` with `details={"referenced": n}` while runs reference it."""


class TaskRepo(Protocol):
    async def insert_task(self, task: TaskRun, attempt: Attempt | None = None) -> None: ...
    async def save_task(self, task: TaskRun, attempt: Attempt | None = None) -> None:
        """Store the task's new state and upsert the attempt record, in one write."""

    async def get_task(self, task_id: str) -> TaskRun: ...
    async def list_tasks(
        self, flt: TaskFilter, *, limit: int = 100, offset: int = 0
    ) -> Page[TaskRun]: ...
    async def list_attempts(self, task_id: str) -> list[Attempt]: ...
    async def delete_task(self, task_id: str) -> None: ...
    async def active_tasks(self) -> list[TaskRun]:
        """Every Pending or Running task (for recovery after a restart)."""


class ServiceRepo(Protocol):
    async def replace_endpoints(self, instance_id: str, endpoints: list[Endpoint]) -> None:
        """The instance's endpoints become exactly `endpoints` (kept rows keep their order)."""

    async def touch_endpoints(self, instance_id: str, last_seen: float) -> None:
        """Raises `NotFound` when the instance has no endpoints."""

    async def set_endpoint_health(self, key: EndpointKey, healthy: bool) -> None:
        """Raises `NotFound`."""

    async def delete_endpoints(self, instance_id: str) -> None:
        """Raises `NotFound` when the instance has no endpoints."""

    async def list_endpoints(
        self, *, service_name: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Endpoint]:
        """Newest registration first."""


class WorkflowRepo(Protocol):
    async def insert_workflow(self, workflow: Workflow) -> None:
        """Raises `Conflict` (field `name`) when the name is taken."""

    async def add_version(self, workflow: Workflow) -> None:
        """Store `workflow` as its new current version (its `version` is the new number)."""

    async def get_workflow(self, workflow_id: str) -> Workflow: ...
    async def get_version(self, workflow_id: str, version: int) -> WorkflowSpec: ...
    async def list_workflows(self, *, limit: int = 100, offset: int = 0) -> Page[Workflow]: ...
    async def delete_workflow(self, workflow_id: str) -> None:
        """The workflow goes; its versions stay for the runs that ran them."""

    async def subworkflow_calls(self) -> dict[str, set[str]]:
        """Workflow id -> ids of the workflows its current version calls."""


class RunRepo(Protocol):
    async def save_run(self, run_id: str, run: WorkflowRun | None, nodes: list[NodeRecord],
                       dropped: list[str] | None = None) -> None:
        """Store a run's new state (when given), its changed node records, and forget the
        `dropped` node keys, in one write."""

    async def get_run(self, run_id: str) -> WorkflowRun: ...
    async def list_runs(self, *, workflow_id: str | None = None, limit: int = 100,
                        offset: int = 0) -> Page[WorkflowRun]: ...
    async def run_nodes(self, run_id: str) -> list[NodeRecord]: ...
    async def run_with_nodes(self, run_id: str) -> tuple[WorkflowRun, list[NodeRecord]]:
        """The run and its node records as of one moment (one read snapshot)."""
    async def active_runs(self) -> list[WorkflowRun]: ...
    async def delete_run(self, run_id: str) -> None: ...
    async def count_active_runs(self, workflow_id: str) -> int: ...


class ScheduleRepo(Protocol):
    async def insert_schedule(self, schedule: Schedule) -> None:
        """Raises `Conflict` when the id is taken."""

    async def save_schedule(self, schedule: Schedule) -> None:
        """Replace the stored schedule; raises `NotFound` when there is none."""

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """Raises `NotFound`."""

    async def list_schedules(
        self, *, workflow_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Schedule]:
        """Newest first."""

    async def delete_schedule(self, schedule_id: str) -> None:
        """Raises `NotFound`."""

    async def enabled_schedules(self) -> list[Schedule]:
        """Every enabled schedule (to arm the timer at start)."""


class AppRepo(Protocol):
    async def insert_app(self, app: App) -> None:
        """Raises `Conflict` (field `name`) when the name and version are taken."""

    async def get_app(self, artifact_id: str) -> App:
        """Raises `NotFound`."""

    async def get_app_by_sha256(self, sha256: str) -> App | None: ...
    async def list_apps(self, *, limit: int = 100, offset: int = 0) -> Page[App]:
        """Newest first."""

    async def delete_app(self, artifact_id: str) -> App:
        """Returns what was deleted. Raises `NotFound`, or `Conflict` while a deployment
        uses the app."""


class DeploymentRepo(Protocol):
    async def insert_deployment(self, deployment: Deployment, instances: list[Instance]) -> None:
        """Store a new deployment with its instances, in one write. Raises `Conflict` when
        an app it uses is gone."""

    async def save_deployment(
        self,
        deployment: Deployment | None,
        instances: Sequence[Instance] = (),
        removed: Sequence[str] = (),
    ) -> None:
        """Replace the deployment (when given), upsert `instances` and delete the instances
        whose ids are in `removed`, in one write."""

    async def get_deployment(self, deployment_id: str) -> Deployment:
        """Raises `NotFound`."""

    async def list_deployments(self, *, limit: int = 100, offset: int = 0) -> Page[Deployment]:
        """Newest first."""

    async def delete_deployment(self, deployment_id: str) -> None:
        """The deployment and its instances go. Raises `NotFound`."""

    async def get_instance(self, instance_id: str) -> Instance:
        """Raises `NotFound`."""

    async def list_instances(
        self, *, deployment_id: str | None = None, node_id: str | None = None
    ) -> list[Instance]:
        """Oldest first."""

    async def save_instance_status(self, instance: Instance) -> None:
        """Store what an agent reported (phase, restarts, exitCode, pid, healthy, message,
        lastReportAt), leaving the rest as stored. Raises `NotFound` when it is gone."""


class WorkerRepo(Protocol):
    async def upsert_worker(self, worker: Worker) -> None:
        """Insert or replace the worker (its `inflight` is not stored)."""

    async def get_worker(self, worker_id: str) -> Worker:
        """Raises `NotFound`."""

    async def list_workers(
        self, *, transport: Transport | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Worker]:
        """Newest registration first."""

    async def delete_worker(self, worker_id: str) -> None:
        """Raises `NotFound`."""


class Store(
    NodeRepo, MetaRepo, TaskDefRepo, TaskRepo, WorkflowRepo, RunRepo, ServiceRepo,
    ScheduleRepo, AppRepo, DeploymentRepo, WorkerRepo, Protocol,
):
    """Everything the controller stores. Opened by `start()`, closed by `stop()`."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
