"""The controller's side of `os_process`: tasks run on agents, never in the controller.

Agents attach a task channel when they connect (in all-in-one mode, the in-process agent
attaches its runner directly). A task with `targetKind: node` waits for that node's agent;
any other goes to the least busy agent with a free slot. While no agent can take it, the
task stays `Pending` with the reason shown; its deadline still runs.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from plum.executors.base import (
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    ExecutorKind,
    TargetKind,
)


class TaskChannel(Protocol):
    node_id: str
    capacity: int

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult: ...


class AgentPool:
    def __init__(self) -> None:
        self._channels: dict[str, TaskChannel] = {}
        self._inflight: dict[str, int] = {}
        self._changed = asyncio.Condition()

    def nodes(self) -> list[str]:
        return list(self._channels)

    def inflight(self, node_id: str) -> int:
        return self._inflight.get(node_id, 0)

    async def attach(self, channel: TaskChannel) -> None:
        self._channels[channel.node_id] = channel
        self._inflight.setdefault(channel.node_id, 0)
        await self._notify()

    async def detach(self, node_id: str) -> None:
        self._channels.pop(node_id, None)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _pick(self, request: ExecutionRequest) -> TaskChannel | None:
        if request.target_kind == TargetKind.NODE:
            channel = self._channels.get(request.target_ref)
            candidates = [channel] if channel is not None else []
        else:
            candidates = list(self._channels.values())
        free = [c for c in candidates if self.inflight(c.node_id) < max(1, c.capacity)]
        if not free:
            return None
        return min(free, key=lambda c: self.inflight(c.node_id) / max(1, c.capacity))

    def _waiting_reason(self, request: ExecutionRequest) -> str:
        if request.target_kind == TargetKind.NODE:
            if request.target_ref not in self._channels:
                return f"waiting for the agent of node '{request.target_ref}'"
            return f"waiting for a free slot on node '{request.target_ref}'"
        if not self._channels:
            return "waiting for an agent to run os_process tasks"
        return "waiting for a free slot on an agent"

    async def acquire(self, request: ExecutionRequest, ctx: ExecutionContext) -> TaskChannel:
        async with self._changed:
            while (channel := self._pick(request)) is None:
                ctx.set_reason(self._waiting_reason(request))
                await self._changed.wait()
            self._inflight[channel.node_id] = self.inflight(channel.node_id) + 1
            return channel

    async def release(self, node_id: str) -> None:
        self._inflight[node_id] = max(0, self.inflight(node_id) - 1)
        await self._notify()


class _OnNode:
    """The attempt's context, reporting the node it runs on."""

    __slots__ = ("_ctx", "_node")

    def __init__(self, ctx: ExecutionContext, node: str):
        self._ctx = ctx
        self._node = node

    async def mark_running(self, node: str = "") -> None:
        await self._ctx.mark_running(node or self._node)

    def set_reason(self, reason: str) -> None:
        self._ctx.set_reason(reason)

    def log(self, stream, line: str) -> None:
        self._ctx.log(stream, line)


class AgentExecutor:
    kind = ExecutorKind.OS_PROCESS

    def __init__(self, pool: AgentPool):
        self._pool = pool

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        channel = await self._pool.acquire(request, ctx)
        try:
            return await channel.run(request, _OnNode(ctx, channel.node_id))
        finally:
            await asyncio.shield(self._pool.release(channel.node_id))
