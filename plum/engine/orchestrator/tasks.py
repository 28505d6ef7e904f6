"""The async shell around the pure task lifecycle (`plum.engine.tasks`).

Every event (start, executor started, result, timeout, retry due, cancel, lost executor)
is turned into a transition by a pure function, applied to the in-memory copy of the task
at once (so an event that arrives while the previous one is being stored already sees the
new state), stored through the group-commit writer, published, and only then acted on.
No polling: dispatch happens in the same loop turn as the event that causes it, and
deadlines sit on the injectable clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from plum.bus import Bus, TaskChanged
from plum.clock import Clock, TimerHandle
from plum.engine import tasks as lifecycle
from plum.engine.tasks import (
    ArmRetry,
    ArmTimeout,
    Command,
    Dispatch,
    StopExecution,
    TaskRun,
    TaskState,
    Transition,
)
from plum.errors import InvalidState
from plum.executors.base import (
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    ExecutorKind,
)
from plum.logging import get_logger
from plum.store.base import TaskRepo
from plum.tasklogs import TaskLogs

log = get_logger(__name__)

TaskListener = Callable[[TaskRun], None]
# Offered each task found Running at recovery; True: it still runs elsewhere (on an agent
# that outlived the controller) and the adopter will `adopt()` or `lose()` it.
Adopter = Callable[[TaskRun], bool]
AttemptRun = Callable[[ExecutionContext], Awaitable[ExecutionResult]]


class _Context:
    """What one attempt's executor may tell the engine."""

    __slots__ = ("_attempt", "_engine", "_task_id")

    def __init__(self, engine: TaskEngine, task_id: str, attempt: int):
        self._engine = engine
        self._task_id = task_id
        self._attempt = attempt

    async def mark_running(self, node: str = "") -> None:
        await self._engine._event(lifecycle.mark_running, self._task_id, self._attempt, node=node)

    def set_reason(self, reason: str) -> None:
        self._engine._spawn(
            self._engine._event(lifecycle.set_reason, self._task_id, self._attempt, reason)
        )

    def log(self, stream: str, line: str) -> None:
        self._engine.logs.append(self._task_id, stream, line, self._engine._clock.now())


