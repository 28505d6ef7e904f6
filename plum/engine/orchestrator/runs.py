"""The async shell around workflow run state machines (`plum.engine.machine`).

An event (run started, a node's task finished, a child run finished, cancel, retry) goes
to the run's machine; the commands that come back are stored (node records and run state
in one write, the tasks they start in the same group-commit batch), published, then
carried out. A task's end reaches its run through the task engine's listener in the same
loop turn, so a hop from one node to the next costs about one commit, not a poll.

On start every non-terminal run is rebuilt from its stored node records; nodes whose task
ended while the controller was down are told so, tasks that were never created are
created, and the rest report through the task engine as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from plum.bus import Bus, RunNodeChanged, RunUpdated
from plum.clock import Clock
from plum.engine.dag import DagNode, Workflow
from plum.engine.machine import (
    Cancel,
    CancelChild,
    CancelTask,
    ChildDone,
    Command,
    Event,
    NodeChanged,
    NodeRecord,
    NodesDropped,
    RetryFailed,
    RunChanged,
    RunMachine,
    RunState,
    Start,
    StartChild,
    StartTask,
    TaskDone,
    WorkflowRun,
)
from plum.engine.orchestrator.tasks import TaskEngine
from plum.engine.rules import NodeState
from plum.engine.tasks import (
    DEFAULT_BACKOFF_SEC,
    DEFAULT_TIMEOUT_SEC,
    TaskDef,
    TaskRun,
    TaskState,
)
from plum.errors import InvalidState, NotFound
from plum.executors.base import ExecutorKind
from plum.ids import new_id
from plum.logging import get_logger
from plum.store.base import Store

log = get_logger(__name__)


class WorkflowEngine:
    def __init__(self, store: Store, bus: Bus, clock: Clock, tasks: TaskEngine):
        self._store = store
        self._bus = bus
        self._clock = clock
        self._tasks = tasks
        self._machines: dict[str, RunMachine] = {}
        self._runs: dict[str, WorkflowRun] = {}
        self._defs: dict[str, dict[str, TaskDef | None]] = {}
        self._task_ends: dict[str, list[TaskDone]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = False
        tasks.add_listener(self._on_task_end)

    # -- lifecycle
    @asynccontextmanager
    async def running(self) -> AsyncIterator[WorkflowEngine]:
        """Rebuilds active runs at once; call `reconcile()` once the task engine runs."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for run in await self._store.active_runs():
                await self._load(run)
            try:
                yield self
            finally:
                self._stopping = True

    async def _load(self, run: WorkflowRun) -> RunMachine:
        spec = await self._store.get_version(run.workflow_id, run.version)
        records = await self._store.run_nodes(run.run_id)
        machine = RunMachine.restore(run.run_id, spec, run.params, run.state, records)
        self._machines[run.run_id] = machine
        self._runs[run.run_id] = run
        return machine

    async def reconcile(self) -> None:
        """Catch up with what happened while the controller was down."""
        for run_id, machine in list(self._machines.items()):
            if machine.state == RunState.PENDING:
                await self._handle(run_id, Start())
                continue
            for record in list(machine.nodes.values()):
                if record.state == NodeState.RUNNING:
                    await self._reconcile_node(run_id, record)

    async def _reconcile_node(self, run_id: str, record: NodeRecord) -> None:
        if record.task_id:
            try:
                task = self._tasks.get_active(record.task_id) or \
                    await self._store.get_task(record.task_id)
            except NotFound:
                await self._restart_task(run_id, record)
                return
            if task.terminal:
                await self._handle(run_id, _task_done(record.node_key, task))
        elif record.child_run_id:
            try:
                child = await self._store.get_run(record.child_run_id)
            except NotFound:
                return
            if child.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED):
                await self._handle(run_id, ChildDone(record.node_key, child.state,
                                                     child.result, child.error))

    async def _restart_task(self, run_id: str, record: NodeRecord) -> None:
        machine = self._machines[run_id]
        scope = machine.scopes.get(record.scope)
        if scope is None or record.node_id not in scope.graph.nodes:
            return
        node = scope.graph.nodes[record.node_id]
        await self._start_tasks(run_id, [(StartTask(record.node_key, node, record.input),
                                          record.task_id or new_id())])

    # -- service methods
    async def start_run(self, workflow: Workflow, params: dict[str, Any], *, trigger: str,
                        parent: tuple[str, str] | None = None,
                        run_id: str | None = None) -> WorkflowRun:
        now = round(self._clock.now(), 3)
        run = WorkflowRun(
            run_id=run_id or new_id(), workflow_id=workflow.workflow_id,
            workflow_name=workflow.name, version=workflow.version, state=RunState.PENDING,
            params={**workflow.spec.params, **params}, trigger=trigger,
            parent_run_id=parent[0] if parent else None,
            parent_node_key=parent[1] if parent else None, created_at=now, updated_at=now,
        )
        machine = RunMachine(run.run_id, workflow.spec, run.params)
        self._machines[run.run_id] = machine
        self._runs[run.run_id] = run
        await self._store.save_run(run.run_id, run, list(machine.nodes.values()))
        self._bus.publish(RunUpdated(run))
        await self._handle(run.run_id, Start())
        # A run can end within Start (a template error, nothing but instant nodes).
        return self._runs.get(run.run_id) or await self._store.get_run(run.run_id)

    async def cancel_run(self, run_id: str, reason: str = "canceled") -> WorkflowRun:
        if run_id not in self._machines:
            run = await self._store.get_run(run_id)
            raise InvalidState(f"the run has already ended ({run.state.value})")
        await self._handle(run_id, Cancel(reason))
        return self._runs.get(run_id) or await self._store.get_run(run_id)

    async def retry_run(self, run_id: str) -> WorkflowRun:
        run = self._runs.get(run_id) or await self._store.get_run(run_id)
        if run.state not in (RunState.FAILED, RunState.CANCELED):
            raise InvalidState(f"only a Failed or Canceled run can be retried; "
                               f"this one is {run.state.value}")
        if run_id not in self._machines:
            await self._load(run)
        await self._handle(run_id, RetryFailed())
        return self._runs.get(run_id) or await self._store.get_run(run_id)

    def get_active(self, run_id: str) -> WorkflowRun | None:
        return self._runs.get(run_id)

    # -- events in
    def _on_task_end(self, task: TaskRun) -> None:
        run_id = task.workflow_run_id
        if run_id is None or run_id not in self._machines or task.dag_node_id is None:
            return
        ends = self._task_ends.setdefault(run_id, [])
        ends.append(_task_done(task.dag_node_id, task))
        if len(ends) == 1:  # the first end of this turn schedules the run's handling
            self._spawn(self._handle_task_ends(run_id))

    async def _handle_task_ends(self, run_id: str) -> None:
        """Every task end of a run that arrived before this runs, handled as one batch: the
        machine takes them one by one, their commands are stored in one write. A fan-in of
        thousands of tasks finishing together costs a few commits, not thousands."""
        events = self._task_ends.pop(run_id, [])
        machine = self._machines.get(run_id)
        if machine is None:
            return
        now = round(self._clock.now(), 3)
        commands = [c for event in events for c in machine.handle(event, now)]
        await self._apply(run_id, commands)

    def _spawn(self, coro) -> None:
        if self._tg is None or self._stopping:
            coro.close()
            return
        self._tg.create_task(_logged(coro))

    async def _handle(self, run_id: str, event: Event) -> None:
        machine = self._machines.get(run_id)
        if machine is None:
            return
        await self._apply(run_id, machine.handle(event, round(self._clock.now(), 3)))

    # -- commands out
    async def _apply(self, run_id: str, commands: list[Command]) -> None:
        if not commands:
            return
        machine = self._machines[run_id]
        starts = [(c, new_id()) for c in commands if isinstance(c, StartTask)]
        for command, task_id in starts:
            machine.assign(command.key, task_id=task_id)
        changed = _changed_keys(commands)
        run = self._run_after(run_id, commands)
        records = [machine.nodes[k] for k in changed if k in machine.nodes]
        dropped = [k for c in commands if isinstance(c, NodesDropped) for k in c.keys]
        save = self._store.save_run(run_id, run, records, dropped)
        if starts:  # node records and the tasks they start share one group commit
            await asyncio.gather(save, self._start_tasks(run_id, starts))
        else:
            await save
        self._publish(run_id, commands, machine)
        if run is not None:
            self._bus.publish(RunUpdated(run))
        for command in commands:
            await self._carry_out(run_id, command)
        if run is not None and run.state in (RunState.SUCCEEDED, RunState.FAILED,
                                             RunState.CANCELED):
            await self._run_ended(run)

    def _run_after(self, run_id: str, commands: list[Command]) -> WorkflowRun | None:
        change = next((c for c in reversed(commands) if isinstance(c, RunChanged)), None)
        if change is None:
            return None
        now = round(self._clock.now(), 3)
        run = self._runs[run_id]
        ended = change.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED)
        run = msgspec.structs.replace(
            run, state=change.state, result=change.result, error=change.error, updated_at=now,
            started_at=run.started_at or (now if change.state == RunState.RUNNING else None),
            finished_at=now if ended else None,
        )
        self._runs[run_id] = run
        return run

    def _publish(self, run_id: str, commands: list[Command], machine: RunMachine) -> None:
        workflow_id = self._runs[run_id].workflow_id
        last: dict[str, NodeState] = {}
        for command in commands:
            if isinstance(command, NodeChanged):
                record = command.record
                if last.get(record.node_key) != record.state:
                    last[record.node_key] = record.state
                    current = machine.nodes.get(record.node_key, record)
                    shown = current if current.state == record.state else record
                    self._bus.publish(RunNodeChanged(run_id, workflow_id, shown))

    async def _start_tasks(self, run_id: str, starts: list[tuple[StartTask, str]]) -> None:
        if not starts:
            return
        if len(starts) > 1:
            await self._task_def(run_id, starts[0][0].node)  # warm the cache once
        results = await asyncio.gather(*(self._start_task(run_id, c, tid) for c, tid in starts),
                                       return_exceptions=True)
        for (command, _), outcome in zip(starts, results, strict=True):
            if isinstance(outcome, Exception):
                log.warning("workflow_task_not_started", run_id=run_id, node=command.key,
                            error=str(outcome))
                self._spawn(self._handle(run_id, TaskDone(
                    command.key, NodeState.FAILED, error=f"task not started: {outcome}")))

    async def _task_def(self, run_id: str, node: DagNode) -> TaskDef | None:
        """A node's task definition, looked up once per run (definitions do not change;
        one deleted while its run goes on keeps serving that run)."""
        cache = self._defs.setdefault(run_id, {})
        key = node.task_def_id or f"name:{node.task_name}"
        if key not in cache:
            if node.task_def_id:
                cache[key] = await self._store.get_def(node.task_def_id)
            else:
                cache[key] = await self._store.get_def_by_name(node.task_name or "")
        return cache[key]

    async def _start_task(self, run_id: str, command: StartTask, task_id: str) -> None:
        node = command.node
        task_def = await self._task_def(run_id, node) if (node.task_def_id or node.task_name) \
            else None
        now = round(self._clock.now(), 3)

        def pick(value, default_value):
            return value if value is not None else default_value

        task = TaskRun(
            task_id=task_id, state=TaskState.QUEUED, created_at=now, updated_at=now,
            name=task_def.name if task_def else (node.task_name or node.id),
            executor=task_def.executor if task_def else (node.executor
                                                         or ExecutorKind.EMBEDDED.value),
            target_kind=task_def.target_kind if task_def else "",
            target_ref=task_def.target_ref if task_def else "",
            labels=dict(task_def.labels) if task_def else {},
            payload=_merge(task_def.default_payload if task_def else None, command.payload),
            timeout_sec=pick(node.timeout_sec, pick(task_def.timeout_sec if task_def else None,
                                                    DEFAULT_TIMEOUT_SEC)),
            max_retries=pick(node.max_retries, task_def.max_retries if task_def else 0),
            retry_backoff_sec=pick(node.retry_backoff_sec, task_def.retry_backoff_sec
                                   if task_def else DEFAULT_BACKOFF_SEC),
            def_id=task_def.def_id if task_def else None,
            workflow_run_id=run_id, dag_node_id=command.key,
        )
        await self._tasks.submit(task, start=True)

    async def _carry_out(self, run_id: str, command: Command) -> None:
        match command:
            case CancelTask(_, task_id):
                try:
                    await self._tasks.cancel(task_id, "workflow run canceled")
                except (InvalidState, NotFound):
                    pass
            case StartChild(key, workflow_id, params):
                await self._start_child(run_id, key, workflow_id, params)
            case CancelChild(_, child_run_id):
                if child_run_id in self._machines:
                    await self.cancel_run(child_run_id, "parent run canceled")

    async def _start_child(self, run_id: str, key: str, workflow_id: str,
                           params: dict[str, Any]) -> None:
        try:
            workflow = await self._store.get_workflow(workflow_id)
        except NotFound:
            await self._handle(run_id, ChildDone(key, RunState.FAILED,
                                                 error=f"workflow {workflow_id!r} not found"))
            return
        child_id = new_id()
        machine = self._machines[run_id]
        machine.assign(key, child_run_id=child_id)
        await self._store.save_run(run_id, None, [machine.nodes[key]])
        await self.start_run(workflow, params, trigger="subworkflow", parent=(run_id, key),
                             run_id=child_id)

    async def _run_ended(self, run: WorkflowRun) -> None:
        self._machines.pop(run.run_id, None)
        self._runs.pop(run.run_id, None)
        self._defs.pop(run.run_id, None)
        log.info("workflow_run_ended", run_id=run.run_id, state=run.state.value)
        if run.parent_run_id and run.parent_node_key:
            await self._handle(run.parent_run_id, ChildDone(
                run.parent_node_key, run.state, run.result, run.error))


def _changed_keys(commands: list[Command]) -> list[str]:
    seen: dict[str, None] = {}
    for command in commands:
        if isinstance(command, NodeChanged):
            seen[command.record.node_key] = None
    return list(seen)


def _task_done(key: str, task: TaskRun) -> TaskDone:
    return TaskDone(key, NodeState(task.state.value), task.result, task.error, task.attempt,
                    task.task_id)


def _merge(default: Any, given: Any) -> Any:
    if isinstance(default, dict) and isinstance(given, dict):
        return {**default, **given}
    return given if given is not None else default


async def _logged(coro) -> None:
    try:
        await coro
    except Exception:
        log.exception("workflow_event_failed")

