"""Workflows with their versions, workflow runs and the records of their nodes."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from plum.engine.dag import Workflow, WorkflowSpec
from plum.engine.machine import RUN_TERMINAL, NodeRecord, RunState, WorkflowRun
from plum.errors import Conflict, NotFound
from plum.store.base import Page

_spec_decoder = msgspec.json.Decoder(WorkflowSpec)
_node_decoder = msgspec.json.Decoder(NodeRecord)
_encode = msgspec.json.encode


def _json(value: Any) -> str:
    return _encode(value).decode()


_RUN_COLUMNS = (
    "run_id, workflow_id, workflow_name, version, state, params, result, error, trigger, "
    "parent_run_id, parent_node_key, created_at, started_at, finished_at, updated_at"
)
_RUN_UPDATE = ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _RUN_COLUMNS.split(",")[1:])
_WF_SELECT = (
    "SELECT w.workflow_id, w.name, w.description, w.version, v.spec, w.created_at, "
    "w.updated_at FROM workflows w JOIN workflow_versions v "
    "ON v.workflow_id = w.workflow_id AND v.version = w.version"
)


def _workflow(row: tuple) -> Workflow:
    workflow_id, name, description, version, spec, created_at, updated_at = row
    return Workflow(workflow_id=workflow_id, name=name, description=description,
                    version=version, spec=_spec_decoder.decode(spec), created_at=created_at,
                    updated_at=updated_at)


def _run_params(r: WorkflowRun) -> tuple:
    return (r.run_id, r.workflow_id, r.workflow_name, r.version, r.state.value, _json(r.params),
            _json(r.result), r.error, r.trigger, r.parent_run_id, r.parent_node_key,
            r.created_at, r.started_at, r.finished_at, r.updated_at)


def _run(row: tuple) -> WorkflowRun:
    (run_id, workflow_id, name, version, state, params, result, error, trigger, parent,
     parent_key, created_at, started_at, finished_at, updated_at) = row
    return WorkflowRun(run_id=run_id, workflow_id=workflow_id, workflow_name=name,
                       version=version, state=RunState(state), params=msgspec.json.decode(params),
                       result=msgspec.json.decode(result), error=error, trigger=trigger,
                       parent_run_id=parent, parent_node_key=parent_key, created_at=created_at,
                       started_at=started_at, finished_at=finished_at, updated_at=updated_at)


def _calls(spec: WorkflowSpec) -> set[str]:
    found: set[str] = set()
    stack = [spec.dag]
    while stack:
        dag = stack.pop()
        for node in dag.nodes:
            if node.workflow_id:
                found.add(node.workflow_id)
            if node.body is not None:
                stack.append(node.body)
    return found


class SqliteWorkflows:
    async def insert_workflow(self, workflow: Workflow) -> None:
        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute("INSERT INTO workflows (workflow_id, name, description, version, "
                          "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                          (workflow.workflow_id, workflow.name, workflow.description,
                           workflow.version, workflow.created_at, workflow.updated_at))
            except sqlite3.IntegrityError:
                raise Conflict(f"a workflow named {workflow.name!r} exists",
                               field="name") from None
            c.execute("INSERT INTO workflow_versions VALUES (?, ?, ?, ?)",
                      (workflow.workflow_id, workflow.version, _json(workflow.spec),
                       workflow.updated_at))

        await self._write(insert)

    async def add_version(self, workflow: Workflow) -> None:
        def add(c: sqlite3.Connection) -> None:
            try:
                updated = c.execute(
                    "UPDATE workflows SET name = ?, description = ?, version = ?, updated_at = ? "
                    "WHERE workflow_id = ?", (workflow.name, workflow.description,
                                              workflow.version, workflow.updated_at,
                                              workflow.workflow_id)).rowcount
            except sqlite3.IntegrityError:
                raise Conflict(f"a workflow named {workflow.name!r} exists",
                               field="name") from None
            if not updated:
                raise NotFound(f"workflow {workflow.workflow_id!r} not found",
                               field="workflowId")
            c.execute("INSERT INTO workflow_versions VALUES (?, ?, ?, ?)",
                      (workflow.workflow_id, workflow.version, _json(workflow.spec),
                       workflow.updated_at))

        await self._write(add)

    async def get_workflow(self, workflow_id: str) -> Workflow:
        row = await self._read(lambda c: c.execute(
            f"{_WF_SELECT} WHERE w.workflow_id = ?", (workflow_id,)).fetchone())
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found", field="workflowId")
        return _workflow(row)

    async def get_version(self, workflow_id: str, version: int) -> WorkflowSpec:
        row = await self._read(lambda c: c.execute(
            "SELECT spec FROM workflow_versions WHERE workflow_id = ? AND version = ?",
            (workflow_id, version)).fetchone())
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} has no version {version}",
                           field="workflowId")
        return _spec_decoder.decode(row[0])

    async def list_workflows(self, *, limit: int = 100, offset: int = 0) -> Page[Workflow]:
        def query(c: sqlite3.Connection) -> Page[Workflow]:
            rows = c.execute(f"{_WF_SELECT} ORDER BY w.created_at DESC, w.rowid DESC "
                             "LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            return Page([_workflow(r) for r in rows],
                        c.execute("SELECT count(*) FROM workflows").fetchone()[0])

        return await self._read(query)

    async def delete_workflow(self, workflow_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            if not c.execute("DELETE FROM workflows WHERE workflow_id = ?",
                             (workflow_id,)).rowcount:
                raise NotFound(f"workflow {workflow_id!r} not found", field="workflowId")

        await self._write(delete)

    async def subworkflow_calls(self) -> dict[str, set[str]]:
        rows = await self._read(lambda c: c.execute(
            "SELECT w.workflow_id, v.spec FROM workflows w JOIN workflow_versions v "
            "ON v.workflow_id = w.workflow_id AND v.version = w.version").fetchall())
        return {wid: _calls(_spec_decoder.decode(spec)) for wid, spec in rows}

    # -- runs
    async def save_run(self, run_id: str, run: WorkflowRun | None, nodes: list[NodeRecord],
                       dropped: list[str] | None = None) -> None:
        run_row = _run_params(run) if run is not None else None
        node_rows = [(run_id, n.node_key, n.node_id, n.state.value, _json(n), run.updated_at
                      if run is not None else (n.finished_at or n.started_at or 0.0))
                     for n in nodes]

        gone = [(run_id, key) for key in dropped or ()]

        def save(c: sqlite3.Connection) -> None:
            if gone:
                c.executemany("DELETE FROM run_nodes WHERE run_id = ? AND node_key = ?", gone)
            if run_row is not None:
                c.execute(f"INSERT INTO workflow_runs ({_RUN_COLUMNS}) VALUES "
                          f"({', '.join('?' * 15)}) ON CONFLICT(run_id) DO UPDATE SET "
                          f"{_RUN_UPDATE}", run_row)
            if node_rows:
                c.executemany(
                    "INSERT INTO run_nodes (run_id, node_key, node_id, state, data, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, node_key) DO UPDATE SET "
                    "state = excluded.state, data = excluded.data, "
                    "updated_at = excluded.updated_at", node_rows)

        await self._write(save)

    async def get_run(self, run_id: str) -> WorkflowRun:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_RUN_COLUMNS} FROM workflow_runs WHERE run_id = ?", (run_id,)).fetchone())
        if row is None:
            raise NotFound(f"workflow run {run_id!r} not found", field="runId")
        return _run(row)

    async def list_runs(self, *, workflow_id: str | None = None, limit: int = 100,
                        offset: int = 0) -> Page[WorkflowRun]:
        where, params = ("WHERE workflow_id = ?", [workflow_id]) if workflow_id else ("", [])

        def query(c: sqlite3.Connection) -> Page[WorkflowRun]:
            rows = c.execute(f"SELECT {_RUN_COLUMNS} FROM workflow_runs {where} "
                             "ORDER BY seq DESC LIMIT ? OFFSET ?",
                             (*params, limit, offset)).fetchall()
            total = c.execute(f"SELECT count(*) FROM workflow_runs {where}", params).fetchone()
            return Page([_run(r) for r in rows], total[0])

        return await self._read(query)

    async def run_nodes(self, run_id: str) -> list[NodeRecord]:
        rows = await self._read(lambda c: c.execute(
            "SELECT data FROM run_nodes WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall())
        return [_node_decoder.decode(r[0]) for r in rows]

    async def run_with_nodes(self, run_id: str) -> tuple[WorkflowRun, list[NodeRecord]]:
        def query(c: sqlite3.Connection) -> tuple[tuple | None, list]:
            c.execute("BEGIN")  # one snapshot: the run and its nodes from the same commit
            try:
                row = c.execute(f"SELECT {_RUN_COLUMNS} FROM workflow_runs WHERE run_id = ?",
                                (run_id,)).fetchone()
                nodes = c.execute("SELECT data FROM run_nodes WHERE run_id = ? ORDER BY rowid",
                                  (run_id,)).fetchall()
            finally:
                c.execute("COMMIT")
            return row, nodes

        row, nodes = await self._read(query)
        if row is None:
            raise NotFound(f"workflow run {run_id!r} not found", field="runId")
        return _run(row), [_node_decoder.decode(n[0]) for n in nodes]

    async def active_runs(self) -> list[WorkflowRun]:
        terminal = [s.value for s in RUN_TERMINAL]
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_RUN_COLUMNS} FROM workflow_runs WHERE state NOT IN (?, ?, ?) "
            "ORDER BY seq", terminal).fetchall())
        return [_run(r) for r in rows]

    async def count_active_runs(self, workflow_id: str) -> int:
        terminal = [s.value for s in RUN_TERMINAL]
        row = await self._read(lambda c: c.execute(
            "SELECT count(*) FROM workflow_runs WHERE workflow_id = ? AND state NOT IN (?, ?, ?)",
            (workflow_id, *terminal)).fetchone())
        return row[0]

    async def delete_run(self, run_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            if not c.execute("DELETE FROM workflow_runs WHERE run_id = ?", (run_id,)).rowcount:
                raise NotFound(f"workflow run {run_id!r} not found", field="runId")
            c.execute("DELETE FROM run_nodes WHERE run_id = ?", (run_id,))

        await self._write(delete)
