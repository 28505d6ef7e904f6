"""The controller's side of the agent link, in process: the hub with its real collaborators
(`Controller`), and connections that record what the hub sends (`FakeConnection`, `Link`).
`Messages` is the recorder both the hub's and the agent's fake links are built on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

from plum.agent.protocol import Hello
from plum.agenthub import AgentHub, AgentSession
from plum.bus import Bus, NodeChanged, TaskChanged
from plum.engine.model import Health
from plum.engine.orchestrator import TaskEngine
from plum.engine.tasks import TaskRun, TaskState
from plum.executors.agents import AgentExecutor, AgentPool
from plum.executors.base import ExecutorKind
from plum.ids import new_id
from plum.nodes import NodeRegistry
from plum.store.sqlite import SqliteStore
from plum.testing import FakeClock

SAFETY = 5.0  # never reached when all is well
TTL = 15.0


async def settle(future):
    return await asyncio.wait_for(future, SAFETY)


class Messages:
    """Every message recorded, in order; `wait_for` awaits one of a kind, past or coming."""

    def __init__(self, safety: float = SAFETY) -> None:
        self.messages: list = []
        self._safety = safety
        self._waiters: list[tuple[Callable, asyncio.Future]] = []

    def record(self, message) -> None:
        self.messages.append(message)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(message):
                future.set_result(message)

    def of(self, kind: type) -> list:
        return [m for m in self.messages if isinstance(m, kind)]

    async def wait_for(self, kind: type, predicate: Callable = lambda m: True):
        """The first message of `kind` that `predicate` accepts."""
        for message in self.messages:
            if isinstance(message, kind) and predicate(message):
                return message
        future = asyncio.get_running_loop().create_future()
        waiter = (lambda m: isinstance(m, kind) and predicate(m), future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, self._safety)
        finally:
            self._waiters.remove(waiter)


class FakeConnection(Messages):
    """Records what the hub sends (`sent`)."""

    def __init__(self) -> None:
        super().__init__()
        self._closed = asyncio.Event()

    @property
    def sent(self) -> list:
        return self.messages

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def send(self, message) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.record(message)

    async def close(self) -> None:
        self._closed.set()

    async def wait_closed(self) -> None:
        await asyncio.wait_for(self._closed.wait(), SAFETY)


class Link:
    """One agent connection held open until `drop()`."""

    def __init__(self, hub: AgentHub):
        self.hub = hub
        self.conn = FakeConnection()
        self._stack = AsyncExitStack()
        self.session: AgentSession | None = None

    async def hello(self, node_id: str = "nodeB", **fields) -> Link:
        self.session = await self._stack.enter_async_context(self.hub.session(self.conn))
        await self.send(Hello(node_id=node_id, ip="127.0.0.2", capacity=4, **fields))
        return self

    async def send(self, message) -> None:
        assert self.session is not None
        await self.session.receive(message)

    async def drop(self) -> None:
        await self._stack.aclose()


class Controller:
    """Store, registry, pool, engine and hub, as `start_core` wires them."""

    def __init__(self, tmp_path, clock: FakeClock):
        self.path = tmp_path / "plum.db"
        self.clock = clock
        self.stack = AsyncExitStack()

    async def start(self, *, local_node: str | None = None) -> Controller:
        self.store = SqliteStore(self.path)
        await self.stack.enter_async_context(self.store)
        self.bus = Bus(self.clock)
        self.nodes = NodeRegistry(self.store, self.bus, self.clock, ttl=TTL)
        await self.stack.enter_async_context(self.nodes.running())
        self.pool = AgentPool()
        self.engine = TaskEngine(self.store, self.bus, self.clock,
                                 {ExecutorKind.OS_PROCESS: AgentExecutor(self.pool)},
                                 drain_grace=0.1)
        self.hub = AgentHub(self.nodes, self.pool, self.engine, self.clock, heartbeat_sec=5.0,
                            ttl=TTL, local_node=local_node)
        await self.stack.enter_async_context(self.engine.running())
        await self.stack.enter_async_context(self.hub.running())
        return self

    async def stop(self) -> None:
        await self.stack.aclose()

    def link(self) -> Link:
        return Link(self.hub)

    async def submit(self, **fields) -> TaskRun:
        fields.setdefault("payload", {"command": "true"})
        task = TaskRun(task_id=new_id(), name="sh", executor="os_process",
                       state=TaskState.QUEUED, created_at=self.clock.now(), **fields)
        return await self.engine.submit(task, start=True)

    def task_reaches(self, task_id: str, *states: TaskState, attempt: int | None = None):
        return self.bus.wait_for(
            lambda e: isinstance(e, TaskChanged) and e.task.task_id == task_id
            and e.task.state in states and (attempt is None or e.task.attempt == attempt))

    def node_becomes(self, node_id: str, health: Health):
        return self.bus.wait_for(
            lambda e: isinstance(e, NodeChanged) and e.node.node_id == node_id
            and e.node.health == health)
