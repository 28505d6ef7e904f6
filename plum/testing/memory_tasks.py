"""In-memory task definitions and runs (the `MemoryStore` mixin)."""

from __future__ import annotations

import msgspec

from plum.engine.tasks import ACTIVE, Attempt, TaskDef, TaskFilter, TaskRun
from plum.errors import Conflict, NotFound
from plum.store.base import Page


def _merge_attempt(old: Attempt | None, new: Attempt) -> Attempt:
    if old is None:
        return new
    return msgspec.structs.replace(
        new,
        scheduled_on=new.scheduled_on or old.scheduled_on,
        started_at=new.started_at if new.started_at is not None else old.started_at,
        finished_at=new.finished_at if new.finished_at is not None else old.finished_at,
    )


class MemoryTasks:
    def _init_tasks(self) -> None:
        self._defs: dict[str, TaskDef] = {}
        self._tasks: dict[str, TaskRun] = {}
        self._attempts: dict[str, dict[int, Attempt]] = {}

    async def insert_def(self, task_def: TaskDef) -> None:
        if any(d.name == task_def.name for d in self._defs.values()):
            raise Conflict(f"a task definition named {task_def.name!r} exists", field="name")
        self._defs[task_def.def_id] = task_def

    async def ensure_defs(self, defs: list[TaskDef]) -> None:
        names = {d.name for d in self._defs.values()}
        for d in defs:
            if d.name not in names:
                self._defs[d.def_id] = d

    async def get_def(self, def_id: str) -> TaskDef:
        try:
            return self._defs[def_id]
        except KeyError:
            raise NotFound(f"task definition {def_id!r} not found", field="defId") from None

    async def get_def_by_name(self, name: str) -> TaskDef | None:
        return next((d for d in self._defs.values() if d.name == name), None)

    async def list_defs(self, *, limit: int = 100, offset: int = 0) -> Page[TaskDef]:
        items = list(reversed(self._defs.values()))
        return Page(items[offset : offset + limit], len(items))

    async def delete_def(self, def_id: str, *, force: bool = False) -> None:
        await self.get_def(def_id)
        refs = sum(1 for t in self._tasks.values() if t.def_id == def_id)
        if refs and not force:
            raise Conflict(f"{refs} task runs reference this definition; use ?force=true",
                           details={"referenced": refs})
        del self._defs[def_id]

    async def insert_task(self, task: TaskRun, attempt: Attempt | None = None) -> None:
        if task.task_id in self._tasks:
            raise Conflict(f"task {task.task_id!r} exists")
        await self.save_task(task, attempt)

    async def save_task(self, task: TaskRun, attempt: Attempt | None = None) -> None:
        self._tasks[task.task_id] = task
        if attempt is not None:
            records = self._attempts.setdefault(task.task_id, {})
            records[attempt.attempt] = _merge_attempt(records.get(attempt.attempt), attempt)

    async def get_task(self, task_id: str) -> TaskRun:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise NotFound(f"task {task_id!r} not found", field="taskId") from None

    async def list_tasks(
        self, flt: TaskFilter, *, limit: int = 100, offset: int = 0
    ) -> Page[TaskRun]:
        items = [
            t for t in reversed(self._tasks.values())
            if (flt.state is None or t.state == flt.state)
            and (flt.name is None or t.name == flt.name)
            and (flt.def_id is None or t.def_id == flt.def_id)
            and (flt.workflow_run_id is None or t.workflow_run_id == flt.workflow_run_id)
        ]
        return Page(items[offset : offset + limit], len(items))

    async def list_attempts(self, task_id: str) -> list[Attempt]:
        return [a for _, a in sorted(self._attempts.get(task_id, {}).items())]

    async def delete_task(self, task_id: str) -> None:
        if self._tasks.pop(task_id, None) is None:
            raise NotFound(f"task {task_id!r} not found", field="taskId")
        self._attempts.pop(task_id, None)

    async def active_tasks(self) -> list[TaskRun]:
        return [t for t in self._tasks.values() if t.state in ACTIVE]
