"""Task definitions and task runs as users see them: validation, definitions, and the
operations the REST API (and later gRPC) call. The lifecycle itself is the engine's."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from plum.bus import Bus, TaskRemoved
from plum.clock import Clock
from plum.engine.model import Model
from plum.engine.orchestrator import TaskEngine
from plum.engine.tasks import (
    DEFAULT_BACKOFF_SEC,
    DEFAULT_TIMEOUT_SEC,
    Attempt,
    TaskDef,
    TaskFilter,
    TaskRun,
    TaskState,
)
from plum.errors import Forbidden, Invalid
from plum.executors.base import ExecutorKind, TargetKind
from plum.executors.builtin import PREFIX as BUILTIN_PREFIX
from plum.executors.builtin import builtin_defs
from plum.executors.os_process import parse_os_process_payload
from plum.ids import new_id
from plum.store.base import Page, Store
from plum.tasklogs import LogLine

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=100)]


class _Body(Model, frozen=True, forbid_unknown_fields=False):
    """Request bodies: unknown fields are ignored, as API.md says."""


class NewTaskDef(_Body, frozen=True):
    name: Name
    executor: ExecutorKind
    target_kind: TargetKind = TargetKind.NONE
    target_ref: str = ""
    labels: dict[str, str] = {}
    default_payload: dict[str, Any] | None = None
    timeout_sec: Seconds | None = None
    max_retries: Retries = 0
    retry_backoff_sec: Seconds = DEFAULT_BACKOFF_SEC
    description: str = ""


class RunTaskDef(_Body, frozen=True):
    payload: dict[str, Any] | None = None
    timeout_sec: Seconds | None = None
    max_retries: Retries | None = None
    retry_backoff_sec: Seconds | None = None
    labels: dict[str, str] = {}


class NewTask(_Body, frozen=True):
    name: Name
    executor: ExecutorKind
    target_kind: TargetKind = TargetKind.NONE
    target_ref: str = ""
    payload: dict[str, Any] | None = None
    labels: dict[str, str] = {}
    timeout_sec: Seconds | None = None
    max_retries: Retries = 0
    retry_backoff_sec: Seconds = DEFAULT_BACKOFF_SEC
    auto_start: bool = False


class TaskDetail(TaskRun, frozen=True):
    attempts: list[Attempt] = []


class TaskLogView(Model, frozen=True):
    task_id: str
    state: TaskState
    lines: list[LogLine]


def check_target(executor: ExecutorKind, target_kind: TargetKind, target_ref: str) -> None:
    if executor == ExecutorKind.SERVICE and not target_ref:
        raise Invalid("targetRef: the service executor needs the service name in targetRef",
                      field="targetRef")
    if target_kind != TargetKind.NONE and not target_ref:
        raise Invalid(f"targetRef: targetKind {target_kind.value!r} needs a targetRef",
                      field="targetRef")


def check_payload(executor: str, payload: Any) -> None:
    if payload is not None and not isinstance(payload, dict):
        raise Invalid("payload: must be a JSON object", field="payload")
    if executor == ExecutorKind.OS_PROCESS:
        parse_os_process_payload(payload)


def merge_payload(default: Any, given: Any) -> Any:
    if isinstance(default, dict) and isinstance(given, dict):
        return {**default, **given}
    return given if given is not None else default


class TaskService:
    def __init__(self, store: Store, engine: TaskEngine, bus: Bus, clock: Clock):
        self._store = store
        self._engine = engine
        self._bus = bus
        self._clock = clock

    async def install_builtins(self) -> None:
        await self._store.ensure_defs(builtin_defs(self._clock.now()))

    # -- definitions
    async def create_def(self, body: NewTaskDef) -> TaskDef:
        if body.name.startswith(BUILTIN_PREFIX):
            raise Invalid(f"name: names starting with {BUILTIN_PREFIX!r} are reserved",
                          field="name")
        check_target(body.executor, body.target_kind, body.target_ref)
        if body.default_payload is not None and body.executor == ExecutorKind.OS_PROCESS \
                and "command" in body.default_payload:
            _rename_field(parse_os_process_payload, body.default_payload, "defaultPayload")
        task_def = TaskDef(
            def_id=new_id(), name=body.name, executor=body.executor.value,
            target_kind=body.target_kind.value, target_ref=body.target_ref, labels=body.labels,
            default_payload=body.default_payload, timeout_sec=body.timeout_sec,
            max_retries=body.max_retries, retry_backoff_sec=body.retry_backoff_sec,
            description=body.description, created_at=round(self._clock.now(), 3),
        )
        await self._store.insert_def(task_def)
        return task_def

    async def list_defs(self, *, limit: int, offset: int) -> Page[TaskDef]:
        return await self._store.list_defs(limit=limit, offset=offset)

    async def get_def(self, def_id: str) -> TaskDef:
        return await self._store.get_def(def_id)

    async def delete_def(self, def_id: str, *, force: bool) -> None:
        if (await self._store.get_def(def_id)).builtin:
            raise Forbidden("builtin task definitions cannot be deleted")
        await self._store.delete_def(def_id, force=force)

    async def run_def(self, def_id: str, body: RunTaskDef) -> TaskRun:
        d = await self._store.get_def(def_id)
        payload = merge_payload(d.default_payload, body.payload)
        check_payload(d.executor, payload)
        timeout = body.timeout_sec if body.timeout_sec is not None else d.timeout_sec
        task = self._new_run(
            name=d.name, executor=d.executor, target_kind=d.target_kind,
            target_ref=d.target_ref, payload=payload, labels={**d.labels, **body.labels},
            timeout_sec=timeout,
            max_retries=body.max_retries if body.max_retries is not None else d.max_retries,
            retry_backoff_sec=body.retry_backoff_sec if body.retry_backoff_sec is not None
            else d.retry_backoff_sec,
            def_id=d.def_id,
        )
        return await self._engine.submit(task, start=True)

    async def run_named(self, name: str, payload: Any = None) -> TaskRun:
        """Run a task by name (gRPC `ExecuteTask`): through its definition when there is
        one, else as an `embedded` task for a worker serving the name."""
        if not name:
            raise Invalid("name: required", field="name")
        d = await self._store.get_def_by_name(name)
        if d is not None:
            return await self.run_def(d.def_id, RunTaskDef(payload=payload))
        return await self.create_task(
            NewTask(name=name, executor=ExecutorKind.EMBEDDED, payload=payload, auto_start=True)
        )

    # -- runs
    async def create_task(self, body: NewTask) -> TaskRun:
        check_target(body.executor, body.target_kind, body.target_ref)
        check_payload(body.executor, body.payload)
        builtin = await self._store.get_def_by_name(body.name)
        task = self._new_run(
            name=body.name, executor=body.executor.value, target_kind=body.target_kind.value,
            target_ref=body.target_ref, payload=body.payload, labels=body.labels,
            timeout_sec=body.timeout_sec, max_retries=body.max_retries,
            retry_backoff_sec=body.retry_backoff_sec,
            def_id=builtin.def_id if builtin is not None and builtin.builtin else None,
        )
        return await self._engine.submit(task, start=body.auto_start)

    def _new_run(self, *, timeout_sec: float | None, **fields: Any) -> TaskRun:
        now = round(self._clock.now(), 3)
        return TaskRun(
            task_id=new_id(), state=TaskState.QUEUED, created_at=now, updated_at=now,
            timeout_sec=DEFAULT_TIMEOUT_SEC if timeout_sec is None else timeout_sec, **fields,
        )

    async def list_tasks(self, flt: TaskFilter, *, limit: int, offset: int) -> Page[TaskRun]:
        return await self._store.list_tasks(flt, limit=limit, offset=offset)

    async def get_task(self, task_id: str) -> TaskDetail:
        task = self._engine.get_active(task_id) or await self._store.get_task(task_id)
        attempts = await self._store.list_attempts(task_id)
        return TaskDetail(**msgspec.structs.asdict(task), attempts=attempts)

    async def start_task(self, task_id: str) -> TaskRun:
        return await self._engine.start(task_id)

    async def cancel_task(self, task_id: str) -> TaskRun:
        return await self._engine.cancel(task_id)

    async def rerun_task(self, task_id: str) -> TaskRun:
        old = await self._store.get_task(task_id)
        task = self._new_run(
            name=old.name, executor=old.executor, target_kind=old.target_kind,
            target_ref=old.target_ref, payload=old.payload, labels=old.labels,
            timeout_sec=old.timeout_sec, max_retries=old.max_retries,
            retry_backoff_sec=old.retry_backoff_sec, def_id=old.def_id,
            origin_task_id=old.task_id,
        )
        return await self._engine.submit(task, start=True)

    async def delete_task(self, task_id: str) -> None:
        task = self._engine.get_active(task_id) or await self._store.get_task(task_id)
        if not task.terminal and task.state != TaskState.QUEUED:
            await self._engine.cancel(task_id, "deleted")
        await self._store.delete_task(task_id)
        self._engine.logs.discard(task_id)
        self._bus.publish(TaskRemoved(task_id))

    async def task_logs(self, task_id: str) -> TaskLogView:
        task = self._engine.get_active(task_id) or await self._store.get_task(task_id)
        lines = self._engine.logs.lines(task_id)
        if lines is None:
            lines = lines_from_result(task)
        return TaskLogView(task_id=task_id, state=task.state, lines=lines)


def lines_from_result(task: TaskRun) -> list[LogLine]:
    """After the live buffer is gone, the captured output in the result is the record."""
    if not isinstance(task.result, dict):
        return []
    when = task.finished_at or task.updated_at
    return [
        LogLine(stream=stream, text=text, time=when)
        for stream in ("stdout", "stderr")
        if isinstance(task.result.get(stream), str)
        for text in task.result[stream].splitlines()
    ]


def _rename_field(check, payload: Any, prefix: str) -> None:
    try:
        check(payload)
    except Invalid as exc:
        field = (exc.field or "payload").replace("payload", prefix, 1)
        raise Invalid(exc.message.replace("payload", prefix, 1), field=field) from None
