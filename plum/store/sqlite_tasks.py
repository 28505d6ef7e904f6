"""Task definitions, task runs and their attempts."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from plum.engine.tasks import TERMINAL, Attempt, TaskDef, TaskFilter, TaskRun, TaskState
from plum.errors import Conflict, NotFound
from plum.store.base import Page

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def _json(value: Any) -> str:
    return _encode(value).decode()


_DEF_COLUMNS = (
    "def_id, name, executor, target_kind, target_ref, labels, default_payload, timeout_sec, "
    "max_retries, retry_backoff_sec, description, builtin, created_at"
)
_TASK_COLUMNS = (
    "task_id, name, executor, target_kind, target_ref, state, payload, result, error, reason, "
    "timeout_sec, max_retries, retry_backoff_sec, attempt, labels, def_id, origin_task_id, "
    "workflow_run_id, dag_node_id, scheduled_on, created_at, started_at, finished_at, updated_at, "
    "retry_at"
)
_TASK_PLACEHOLDERS = ", ".join("?" * len(_TASK_COLUMNS.split(",")))
_TASK_UPDATE = ", ".join(
    f"{c.strip()} = excluded.{c.strip()}" for c in _TASK_COLUMNS.split(",")[1:]
)


def _def_params(d: TaskDef) -> tuple:
    return (
        d.def_id, d.name, d.executor, d.target_kind, d.target_ref, _json(d.labels),
        _json(d.default_payload), d.timeout_sec, d.max_retries, d.retry_backoff_sec,
        d.description, int(d.builtin), d.created_at,
    )


def _def(row: tuple) -> TaskDef:
    (def_id, name, executor, target_kind, target_ref, labels, payload, timeout_sec, max_retries,
     backoff, description, builtin, created_at) = row
    return TaskDef(
        def_id=def_id, name=name, executor=executor, target_kind=target_kind,
        target_ref=target_ref, labels=_decode(labels), default_payload=_decode(payload),
        timeout_sec=timeout_sec, max_retries=max_retries, retry_backoff_sec=backoff,
        description=description, builtin=bool(builtin), created_at=created_at,
    )


def _task_params(t: TaskRun) -> tuple:
    return (
        t.task_id, t.name, t.executor, t.target_kind, t.target_ref, t.state.value,
        _json(t.payload), _json(t.result), t.error, t.reason, t.timeout_sec, t.max_retries,
        t.retry_backoff_sec, t.attempt, _json(t.labels), t.def_id, t.origin_task_id,
        t.workflow_run_id, t.dag_node_id, t.scheduled_on, t.created_at, t.started_at,
        t.finished_at, t.updated_at, t.retry_at,
    )


def _task(row: tuple) -> TaskRun:
    (task_id, name, executor, target_kind, target_ref, state, payload, result, error, reason,
     timeout_sec, max_retries, backoff, attempt, labels, def_id, origin, run_id, node_id,
     scheduled_on, created_at, started_at, finished_at, updated_at, retry_at) = row
    return TaskRun(
        task_id=task_id, name=name, executor=executor, target_kind=target_kind,
        target_ref=target_ref, state=TaskState(state), payload=_decode(payload),
        result=_decode(result), error=error, reason=reason, timeout_sec=timeout_sec,
        max_retries=max_retries, retry_backoff_sec=backoff, attempt=attempt,
        labels=_decode(labels), def_id=def_id, origin_task_id=origin, workflow_run_id=run_id,
        dag_node_id=node_id, scheduled_on=scheduled_on, created_at=created_at,
        started_at=started_at, finished_at=finished_at, updated_at=updated_at,
        retry_at=retry_at,
    )


_UPSERT_ATTEMPT = (
    "INSERT INTO task_attempts (task_id, attempt, state, error, scheduled_on, started_at, "
    "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(task_id, attempt) DO UPDATE SET "
    "state = excluded.state, error = excluded.error, "
    "scheduled_on = CASE WHEN excluded.scheduled_on != '' THEN excluded.scheduled_on "
    "ELSE scheduled_on END, "
    "started_at = coalesce(excluded.started_at, started_at), "
    "finished_at = coalesce(excluded.finished_at, finished_at)"
)


def _write_attempt(c: sqlite3.Connection, task_id: str, a: Attempt | None) -> None:
    if a is not None:
        c.execute(_UPSERT_ATTEMPT, (task_id, a.attempt, a.state.value, a.error, a.scheduled_on,
                                    a.started_at, a.finished_at))


def _where(flt: TaskFilter) -> tuple[str, list]:
    clauses, params = [], []
    for column, value in (("state", flt.state), ("name", flt.name), ("def_id", flt.def_id),
                          ("workflow_run_id", flt.workflow_run_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value.value if isinstance(value, TaskState) else value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class SqliteTasks:
    # -- task definitions
    async def insert_def(self, task_def: TaskDef) -> None:
        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute(f"INSERT INTO task_defs ({_DEF_COLUMNS}) VALUES "
                          "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _def_params(task_def))
            except sqlite3.IntegrityError:
                raise Conflict(f"a task definition named {task_def.name!r} exists",
                               field="name") from None

        await self._write(insert)

    async def ensure_defs(self, defs: list[TaskDef]) -> None:
        rows = [_def_params(d) for d in defs]
        await self._write(lambda c: c.executemany(
            f"INSERT OR IGNORE INTO task_defs ({_DEF_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows))

    async def get_def(self, def_id: str) -> TaskDef:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_DEF_COLUMNS} FROM task_defs WHERE def_id = ?", (def_id,)).fetchone())
        if row is None:
            raise NotFound(f"task definition {def_id!r} not found", field="defId")
        return _def(row)

    async def get_def_by_name(self, name: str) -> TaskDef | None:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_DEF_COLUMNS} FROM task_defs WHERE name = ?", (name,)).fetchone())
        return _def(row) if row else None

    async def list_defs(self, *, limit: int = 100, offset: int = 0) -> Page[TaskDef]:
        def query(c: sqlite3.Connection) -> Page[TaskDef]:
            rows = c.execute(f"SELECT {_DEF_COLUMNS} FROM task_defs "
                             "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                             (limit, offset)).fetchall()
            total = c.execute("SELECT count(*) FROM task_defs").fetchone()[0]
            return Page([_def(r) for r in rows], total)

        return await self._read(query)

    async def delete_def(self, def_id: str, *, force: bool = False) -> None:
        def delete(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM task_defs WHERE def_id = ?", (def_id,)).fetchone() is None:
                raise NotFound(f"task definition {def_id!r} not found", field="defId")
            refs = c.execute("SELECT count(*) FROM tasks WHERE def_id = ?", (def_id,)).fetchone()[0]
            if refs and not force:
                raise Conflict(f"{refs} task runs reference this definition; use ?force=true",
                               details={"referenced": refs})
            c.execute("DELETE FROM task_defs WHERE def_id = ?", (def_id,))

        await self._write(delete)

    # -- task runs
    async def insert_task(self, task: TaskRun, attempt: Attempt | None = None) -> None:
        params = _task_params(task)

        def insert(c: sqlite3.Connection) -> None:
            c.execute(f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({_TASK_PLACEHOLDERS})", params)
            _write_attempt(c, task.task_id, attempt)

        await self._write(insert)

    async def save_task(self, task: TaskRun, attempt: Attempt | None = None) -> None:
        params = _task_params(task)

        def save(c: sqlite3.Connection) -> None:
            c.execute(f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({_TASK_PLACEHOLDERS}) "
                      f"ON CONFLICT(task_id) DO UPDATE SET {_TASK_UPDATE}", params)
            _write_attempt(c, task.task_id, attempt)

        await self._write(save)

    async def get_task(self, task_id: str) -> TaskRun:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone())
        if row is None:
            raise NotFound(f"task {task_id!r} not found", field="taskId")
        return _task(row)

    async def list_tasks(
        self, flt: TaskFilter, *, limit: int = 100, offset: int = 0
    ) -> Page[TaskRun]:
        where, params = _where(flt)

        def query(c: sqlite3.Connection) -> Page[TaskRun]:
            rows = c.execute(f"SELECT {_TASK_COLUMNS} FROM tasks{where} ORDER BY seq DESC "
                             "LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
            total = c.execute(f"SELECT count(*) FROM tasks{where}", params).fetchone()[0]
            return Page([_task(r) for r in rows], total)

        return await self._read(query)

    async def list_attempts(self, task_id: str) -> list[Attempt]:
        rows = await self._read(lambda c: c.execute(
            "SELECT attempt, state, error, scheduled_on, started_at, finished_at "
            "FROM task_attempts WHERE task_id = ? ORDER BY attempt", (task_id,)).fetchall())
        return [Attempt(attempt=a, state=TaskState(s), error=e, scheduled_on=on, started_at=st,
                        finished_at=fin) for a, s, e, on, st, fin in rows]

    async def delete_task(self, task_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,)).rowcount == 0:
                raise NotFound(f"task {task_id!r} not found", field="taskId")
            c.execute("DELETE FROM task_attempts WHERE task_id = ?", (task_id,))

        await self._write(delete)

    async def active_tasks(self) -> list[TaskRun]:
        placeholders = ", ".join("?" * len(TERMINAL))
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state NOT IN ({placeholders}) "
            "AND state != 'Queued' ORDER BY seq", [s.value for s in TERMINAL]).fetchall())
        return [_task(r) for r in rows]
