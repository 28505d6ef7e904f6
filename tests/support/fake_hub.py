"""A stand-in for `plum.agenthub.AgentHub` with just what deployments use of it."""

from __future__ import annotations

import asyncio

from plum.agent.protocol import Assignment, Assignments, InstanceStatus


class FakeHub:
    def __init__(self, connected: set[str] | None = None):
        self.connected: set[str] = set(connected or ())
        self.source = None
        self.listeners: list = []
        self.pushed: list[tuple[str, Assignments]] = []
        self._waiters: list[tuple[str, asyncio.Future]] = []

    # -- the hub's interface
    def set_assignment_source(self, source) -> None:
        self.source = source

    def add_status_listener(self, listener) -> None:
        self.listeners.append(listener)

    async def push(self, node_id: str, message: Assignments) -> None:
        self.pushed.append((node_id, message))
        for waiter in [w for w in self._waiters if w[0] == node_id]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(message)

    def connected_nodes(self) -> set[str]:
        return set(self.connected)

    # -- for tests
    def report(self, status: InstanceStatus) -> None:
        """What the hub does with an agent's `instanceStatus`."""
        for listener in self.listeners:
            listener(status)

    async def hello(self, node_id: str) -> list[Assignment]:
        """What the hub asks for when the node's agent says hello."""
        self.connected.add(node_id)
        return await self.source(node_id)

    def next_push(self, node_id: str) -> asyncio.Future:
        """A future resolved with the next message pushed to the node."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((node_id, future))
        return future

    def take(self) -> dict[str, list[Assignments]]:
        """What was pushed since the last call, by node."""
        pushed, self.pushed = self.pushed, []
        by_node: dict[str, list[Assignments]] = {}
        for node_id, message in pushed:
            by_node.setdefault(node_id, []).append(message)
        return by_node
