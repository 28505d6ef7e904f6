"""The agent component: this node's end of the agent link.

It says `hello` with its full state whenever its link connects, heartbeats with the host's
usage, runs the `os_process` tasks the controller sends (`runTask`) with its
`ProcessRunner`, streaming `taskStarted`, `taskLog` lines and the `taskResult` back, and
stops them on `cancelTask`. A result is kept until the controller acknowledges it, so one
produced while the link is down is sent after the reconnect (the `hello` lists it with the
running tasks). Assignments go to the supervisor, when one is attached. It is registered
once the controller's first `welcome` has come.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import plum
from plum.agent.host import UsageSampler, default_capacity
from plum.agent.link import ControllerLink
from plum.agent.protocol import (
    Assignments,
    CancelTask,
    ControllerMessage,
    Heartbeat,
    Hello,
    InstanceLog,
    InstanceLogRequest,
    InstanceStatus,
    InstanceStatusMsg,
    ResultAck,
    RunningTask,
    RunTask,
    TaskLog,
    TaskResult,
    TaskStarted,
    Welcome,
)
from plum.agent.supervisor import Supervisor as AppSupervisor
from plum.clock import Clock
from plum.config import Config
from plum.executors.base import (
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    LogStream,
)
from plum.executors.os_process import OsProcessExecutor
from plum.logging import get_logger

log = get_logger(__name__)


class ProcessRunner:
    """Runs os_process tasks on this node."""

    def __init__(self, node_id: str, capacity: int, clock: Clock, env: dict[str, str]):
        self.node_id = node_id
        self.capacity = capacity
        self._executor = OsProcessExecutor(clock, extra_env=env)

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        return await self._executor.run(request, ctx)


class Supervisor(Protocol):
    """The apps' side of the agent (plum/agent/supervisor.py)."""

    def apply(self, assignments: Assignments) -> Any:
        """Take in what the controller wants (may be a coroutine function)."""

    def statuses(self) -> list[InstanceStatus]: ...
    def log_path(self, instance_id: str) -> Path: ...


class _Running:
    __slots__ = ("attempt", "started", "task")

    def __init__(self, attempt: int):
        self.attempt = attempt
        self.started = False
        self.task: asyncio.Task | None = None


class _TaskContext:
    """One task's context on the agent: what the runner says goes over the link."""

    __slots__ = ("_agent", "_entry", "_request")

    def __init__(self, agent: Agent, request: ExecutionRequest, entry: _Running):
        self._agent = agent
        self._request = request
        self._entry = entry

    async def mark_running(self, node: str = "") -> None:
        self._entry.started = True
        self._agent.post(TaskStarted(task_id=self._request.task_id,
                                     attempt=self._request.attempt))

    def set_reason(self, reason: str) -> None:
        """Nothing waits on an agent."""

    def log(self, stream: LogStream, line: str) -> None:
        self._agent.post(TaskLog(task_id=self._request.task_id, attempt=self._request.attempt,
                                 stream=str(stream), text=line))


