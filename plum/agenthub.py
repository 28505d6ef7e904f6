"""The controller's end of the agent link: one session per connected agent.

An agent connects (a websocket, or in-process in all-in-one mode) and says `hello`; the hub
marks its node `Healthy`, answers `welcome` and the node's full assignment set, and attaches
a `RemoteChannel` to the agent pool so `os_process` tasks reach it. A task sent to an agent
is awaited by a waiter until its `taskResult` comes back.

The link is the node's liveness: when it drops, or the agent's heartbeats stop for `ttl`,
the node is `Unhealthy` at once and every task in flight on it is lost (`engine.lose`:
retried elsewhere or failed, per its retry policy). A new connection from a node that is
still connected replaces the old one; tasks its `hello` still lists stay in flight.

Tasks outlive a controller restart: the engine offers every task it finds Running to the
hub, which keeps those on other nodes as orphans until their agent says `hello` (then they
are adopted, and their results recorded as if nothing had happened) or for `ttl` (then
they are lost). When the controller stops, its agents keep running their tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol

import plum
from plum.agent.protocol import (
    AgentMessage,
    Assignment,
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
    RunTask,
    TaskLog,
    TaskResult,
    TaskStarted,
    Welcome,
)
from plum.clock import Clock, TimerHandle
from plum.engine.model import Usage
from plum.engine.orchestrator import TaskEngine
from plum.engine.tasks import TaskRun, TaskState
from plum.errors import BadRequest, Unavailable
from plum.executors.agents import AgentPool
from plum.executors.base import (
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    ExecutorKind,
)
from plum.ids import new_id
from plum.logging import get_logger
from plum.nodes import NodeHeartbeat, NodeRegistry

log = get_logger(__name__)

LOST = "agent lost"

AssignmentSource = Callable[[str], Awaitable[list[Assignment]]]
StatusListener = Callable[[InstanceStatus], None]


class AgentConnection(Protocol):
    async def send(self, message: ControllerMessage) -> None:
        """Deliver one message; raises `ConnectionError` when the link is gone."""

    async def close(self) -> None: ...


class _Waiter:
    """One attempt sent to an agent, until its result comes back."""

    __slots__ = ("attempt", "ctx", "detached", "node_id", "result", "started", "task_id")

    def __init__(self, node_id: str, task_id: str, attempt: int):
        loop = asyncio.get_running_loop()
        self.node_id = node_id
        self.task_id = task_id
        self.attempt = attempt
        self.ctx: ExecutionContext | None = None
        self.started: asyncio.Future[None] = loop.create_future()
        self.result: asyncio.Future[ExecutionResult] = loop.create_future()
        self.detached = False

    def start(self) -> None:
        if not self.started.done():
            self.started.set_result(None)

    def finish(self, result: ExecutionResult) -> None:
        if not self.result.done():
            self.result.set_result(result)

    def detach(self) -> None:
        """The controller stops: stop waiting, leave the task to run on (no cancel)."""
        self.detached = True
        self.result.cancel()


class AgentSession:
    """One connection, from `hello` on. Created by `AgentHub.session()`."""

    def __init__(self, hub: AgentHub, conn: AgentConnection):
        self._hub = hub
        self.conn = conn
        self.hello: Hello | None = None
        self.timer: TimerHandle | None = None
        self.ended = False

    @property
    def node_id(self) -> str | None:
        return self.hello.node_id if self.hello is not None else None

    async def receive(self, message: AgentMessage) -> None:
        """Handle one message from the agent; `BadRequest` when it breaks the protocol."""
        await self._hub._receive(self, message)


class RemoteChannel:
    """The pool's way to run a task on one connected agent."""

    def __init__(self, hub: AgentHub, node_id: str, capacity: int):
        self._hub = hub
        self.node_id = node_id
        self.capacity = capacity

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        hub = self._hub
        waiter = hub._expect(self.node_id, request.task_id, request.attempt, ctx)
        if not await hub._send(self.node_id, RunTask(request=request)):
            hub._forget(waiter)
            return ExecutionResult.failure(LOST)
        return await hub._await(waiter, mark_running=True)


