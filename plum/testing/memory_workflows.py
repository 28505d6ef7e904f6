"""In-memory workflows and runs (the `MemoryStore` mixin)."""

from __future__ import annotations

import msgspec

from plum.engine.dag import Workflow, WorkflowSpec
from plum.engine.machine import RUN_TERMINAL, NodeRecord, WorkflowRun
from plum.errors import Conflict, NotFound
from plum.store.base import Page
from plum.store.sqlite_workflows import _calls


class MemoryWorkflows:
    def _init_workflows(self) -> None:
        self._workflows: dict[str, Workflow] = {}
        self._versions: dict[tuple[str, int], WorkflowSpec] = {}
        self._runs: dict[str, WorkflowRun] = {}
        self._run_nodes: dict[str, dict[str, NodeRecord]] = {}

    def _name_taken(self, workflow: Workflow) -> bool:
        return any(w.name == workflow.name and w.workflow_id != workflow.workflow_id
                   for w in self._workflows.values())

    async def insert_workflow(self, workflow: Workflow) -> None:
        if self._name_taken(workflow):
            raise Conflict(f"a workflow named {workflow.name!r} exists", field="name")
        self._workflows[workflow.workflow_id] = workflow
        self._versions[(workflow.workflow_id, workflow.version)] = workflow.spec

    async def add_version(self, workflow: Workflow) -> None:
        old = await self.get_workflow(workflow.workflow_id)
        if self._name_taken(workflow):
            raise Conflict(f"a workflow named {workflow.name!r} exists", field="name")
        self._workflows[workflow.workflow_id] = msgspec.structs.replace(
            workflow, created_at=old.created_at)
        self._versions[(workflow.workflow_id, workflow.version)] = workflow.spec

    async def get_workflow(self, workflow_id: str) -> Workflow:
        try:
            return self._workflows[workflow_id]
        except KeyError:
            raise NotFound(f"workflow {workflow_id!r} not found", field="workflowId") from None

    async def get_version(self, workflow_id: str, version: int) -> WorkflowSpec:
        try:
            return self._versions[(workflow_id, version)]
        except KeyError:
            raise NotFound(f"workflow {workflow_id!r} has no version {version}",
                           field="workflowId") from None

    async def list_workflows(self, *, limit: int = 100, offset: int = 0) -> Page[Workflow]:
        items = list(reversed(self._workflows.values()))
        return Page(items[offset : offset + limit], len(items))

    async def delete_workflow(self, workflow_id: str) -> None:
        if self._workflows.pop(workflow_id, None) is None:
            raise NotFound(f"workflow {workflow_id!r} not found", field="workflowId")

    async def subworkflow_calls(self) -> dict[str, set[str]]:
        return {w.workflow_id: _calls(w.spec) for w in self._workflows.values()}

    async def save_run(self, run_id: str, run: WorkflowRun | None, nodes: list[NodeRecord],
                       dropped: list[str] | None = None) -> None:
        if run is not None:
            self._runs[run_id] = run
        records = self._run_nodes.setdefault(run_id, {})
        for key in dropped or ():
            records.pop(key, None)
        for record in nodes:
            records[record.node_key] = record

    async def get_run(self, run_id: str) -> WorkflowRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFound(f"workflow run {run_id!r} not found", field="runId") from None

    async def list_runs(self, *, workflow_id: str | None = None, limit: int = 100,
                        offset: int = 0) -> Page[WorkflowRun]:
        items = [r for r in reversed(self._runs.values())
                 if workflow_id is None or r.workflow_id == workflow_id]
        return Page(items[offset : offset + limit], len(items))

    async def run_nodes(self, run_id: str) -> list[NodeRecord]:
        return list(self._run_nodes.get(run_id, {}).values())

    async def run_with_nodes(self, run_id: str) -> tuple[WorkflowRun, list[NodeRecord]]:
        return await self.get_run(run_id), await self.run_nodes(run_id)

    async def active_runs(self) -> list[WorkflowRun]:
        return [r for r in self._runs.values() if r.state not in RUN_TERMINAL]

    async def count_active_runs(self, workflow_id: str) -> int:
        return sum(1 for r in await self.active_runs() if r.workflow_id == workflow_id)

    async def delete_run(self, run_id: str) -> None:
        if self._runs.pop(run_id, None) is None:
            raise NotFound(f"workflow run {run_id!r} not found", field="runId")
        self._run_nodes.pop(run_id, None)
