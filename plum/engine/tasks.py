"""The task lifecycle, as pure functions: a task and an event in, a transition out.

    Queued -> Pending -> Running -> Succeeded | Failed | Timeout | Canceled
                 ^---------'  (a failed or timed-out attempt with retries left)

No I/O, no clock reads: `now` is passed in. The orchestrator persists each transition,
then carries out its commands. Every event names the attempt it is about; an event for an
attempt other than the current one is stale and changes nothing (fencing), so a late or
duplicate result can never overwrite a newer state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from plum.engine.model import Model
from plum.errors import InvalidState

DEFAULT_TIMEOUT_SEC = 300.0
DEFAULT_BACKOFF_SEC = 1.0
MAX_BACKOFF_SEC = 300.0


class TaskState(StrEnum):
    QUEUED = "Queued"
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMEOUT = "Timeout"
    CANCELED = "Canceled"


TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.TIMEOUT, TaskState.CANCELED})
ACTIVE = frozenset({TaskState.PENDING, TaskState.RUNNING})

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.PENDING, TaskState.CANCELED}),
    TaskState.PENDING: frozenset(
        {TaskState.RUNNING, TaskState.FAILED, TaskState.TIMEOUT, TaskState.CANCELED}
    ),
    TaskState.RUNNING: frozenset(
        {TaskState.PENDING, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.TIMEOUT,
         TaskState.CANCELED}
    ),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.TIMEOUT: frozenset(),
    TaskState.CANCELED: frozenset(),
}


def check_transition(src: TaskState, dst: TaskState) -> None:
    if dst not in TRANSITIONS[src]:
        raise InvalidState(f"a {src.value} task cannot become {dst.value}")


class TaskRun(Model, frozen=True):
    task_id: str
    name: str
    executor: str
    state: TaskState
    target_kind: str = ""
    target_ref: str = ""
    payload: Any = None
    result: Any = None
    error: str | None = None
    reason: str = ""
    timeout_sec: float = DEFAULT_TIMEOUT_SEC
    max_retries: int = 0
    retry_backoff_sec: float = DEFAULT_BACKOFF_SEC
    attempt: int = 0
    labels: dict[str, str] = {}
    def_id: str | None = None
    origin_task_id: str | None = None
    workflow_run_id: str | None = None
    dag_node_id: str | None = None
    scheduled_on: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    retry_at: float | None = None  # a retry's backoff ends then (kept across restarts)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class Attempt(Model, frozen=True):
    attempt: int
    state: TaskState
    error: str | None = None
    scheduled_on: str = ""
    started_at: float | None = None
    finished_at: float | None = None


# Commands: what the orchestrator must do once the transition is stored.
@dataclass(frozen=True, slots=True)
class Dispatch:
    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ArmTimeout:
    task_id: str
    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class ArmRetry:
    task_id: str
    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class StopExecution:
    task_id: str
    attempt: int


Command = Dispatch | ArmTimeout | ArmRetry | StopExecution


@dataclass(frozen=True, slots=True)
class Transition:
    task: TaskRun
    attempt: Attempt | None = None
    commands: tuple[Command, ...] = field(default=())


def _ms(t: float) -> float:
    return round(t, 3)


def _replace(task: TaskRun, now: float, **changes: Any) -> TaskRun:
    if "state" in changes:
        check_transition(task.state, changes["state"])
    return msgspec.structs.replace(task, updated_at=_ms(now), **changes)


def backoff_delay(base: float, failed_attempt: int) -> float:
    """Exponential: base, 2*base, 4*base, ... capped at MAX_BACKOFF_SEC."""
    return min(base * 2 ** max(0, failed_attempt - 1), MAX_BACKOFF_SEC)


def _begin_attempt(task: TaskRun, attempt: int, now: float, **changes: Any) -> Transition:
    task = _replace(task, now, state=TaskState.PENDING, attempt=attempt, **changes)
    commands: list[Command] = [Dispatch(task.task_id, attempt)]
    if task.timeout_sec > 0:
        commands.append(ArmTimeout(task.task_id, attempt, now + task.timeout_sec))
    record = Attempt(attempt=attempt, state=TaskState.PENDING)
    return Transition(task, record, tuple(commands))


def start(task: TaskRun, now: float) -> Transition:
    """A queued task is started (or created with autoStart): attempt 1 is dispatched."""
    if task.state != TaskState.QUEUED:
        raise InvalidState(f"only a Queued task can be started; this one is {task.state.value}")
    return _begin_attempt(task, 1, now, reason="", error=None)


def _dispatch(task: TaskRun, now: float) -> Transition:
    """The current attempt goes out now, with its deadline."""
    commands: list[Command] = [Dispatch(task.task_id, task.attempt)]
    if task.timeout_sec > 0:
        commands.append(ArmTimeout(task.task_id, task.attempt, now + task.timeout_sec))
    return Transition(task, None, tuple(commands))


def resume(task: TaskRun, now: float) -> Transition:
    """After a controller restart: a Pending attempt still waiting out a retry's backoff
    waits the rest of it; any other Pending attempt is dispatched again."""
    if task.retry_at is not None and task.retry_at > now:
        return Transition(task, None, (ArmRetry(task.task_id, task.attempt, task.retry_at),))
    return _dispatch(task, now)


def mark_running(task: TaskRun, attempt: int, now: float, node: str = "") -> Transition | None:
    if task.attempt != attempt or task.state != TaskState.PENDING:
        return None
    started = task.started_at if task.started_at is not None else _ms(now)
    task = _replace(task, now, state=TaskState.RUNNING, started_at=started, reason="",
                    scheduled_on=node or task.scheduled_on)
    record = Attempt(attempt=attempt, state=TaskState.RUNNING, scheduled_on=task.scheduled_on,
                     started_at=_ms(now))
    return Transition(task, record)


def set_reason(task: TaskRun, attempt: int, reason: str, now: float) -> Transition | None:
    if task.attempt != attempt or task.state != TaskState.PENDING or task.reason == reason:
        return None
    return Transition(_replace(task, now, reason=reason))


def finish(
    task: TaskRun, attempt: int, ok: bool, result: Any, error: str | None, now: float
) -> Transition | None:
    """An attempt's outcome. Stale attempts and finished tasks are ignored (None)."""
    if task.attempt != attempt or task.state not in ACTIVE:
        return None
    if ok:
        return _end(task, attempt, TaskState.SUCCEEDED, now, result=result, error=None)
    return _failed(task, attempt, TaskState.FAILED, error or "failed", now, result=result)


