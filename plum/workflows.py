"""Workflows and their runs as users see them: definitions with versions, validation
against what exists, and the run operations the REST API (and schedules) call."""

from __future__ import annotations

from typing import Any

import msgspec

from plum.clock import Clock
from plum.engine.dag import DagNode, Edge, Workflow, WorkflowSpec, validate
from plum.engine.forms import normalize
from plum.engine.machine import NodeRecord, RunState, WorkflowRun
from plum.engine.model import Model
from plum.engine.orchestrator import WorkflowEngine
from plum.errors import Conflict
from plum.ids import new_id
from plum.store.base import Page, Store


class WorkflowView(Model, frozen=True):
    """A workflow on the wire: its current version's definition, flattened."""

    workflow_id: str
    name: str
    version: int
    description: str
    params: dict[str, Any]
    nodes: list[Any]
    edges: list[Any]
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, w: Workflow) -> WorkflowView:
        dag = msgspec.to_builtins(w.spec.dag)
        return cls(workflow_id=w.workflow_id, name=w.name, version=w.version,
                   description=w.description, params=w.spec.params, nodes=dag["nodes"],
                   edges=dag.get("edges", []), created_at=w.created_at, updated_at=w.updated_at)


class WorkflowInput(Model, frozen=True, forbid_unknown_fields=False):
    """The DAG form of a workflow definition (documentation; every form of API.md is read)."""

    name: str
    nodes: list[DagNode]
    edges: list[Edge] = []
    description: str = ""
    params: dict[str, Any] = {}


class RunBody(Model, frozen=True, forbid_unknown_fields=False):
    params: dict[str, Any] = {}


class DagRunBody(Model, frozen=True, forbid_unknown_fields=False):
    """The original's run body: its `taskPayload` becomes the run's params."""

    task_payload: dict[str, Any] = {}


class RunDetail(WorkflowRun, frozen=True):
    nodes: list[NodeRecord] = []


class DagRunStatus(Model, frozen=True):
    run_id: str
    state: RunState
    nodes: dict[str, str]


class WorkflowService:
    def __init__(self, store: Store, engine: WorkflowEngine, clock: Clock):
        self._store = store
        self._engine = engine
        self._clock = clock

    async def _check(self, spec: WorkflowSpec, self_id: str | None = None) -> None:
        ids: set[str] = set()
        names: set[str] = set()
        offset = 0
        while True:
            page = await self._store.list_defs(limit=1000, offset=offset)
            ids.update(d.def_id for d in page.items)
            names.update(d.name for d in page.items)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
        calls = await self._store.subworkflow_calls()
        validate(spec, task_defs=ids, task_names=names, workflows=calls, self_id=self_id)

    async def create(self, body: Any) -> Workflow:
        spec = normalize(body)
        await self._check(spec)
        now = round(self._clock.now(), 3)
        workflow = Workflow(workflow_id=new_id(), name=spec.name, version=1, spec=spec,
                            description=spec.description, created_at=now, updated_at=now)
        await self._store.insert_workflow(workflow)
        return workflow

    async def update(self, workflow_id: str, body: Any) -> Workflow:
        current = await self._store.get_workflow(workflow_id)
        spec = normalize(body)
        await self._check(spec, self_id=workflow_id)
        workflow = msgspec.structs.replace(
            current, name=spec.name, description=spec.description, spec=spec,
            version=current.version + 1, updated_at=round(self._clock.now(), 3))
        await self._store.add_version(workflow)
        return workflow

    async def get(self, workflow_id: str) -> Workflow:
        return await self._store.get_workflow(workflow_id)

    async def require_workflow(self, workflow_id: str) -> None:
        await self._store.get_workflow(workflow_id)

    async def list(self, *, limit: int, offset: int) -> Page[Workflow]:
        return await self._store.list_workflows(limit=limit, offset=offset)

    async def delete(self, workflow_id: str, *, force: bool = False) -> None:
        await self._store.get_workflow(workflow_id)
        active = await self._store.count_active_runs(workflow_id)
        if active and not force:
            raise Conflict(f"{active} runs of this workflow are active; cancel them or use "
                           "?force=true", details={"activeRuns": active})
        await self._store.delete_workflow(workflow_id)

    # -- runs
    async def run(self, workflow_id: str, params: dict[str, Any], *,
                  trigger: str = "manual") -> WorkflowRun:
        workflow = await self._store.get_workflow(workflow_id)
        return await self._engine.start_run(workflow, params, trigger=trigger)

    async def start_run(self, workflow_id: str, params: dict[str, Any], *, trigger: str) -> str:
        """For schedules: start a run and return its id."""
        return (await self.run(workflow_id, params, trigger=trigger)).run_id

    async def list_runs(self, *, workflow_id: str | None, limit: int,
                        offset: int) -> Page[WorkflowRun]:
        return await self._store.list_runs(workflow_id=workflow_id, limit=limit, offset=offset)

    async def get_run(self, run_id: str) -> RunDetail:
        run, nodes = await self._store.run_with_nodes(run_id)
        return RunDetail(**msgspec.structs.asdict(run), nodes=nodes)

    async def cancel_run(self, run_id: str) -> WorkflowRun:
        return await self._engine.cancel_run(run_id)

    async def retry_run(self, run_id: str) -> WorkflowRun:
        return await self._engine.retry_run(run_id)

    async def delete_run(self, run_id: str) -> None:
        if self._engine.get_active(run_id) is not None:
            await self._engine.cancel_run(run_id, "deleted")
        await self._store.delete_run(run_id)

    async def dag_status(self, run_id: str) -> DagRunStatus:
        detail = await self.get_run(run_id)
        return DagRunStatus(run_id=run_id, state=detail.state,
                            nodes={n.node_key: n.state.value for n in detail.nodes})