class TaskEngine:
    def __init__(
        self,
        store: TaskRepo,
        bus: Bus,
        clock: Clock,
        executors: Mapping[str, Executor],
        *,
        logs: TaskLogs | None = None,
        drain_grace: float = 10.0,
    ):
        self._store = store
        self._bus = bus
        self._clock = clock
        self._executors = dict(executors)
        self.logs = logs or TaskLogs()
        self._grace = drain_grace
        self._active: dict[str, TaskRun] = {}
        self._executing: dict[str, tuple[int, asyncio.Task]] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._listeners: list[TaskListener] = []
        self._adopters: list[Adopter] = []
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = False

    # -- lifecycle of the engine itself
    @asynccontextmanager
    async def running(self) -> AsyncIterator[TaskEngine]:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            await self._recover()
            try:
                yield self
            finally:
                await self._drain()

    async def _recover(self) -> None:
        """Carry on after a restart: lost Running attempts are retried or failed, Pending
        ones are dispatched again."""
        now = self._clock.now()
        for task in await self._store.active_tasks():
            self._active[task.task_id] = task
            if task.state == TaskState.RUNNING and any(a(task) for a in self._adopters):
                log.info("task_awaiting_adoption", task_id=task.task_id, attempt=task.attempt,
                         node=task.scheduled_on)
                if task.timeout_sec > 0:
                    started = task.started_at if task.started_at is not None else now
                    at = max(now, started + task.timeout_sec)
                    self._carry_out(ArmTimeout(task.task_id, task.attempt, at))
                continue
            if task.state == TaskState.RUNNING:
                transition = lifecycle.lost(task, now, "controller restarted")
            else:
                transition = lifecycle.resume(task, now)
            log.info("task_recovered", task_id=task.task_id, state=task.state.value,
                     attempt=task.attempt)
            await self._apply(transition)

    async def _drain(self) -> None:
        self._stopping = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        running = [entry[1] for entry in self._executing.values()]
        if running:
            log.info("tasks_draining", count=len(running), grace=self._grace)
            _, pending = await asyncio.wait(running, timeout=self._grace)
            for task in pending:
                task.cancel()

    def add_listener(self, listener: TaskListener) -> None:
        """Called (synchronously) with every task that reaches a terminal state."""
        self._listeners.append(listener)

    def add_adopter(self, adopter: Adopter) -> None:
        """Before `running()`: see `Adopter`."""
        self._adopters.append(adopter)

    def adopt(self, task_id: str, attempt: int, run: AttemptRun) -> bool:
        """Carry on an attempt that outlived the controller: `run` awaits its result, and
        is cancelled on a timeout or a cancel like any execution. False when the engine no
        longer wants that attempt (the caller should stop it)."""
        task = self._active.get(task_id)
        if (task is None or task.attempt != attempt or task.state != TaskState.RUNNING
                or task_id in self._executing or self._tg is None or self._stopping):
            return False
        runner = self._tg.create_task(self._execute(task, attempt, run), name=f"task-{task_id}")
        self._executing[task_id] = (attempt, runner)
        return True

    # -- service methods
    async def submit(self, task: TaskRun, *, start: bool) -> TaskRun:
        """Store a new task (Queued), and start it at once when asked."""
        if not start:
            await self._store.insert_task(task)
            self._bus.publish(TaskChanged(task))
            return task
        transition = lifecycle.start(task, self._clock.now())
        self._active[task.task_id] = transition.task
        await self._store.insert_task(transition.task, transition.attempt)
        return await self._publish_and_act(transition)

    async def start(self, task_id: str) -> TaskRun:
        if task_id in self._active:
            raise InvalidState("the task has already been started")
        task = await self._store.get_task(task_id)
        if task_id in self._active:
            raise InvalidState("the task has already been started")
        return await self._apply(lifecycle.start(task, self._clock.now()))

    async def cancel(self, task_id: str, reason: str = "canceled") -> TaskRun:
        task = self._active.get(task_id) or await self._store.get_task(task_id)
        if task.terminal:
            raise InvalidState(f"the task has already ended ({task.state.value})")
        return await self._apply(lifecycle.cancel(task, self._clock.now(), reason)) or task

    async def lose(self, task_id: str, attempt: int, reason: str) -> None:
        """The executor of this attempt is gone (agent or worker lost)."""
        task = self._active.get(task_id)
        if task is not None and task.attempt == attempt:
            await self._apply(lifecycle.lost(task, self._clock.now(), reason))

    async def report(self, task_id: str, attempt: int, result: ExecutionResult) -> None:
        """A result from outside this process (agent, worker); stale attempts are ignored."""
        await self._event(lifecycle.finish, task_id, attempt, result.ok, result.result,
                          result.error)

    def get_active(self, task_id: str) -> TaskRun | None:
        return self._active.get(task_id)

    # -- the core: event -> transition -> store -> publish -> act
    async def _event(self, fn: Callable[..., Transition | None], task_id: str, *args: Any,
                     **kwargs: Any) -> TaskRun | None:
        task = self._active.get(task_id)
        if task is None:
            return None
        return await self._apply(fn(task, *args, self._clock.now(), **kwargs))

    async def _apply(self, transition: Transition | None) -> TaskRun | None:
        if transition is None:
            return None
        task = transition.task
        if task.terminal:
            self._active.pop(task.task_id, None)
        else:
            self._active[task.task_id] = task
        await self._store.save_task(task, transition.attempt)
        return await self._publish_and_act(transition)

    async def _publish_and_act(self, transition: Transition) -> TaskRun:
        task = transition.task
        self._bus.publish(TaskChanged(task))
        for command in transition.commands:
            self._carry_out(command)
        if task.terminal:
            self._ended(task)
        return task

    def _carry_out(self, command: Command) -> None:
        match command:
            case Dispatch(task_id, attempt):
                self._dispatch(task_id, attempt)
            case ArmTimeout(task_id, attempt, at):
                self._arm(task_id, at, self._event, lifecycle.time_out, task_id, attempt)
            case ArmRetry(task_id, attempt, at):
                self._arm(task_id, at, self._event, lifecycle.retry_due, task_id, attempt)
            case StopExecution(task_id, attempt):
                entry = self._executing.get(task_id)
                if entry is not None and entry[0] == attempt:
                    entry[1].cancel()

    def _arm(self, task_id: str, at: float, handler, *args: Any) -> None:
        previous = self._timers.pop(task_id, None)
        if previous is not None:
            previous.cancel()
        if self._stopping:
            return
        self._timers[task_id] = self._clock.call_at(
            at, lambda: self._spawn(handler(*args))
        )

    def _ended(self, task: TaskRun) -> None:
        timer = self._timers.pop(task.task_id, None)
        if timer is not None:
            timer.cancel()
        self.logs.close(task.task_id)
        for listener in self._listeners:
            listener(task)

    def _spawn(self, coro) -> None:
        if self._tg is None or self._stopping:
            coro.close()
            return
        self._tg.create_task(_logged(coro))

    # -- execution of one attempt
    def _dispatch(self, task_id: str, attempt: int) -> None:
        task = self._active.get(task_id)
        if task is None or task.attempt != attempt or task.state != TaskState.PENDING:
            return
        if self._tg is None or self._stopping:
            return
        runner = self._tg.create_task(self._execute(task, attempt), name=f"task-{task_id}")
        self._executing[task_id] = (attempt, runner)

    async def _execute(self, task: TaskRun, attempt: int, run: AttemptRun | None = None) -> None:
        executor = self._executors.get(task.executor)
        request = ExecutionRequest(
            task_id=task.task_id, attempt=attempt, name=task.name,
            executor=ExecutorKind(task.executor), payload=task.payload,
            target_kind=task.target_kind, target_ref=task.target_ref, labels=task.labels,
            timeout_sec=task.timeout_sec,
        )
        try:
            if run is not None:
                result = await run(_Context(self, task.task_id, attempt))
            elif executor is None:
                result = ExecutionResult.failure(f"no {task.executor} executor on this node")
            else:
                result = await executor.run(request, _Context(self, task.task_id, attempt))
        except asyncio.CancelledError:
            if self._stopping:
                raise
            return  # canceled or timed out: the transition is already recorded
        except Exception as exc:
            log.exception("executor_failed", task_id=task.task_id, executor=task.executor)
            result = ExecutionResult.failure(f"executor error: {exc}")
        finally:
            entry = self._executing.get(task.task_id)
            if entry is not None and entry[0] == attempt:
                del self._executing[task.task_id]
        await _logged(self._event(lifecycle.finish, task.task_id, attempt, result.ok,
                                  result.result, result.error))


async def _logged(coro) -> None:
    """Run an event handler in the background; a failure (the store refusing a write) is
    logged, and does not take the engine down with it."""
    try:
        await coro
    except Exception:
        log.exception("task_event_failed")