class Agent:
    def __init__(
        self, config: Config, link: ControllerLink, clock: Clock, *,
        supervisor: Supervisor | None = None, controller_base: str | None = None,
    ):
        self._config = config
        self._link = link
        self._clock = clock
        self._usage = UsageSampler()
        self.supervisor = supervisor
        self.heartbeat_sec = config.agent.heartbeat_sec
        self.registered = asyncio.Event()
        self.runner = ProcessRunner(
            self.node_id, default_capacity(config.agent.capacity), clock,
            {"WORKER_NODE_ID": self.node_id,
             "CONTROLLER_BASE": controller_base or config.agent.controller,
             "CONTROLLER_GRPC_ADDR": config.server.grpc_addr},
        )
        self._running: dict[str, _Running] = {}
        self._unacked: dict[str, TaskResult] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._draining = False

    @property
    def node_id(self) -> str:
        return self._config.node_id

    # -- what the link asks for
    def hello(self) -> Hello:
        agent = self._config.agent
        running = [RunningTask(task_id=t, attempt=r.attempt) for t, r in self._running.items()]
        running += [RunningTask(task_id=t, attempt=r.attempt)
                    for t, r in self._unacked.items() if t not in self._running]
        return Hello(
            node_id=self.node_id,
            ip=agent.ip,
            labels=agent.labels,
            capacity=self.runner.capacity,
            version=plum.__version__,
            instances=self.supervisor.statuses() if self.supervisor is not None else [],
            running_tasks=running,
        )

    def beat(self) -> Heartbeat:
        return Heartbeat(usage=self._usage.sample())

    async def receive(self, message: ControllerMessage) -> None:
        match message:
            case Welcome():
                self._welcomed(message)
            case Assignments():
                if self.supervisor is not None:
                    applied = self.supervisor.apply(message)
                    if inspect.isawaitable(applied):
                        await applied
            case RunTask():
                self._start(message.request)
            case CancelTask():
                self._cancel(message.task_id, message.attempt)
            case ResultAck():
                done = self._unacked.get(message.task_id)
                if done is not None and done.attempt == message.attempt:
                    del self._unacked[message.task_id]
            case InstanceLogRequest():
                self.post(self._instance_log(message))

    def _instance_log(self, request: InstanceLogRequest) -> InstanceLog:
        """The end of an instance's log, read from its file (bounded: a tail, never all)."""
        answer = {"request_id": request.request_id, "instance_id": request.instance_id}
        unsafe = "/" in request.instance_id or request.instance_id in ("", ".", "..")
        if self.supervisor is None or unsafe:
            return InstanceLog(**answer, found=False)
        path = self.supervisor.log_path(request.instance_id)
        try:
            with path.open("rb") as fh:
                size = fh.seek(0, 2)
                fh.seek(max(0, size - request.tail_bytes))
                data = fh.read(request.tail_bytes)
        except (OSError, ValueError):
            return InstanceLog(**answer, found=False)
        return InstanceLog(**answer, text=data.decode(errors="replace"),
                           truncated=size > request.tail_bytes)

    # -- what the agent tells the controller
    def post(self, message: TaskStarted | TaskLog | TaskResult | InstanceStatusMsg | InstanceLog
             ) -> bool:
        return self._link.post(message)

    def report_status(self, status: InstanceStatus) -> None:
        """The supervisor's `report` callback: an instance changed."""
        self._link.post(InstanceStatusMsg(status=status))

    # -- lifecycle
    @asynccontextmanager
    async def running(self, *, wait_registered: bool = False) -> AsyncIterator[Agent]:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            link = tg.create_task(self._link.run(self), name="agent-link")
            try:
                if wait_registered:
                    await self.registered.wait()
                yield self
            finally:
                await self._drain(self._config.server.shutdown_grace_sec)
                link.cancel()
        self._tg = None

    async def _drain(self, grace: float) -> None:
        """Stop taking tasks; let running ones finish within `grace`, then kill them."""
        self._draining = True
        tasks = [entry.task for entry in self._running.values() if entry.task is not None]
        if tasks:
            log.info("agent_draining", node_id=self.node_id, tasks=len(tasks), grace=grace)
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self._link.flush(timeout=min(grace, 2.0))

    # -- tasks
    def _welcomed(self, welcome: Welcome) -> None:
        self.heartbeat_sec = welcome.heartbeat_sec
        for task_id, entry in self._running.items():
            if entry.started:
                self.post(TaskStarted(task_id=task_id, attempt=entry.attempt))
        for result in self._unacked.values():
            self.post(result)
        if not self.registered.is_set():
            log.info("agent_registered", node_id=self.node_id)
            self.registered.set()

    def _start(self, request: ExecutionRequest) -> None:
        task_id, attempt = request.task_id, request.attempt
        current = self._running.get(task_id)
        if current is not None:
            if current.attempt == attempt:
                if current.started:  # sent twice (a resync): say so again
                    self.post(TaskStarted(task_id=task_id, attempt=attempt))
                return
            assert current.task is not None
            current.task.cancel()  # an older attempt: the controller has moved on
        done = self._unacked.get(task_id)
        if done is not None and done.attempt == attempt:
            self.post(done)
            return
        if self._tg is None or self._draining:
            log.info("agent_task_refused", task_id=task_id, reason="agent stopping")
            return
        entry = _Running(attempt)
        entry.task = self._tg.create_task(self._run(request, entry), name=f"task-{task_id}")
        self._running[task_id] = entry

    async def _run(self, request: ExecutionRequest, entry: _Running) -> None:
        task_id = request.task_id
        log.info("agent_task_started", task_id=task_id, attempt=request.attempt)
        try:
            result = await self.runner.run(request, _TaskContext(self, request, entry))
        except Exception as exc:
            log.exception("agent_task_failed", task_id=task_id)
            result = ExecutionResult.failure(f"agent error: {exc}")
        finally:
            if self._running.get(task_id) is entry:
                del self._running[task_id]
        message = TaskResult(task_id=task_id, attempt=request.attempt, ok=result.ok,
                             result=result.result, error=result.error)
        self._unacked[task_id] = message
        self.post(message)
        log.info("agent_task_finished", task_id=task_id, attempt=request.attempt, ok=result.ok)

    def _cancel(self, task_id: str, attempt: int) -> None:
        entry = self._running.get(task_id)
        if entry is not None and entry.attempt == attempt and entry.task is not None:
            log.info("agent_task_canceled", task_id=task_id, attempt=attempt)
            entry.task.cancel()
        done = self._unacked.get(task_id)
        if done is not None and done.attempt == attempt:
            del self._unacked[task_id]


@asynccontextmanager
async def run_node_agent(
    config: Config, link: ControllerLink, clock: Clock, *, controller_base: str,
    stop_apps_on_exit: bool, wait_registered: bool = False,
) -> AsyncIterator[Agent]:
    """An agent with its supervisor: the supervisor starts first (adopting the apps an
    earlier agent process left running), so the agent's hello lists them."""
    agent = Agent(config, link, clock, controller_base=controller_base)
    supervisor = AppSupervisor(
        node_id=agent.node_id, data_dir=config.agent_data_path, clock=clock,
        report=agent.report_status, controller_base=controller_base,
        grpc_addr=config.server.grpc_addr, token=config.agent_token or None,
        node_ip=config.agent.ip,
    )
    agent.supervisor = supervisor
    async with supervisor.running(stop_on_exit=stop_apps_on_exit), \
            agent.running(wait_registered=wait_registered):
        yield agent