def time_out(task: TaskRun, attempt: int, now: float) -> Transition | None:
    if task.attempt != attempt or task.state not in ACTIVE:
        return None
    limit = f"{task.timeout_sec:g}"
    transition = _failed(task, attempt, TaskState.TIMEOUT, f"timed out after {limit}s", now)
    stop = StopExecution(task.task_id, attempt)
    return Transition(transition.task, transition.attempt, (stop, *transition.commands))


def cancel(task: TaskRun, now: float, reason: str = "canceled") -> Transition | None:
    if task.terminal:
        return None
    commands = (StopExecution(task.task_id, task.attempt),) if task.state in ACTIVE else ()
    ended = _end(task, task.attempt, TaskState.CANCELED, now, error=reason)
    return Transition(ended.task, ended.attempt if task.attempt else None, commands)


def lost(task: TaskRun, now: float, reason: str) -> Transition | None:
    """The executor was lost (controller restart, agent or worker gone): retry or fail."""
    if task.state not in ACTIVE:
        return None
    return _failed(task, task.attempt, TaskState.FAILED, reason, now)


def retry_due(task: TaskRun, attempt: int, now: float) -> Transition | None:
    """The backoff of a retry ran out: dispatch that attempt."""
    if task.attempt != attempt or task.state != TaskState.PENDING:
        return None
    return _dispatch(msgspec.structs.replace(task, reason="", retry_at=None), now)


def _failed(
    task: TaskRun, attempt: int, state: TaskState, error: str, now: float, result: Any = None
) -> Transition:
    if attempt <= task.max_retries:
        delay = backoff_delay(task.retry_backoff_sec, attempt)
        record = Attempt(attempt=attempt, state=state, error=error,
                         scheduled_on=task.scheduled_on, finished_at=_ms(now))
        nxt = attempt + 1
        changes: dict[str, Any] = {
            "attempt": nxt, "error": error, "result": result, "retry_at": _ms(now + delay),
            "reason": f"retry {attempt} of {task.max_retries} in {delay:g}s after: {error}",
        }
        if task.state != TaskState.PENDING:
            changes["state"] = TaskState.PENDING
        retried = _replace(task, now, **changes)
        return Transition(retried, record, (ArmRetry(task.task_id, nxt, now + delay),))
    return _end(task, attempt, state, now, error=error, result=result)


def _end(task: TaskRun, attempt: int, state: TaskState, now: float, **changes: Any) -> Transition:
    ended = _replace(task, now, state=state, finished_at=_ms(now), reason="", **changes)
    record = Attempt(attempt=attempt, state=state, error=ended.error,
                     scheduled_on=task.scheduled_on, finished_at=_ms(now))
    return Transition(ended, record)


class TaskDef(Model, frozen=True):
    def_id: str
    name: str
    executor: str
    target_kind: str = ""
    target_ref: str = ""
    labels: dict[str, str] = {}
    default_payload: Any = None
    timeout_sec: float | None = None
    max_retries: int = 0
    retry_backoff_sec: float = DEFAULT_BACKOFF_SEC
    description: str = ""
    builtin: bool = False
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskFilter:
    state: TaskState | None = None
    name: str | None = None
    def_id: str | None = None
    workflow_run_id: str | None = None