class AgentHub:
    def __init__(
        self,
        nodes: NodeRegistry,
        pool: AgentPool,
        engine: TaskEngine,
        clock: Clock,
        *,
        heartbeat_sec: float,
        ttl: float,
        local_node: str | None = None,
    ):
        """Build before `engine.running()`, so that recovery offers it the orphans.
        `local_node`: the in-process agent's node, whose tasks die with the controller."""
        self._nodes = nodes
        self._pool = pool
        self._engine = engine
        self._clock = clock
        self.heartbeat_sec = heartbeat_sec
        self._ttl = ttl
        self._local_node = local_node
        self._sessions: dict[str, AgentSession] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._orphans: dict[str, tuple[str, int]] = {}  # task id -> (node, attempt)
        self._locks: dict[str, asyncio.Lock] = {}
        self._source: AssignmentSource | None = None
        self._listeners: list[StatusListener] = []
        self._log_requests: dict[str, asyncio.Future] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = False
        engine.add_adopter(self._claim_orphan)

    # -- lifecycle
    @asynccontextmanager
    async def running(self) -> AsyncIterator[AgentHub]:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            deadline = self._clock.call_at(
                self._clock.now() + self._ttl, lambda: self._spawn(self._lose_orphans())
            )
            try:
                yield self
            finally:
                deadline.cancel()
                await self.stop()
        self._tg = None

    async def stop(self) -> None:
        """Stop intake and let agents go; their tasks run on and report after a restart.
        The in-process agent's link stays until that agent has drained. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        for node_id, session in list(self._sessions.items()):
            await self._pool.detach(node_id)
            if node_id == self._local_node:
                continue
            for waiter in self._waiters_on(node_id):
                waiter.detach()
            self._spawn(session.conn.close())
        log.info("agent_hub_stopped", nodes=len(self._sessions))

    # -- API for other components
    def set_assignment_source(self, source: AssignmentSource) -> None:
        """`await source(node_id)`: the node's full assignment set, sent on every hello."""
        self._source = source

    def add_status_listener(self, listener: StatusListener) -> None:
        """Called (synchronously) with every instance status an agent reports."""
        self._listeners.append(listener)

    async def push(self, node_id: str, message: Assignments) -> None:
        """Send assignment changes to a node; nothing happens while it is not connected."""
        await self._send(node_id, message)

    def connected_nodes(self) -> set[str]:
        return set(self._sessions)

    async def instance_log(self, node_id: str, instance_id: str, *, tail_bytes: int,
                           timeout: float = 10.0) -> InstanceLog:
        """Ask a node's agent for the end of an instance's log."""
        request_id = new_id()
        waiter = asyncio.get_running_loop().create_future()
        self._log_requests[request_id] = waiter
        try:
            message = InstanceLogRequest(request_id=request_id, instance_id=instance_id,
                                         tail_bytes=tail_bytes)
            if not await self._send(node_id, message):
                raise Unavailable(f"the agent of node {node_id!r} is not connected")
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise Unavailable(f"the agent of node {node_id!r} did not answer") from None
        finally:
            self._log_requests.pop(request_id, None)

    @asynccontextmanager
    async def session(self, conn: AgentConnection) -> AsyncIterator[AgentSession]:
        """A connection's lifetime: feed it the agent's messages; leaving it is a drop."""
        if self._stopping:
            raise Unavailable("the controller is stopping")
        session = AgentSession(self, conn)
        try:
            yield session
        finally:
            await self._run_to_end(self._end(session))

    # -- messages
    async def _receive(self, session: AgentSession, message: AgentMessage) -> None:
        if session.ended:
            return
        if session.hello is None and not isinstance(message, Hello):
            raise BadRequest(f"the agent sent {type(message).__name__} before hello")
        match message:
            case Hello():
                await self._hello(session, message)
            case Heartbeat():
                await self._beat(session, message.usage)
            case TaskStarted():
                waiter = self._waiter_for(session, message.task_id, message.attempt)
                if waiter is not None:
                    waiter.start()
            case TaskResult():
                await self._result(session, message)
            case TaskLog():
                self._log(session, message)
            case InstanceStatusMsg():
                self._notify(message.status)
            case InstanceLog():
                waiter = self._log_requests.pop(message.request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)

    async def _hello(self, session: AgentSession, hello: Hello) -> None:
        if session.hello is not None:
            raise BadRequest("the agent said hello twice")
        session.hello = hello
        node_id = hello.node_id
        async with self._lock(node_id):
            if session.ended:
                return
            old = self._sessions.get(node_id)
            self._sessions[node_id] = session
            if old is not None:
                self._retire(old)
            listed = {t.task_id: t.attempt for t in hello.running_tasks}
            gone = [w for w in self._waiters_on(node_id) if listed.get(w.task_id) != w.attempt]
            await self._nodes.heartbeat(self._node_beat(hello, Usage()))
            self._arm(session)
            await self._lose(gone)
            await self._reconcile(session, listed)
            await self._send_to(session, Welcome(heartbeat_sec=self.heartbeat_sec,
                                                 controller_version=plum.__version__))
            items = await self._source(node_id) if self._source is not None else []
            await self._send_to(session, Assignments(items=items, full=True))
            if not self._stopping and not session.ended:
                await self._pool.attach(RemoteChannel(self, node_id, hello.capacity))
        log.info("agent_connected", node_id=node_id, ip=hello.ip, replaced=old is not None,
                 running_tasks=len(listed))
        for status in hello.instances:
            self._notify(status)

    async def _reconcile(self, session: AgentSession, listed: dict[str, int]) -> None:
        """Tasks the agent runs: keep those in flight, adopt orphans, leave those the engine
        is about to send again (still Pending after a restart: the agent answers the repeated
        `runTask` with what it has), stop the rest; orphans of this node it does not run are
        lost."""
        node_id = session.node_id
        for task_id, attempt in listed.items():
            waiter = self._waiters.get(task_id)
            if waiter is not None and (waiter.node_id, waiter.attempt) == (node_id, attempt):
                continue
            if self._orphans.get(task_id) == (node_id, attempt):
                del self._orphans[task_id]
                if self._adopt(node_id, task_id, attempt):
                    continue
            task = self._engine.get_active(task_id)
            if task is not None and task.attempt == attempt and task.state == TaskState.PENDING:
                continue
            log.info("agent_task_stale", node_id=node_id, task_id=task_id, attempt=attempt)
            await self._send_to(session, CancelTask(task_id=task_id, attempt=attempt))
        for task_id, (orphan_node, attempt) in list(self._orphans.items()):
            if orphan_node == node_id and task_id not in listed:
                del self._orphans[task_id]
                await self._engine.lose(task_id, attempt, LOST)

    def _adopt(self, node_id: str, task_id: str, attempt: int) -> bool:
        waiter = self._expect(node_id, task_id, attempt, None)
        waiter.start()

        async def run(ctx: ExecutionContext) -> ExecutionResult:
            waiter.ctx = ctx
            return await self._await(waiter, mark_running=False)

        if self._engine.adopt(task_id, attempt, run):
            log.info("task_adopted", node_id=node_id, task_id=task_id, attempt=attempt)
            return True
        self._forget(waiter)
        return False

    async def _beat(self, session: AgentSession, usage: Usage) -> None:
        assert session.hello is not None
        await self._nodes.heartbeat(self._node_beat(session.hello, usage))
        self._arm(session)

    async def _result(self, session: AgentSession, message: TaskResult) -> None:
        result = ExecutionResult(ok=message.ok, result=message.result, error=message.error)
        waiter = self._waiter_for(session, message.task_id, message.attempt)
        if waiter is not None and not waiter.result.done():
            waiter.finish(result)
        else:
            task = self._engine.get_active(message.task_id)
            if task is not None and task.attempt == message.attempt \
                    and task.state == TaskState.PENDING:
                return  # about to be sent again: the agent answers with this kept result
            # nobody waits (a result from before a controller restart, or a stale attempt):
            # the engine's attempt fence decides
            if self._orphans.get(message.task_id) == (session.node_id, message.attempt):
                del self._orphans[message.task_id]
            await self._engine.report(message.task_id, message.attempt, result)
        await self._send_to(session, ResultAck(task_id=message.task_id, attempt=message.attempt))

    def _log(self, session: AgentSession, message: TaskLog) -> None:
        waiter = self._waiter_for(session, message.task_id, message.attempt)
        if waiter is not None and waiter.ctx is not None:
            waiter.ctx.log(message.stream, message.text)
            return
        task = self._engine.get_active(message.task_id)
        if task is not None and task.attempt == message.attempt:
            self._engine.logs.append(message.task_id, message.stream, message.text,
                                     self._clock.now())

    def _notify(self, status: InstanceStatus) -> None:
        for listener in self._listeners:
            try:
                listener(status)
            except Exception:
                log.exception("instance_status_listener_failed", instance_id=status.instance_id)

    # -- link loss
    async def _end(self, session: AgentSession) -> None:
        """The session's connection is gone (or replaced, or silent for `ttl`)."""
        if session.ended:
            return
        session.ended = True
        self._disarm(session)
        node_id = session.node_id
        if node_id is None:
            return
        async with self._lock(node_id):
            if self._sessions.get(node_id) is not session:
                return  # replaced by a newer connection
            del self._sessions[node_id]
            waiters = self._waiters_on(node_id)
            if self._stopping:
                for waiter in waiters:
                    waiter.detach()
                return
            await self._pool.detach(node_id)
            await self._nodes.mark_unhealthy(node_id, "agent link lost")
            log.warning("agent_disconnected", node_id=node_id, tasks_lost=len(waiters))
            await self._lose(waiters)

    async def _lose(self, waiters: list[_Waiter]) -> None:
        for waiter in waiters:
            self._forget(waiter)
            await self._engine.lose(waiter.task_id, waiter.attempt, LOST)
            waiter.finish(ExecutionResult.failure(LOST))  # the engine has moved on: fenced

    def _retire(self, old: AgentSession) -> None:
        """A newer connection took over this node: close the old one, quietly."""
        old.ended = True
        self._disarm(old)
        self._spawn(old.conn.close())

    def _arm(self, session: AgentSession) -> None:
        self._disarm(session)
        session.timer = self._clock.call_at(
            self._clock.now() + self._ttl, lambda: self._spawn(self._expire(session))
        )

    def _disarm(self, session: AgentSession) -> None:
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None

    async def _expire(self, session: AgentSession) -> None:
        if session.ended:
            return
        log.warning("agent_heartbeats_stopped", node_id=session.node_id, ttl=self._ttl)
        self._spawn(session.conn.close())
        await self._end(session)

    # -- orphans: tasks found Running after a controller restart
    def _claim_orphan(self, task: TaskRun) -> bool:
        if task.executor != ExecutorKind.OS_PROCESS or not task.scheduled_on:
            return False
        if task.scheduled_on == self._local_node:
            return False  # the in-process agent died with the old controller
        self._orphans[task.task_id] = (task.scheduled_on, task.attempt)
        return True

    async def _lose_orphans(self) -> None:
        orphans, self._orphans = self._orphans, {}
        for task_id, (node_id, attempt) in orphans.items():
            log.warning("task_orphan_lost", task_id=task_id, node_id=node_id)
            await self._engine.lose(task_id, attempt, LOST)

    # -- waiters
    def _expect(
        self, node_id: str, task_id: str, attempt: int, ctx: ExecutionContext | None
    ) -> _Waiter:
        waiter = _Waiter(node_id, task_id, attempt)
        waiter.ctx = ctx
        self._waiters[task_id] = waiter
        return waiter

    def _forget(self, waiter: _Waiter) -> None:
        if self._waiters.get(waiter.task_id) is waiter:
            del self._waiters[waiter.task_id]

    def _waiters_on(self, node_id: str) -> list[_Waiter]:
        return [w for w in self._waiters.values() if w.node_id == node_id]

    def _waiter_for(self, session: AgentSession, task_id: str, attempt: int) -> _Waiter | None:
        waiter = self._waiters.get(task_id)
        if waiter is None or (waiter.node_id, waiter.attempt) != (session.node_id, attempt):
            return None
        return waiter

    async def _await(self, waiter: _Waiter, *, mark_running: bool) -> ExecutionResult:
        """The attempt's result; a cancellation (cancel, timeout) reaches the agent."""
        try:
            if mark_running:
                await asyncio.wait([waiter.started, waiter.result],
                                   return_when=asyncio.FIRST_COMPLETED)
                # a success implies a start (a kept result sent again comes alone)
                if (waiter.started.done() or _succeeded(waiter.result)) \
                        and not waiter.detached and waiter.ctx is not None:
                    await waiter.ctx.mark_running()
            return await waiter.result
        except asyncio.CancelledError:
            if not waiter.detached:
                stop = CancelTask(task_id=waiter.task_id, attempt=waiter.attempt)
                await asyncio.shield(self._send(waiter.node_id, stop))
            raise
        finally:
            self._forget(waiter)

    # -- plumbing
    async def _send(self, node_id: str, message: ControllerMessage) -> bool:
        session = self._sessions.get(node_id)
        if session is None:
            return False
        return await self._send_to(session, message)

    async def _send_to(self, session: AgentSession, message: ControllerMessage) -> bool:
        if session.ended:
            return False
        try:
            await session.conn.send(message)
        except (ConnectionError, RuntimeError) as exc:
            log.info("agent_send_failed", node_id=session.node_id, error=str(exc),
                     message=type(message).__name__)
            return False
        return True

    def _node_beat(self, hello: Hello, usage: Usage) -> NodeHeartbeat:
        return NodeHeartbeat(node_id=hello.node_id, ip=hello.ip, labels=hello.labels,
                             capacity=hello.capacity, usage=usage, version=hello.version)

    def _lock(self, node_id: str) -> asyncio.Lock:
        lock = self._locks.get(node_id)
        if lock is None:
            lock = self._locks[node_id] = asyncio.Lock()
        return lock

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._tg is None:
            coro.close()
            return
        self._tg.create_task(_logged(coro))

    async def _run_to_end(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` to its end in the hub's task group, even if the caller is cancelled."""
        if self._tg is None:
            await coro
            return
        await asyncio.shield(self._tg.create_task(_logged(coro)))


def _succeeded(future: asyncio.Future[ExecutionResult]) -> bool:
    return future.done() and not future.cancelled() and future.result().ok


async def _logged(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except Exception:
        log.exception("agent_hub_step_failed")
