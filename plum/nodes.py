"""The node registry: which nodes run an agent, and whether they are alive.

A node is `Healthy` while it heartbeats within `ttl`; a timer on the clock (not a polling
loop) marks it `Unhealthy` when the next heartbeat does not come in time. Every change is
stored before it is published.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import msgspec

from plum.bus import Bus, NodeChanged, NodeRemoved
from plum.clock import Clock, TimerHandle
from plum.engine.model import Health, Model, Node, Usage
from plum.errors import NotFound
from plum.logging import get_logger
from plum.store.base import NodeRepo, Page

log = get_logger(__name__)


class NodeHeartbeat(Model, frozen=True, forbid_unknown_fields=False):
    node_id: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    ip: str = ""
    labels: dict[str, str] = {}
    capacity: int = 0
    usage: Usage = Usage()
    version: str = ""


class NodeCounts(Model, frozen=True):
    total: int
    healthy: int


class NodeRegistry:
    def __init__(self, store: NodeRepo, bus: Bus, clock: Clock, *, ttl: float):
        self._store = store
        self._bus = bus
        self._clock = clock
        self._ttl = ttl
        self._last_seen: dict[str, float] = {}
        self._health: dict[str, Health] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._due: asyncio.Queue[str] = asyncio.Queue()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[NodeRegistry]:
        await self._load()
        async with asyncio.TaskGroup() as tg:
            worker = tg.create_task(self._expire_due(), name="node-expiry")
            try:
                yield self
            finally:
                worker.cancel()
                for timer in self._timers.values():
                    timer.cancel()

    async def _load(self) -> None:
        offset = 0
        while True:
            page = await self._store.list_nodes(limit=1000, offset=offset)
            for node in page.items:
                self._last_seen[node.node_id] = node.last_seen
                self._health[node.node_id] = node.health
                self._arm(node.node_id, node.last_seen)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def counts(self) -> NodeCounts:
        healthy = sum(1 for h in self._health.values() if h == Health.HEALTHY)
        return NodeCounts(total=len(self._health), healthy=healthy)

    async def heartbeat(self, beat: NodeHeartbeat) -> Node:
        now = self._clock.now()
        node = Node(
            node_id=beat.node_id,
            ip=beat.ip,
            labels=beat.labels,
            last_seen=now,
            health=Health.HEALTHY,
            capacity=beat.capacity,
            usage=beat.usage,
            version=beat.version,
        )
        await self._store.upsert_node(node)
        previous = self._health.get(node.node_id)
        self._last_seen[node.node_id] = now
        self._health[node.node_id] = Health.HEALTHY
        self._arm(node.node_id, now)
        self._bus.publish(NodeChanged(node))
        if previous != Health.HEALTHY:
            log.info("node_healthy", node_id=node.node_id, ip=node.ip)
        return node

    async def mark_unhealthy(self, node_id: str, reason: str) -> None:
        """The node's agent link dropped: `Unhealthy` at once, without waiting for `ttl`."""
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        if self._health.get(node_id) != Health.HEALTHY:
            return
        self._health[node_id] = Health.UNHEALTHY
        try:
            stored = await self._store.get_node(node_id)
        except NotFound:
            return  # removed meanwhile
        if self._health.get(node_id) != Health.UNHEALTHY:
            return  # a heartbeat came in meanwhile
        node = msgspec.structs.replace(stored, health=Health.UNHEALTHY)
        await self._store.upsert_node(node)
        log.warning("node_unhealthy", node_id=node_id, reason=reason)
        self._bus.publish(NodeChanged(node))

    async def get(self, node_id: str) -> Node:
        return await self._store.get_node(node_id)

    async def list(self, *, limit: int, offset: int) -> Page[Node]:
        return await self._store.list_nodes(limit=limit, offset=offset)

    async def remove(self, node_id: str) -> None:
        await self._store.delete_node(node_id)
        self._last_seen.pop(node_id, None)
        self._health.pop(node_id, None)
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        self._bus.publish(NodeRemoved(node_id))

    def _arm(self, node_id: str, last_seen: float) -> None:
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        self._timers[node_id] = self._clock.call_at(
            last_seen + self._ttl, self._due.put_nowait, node_id
        )

    async def _expire_due(self) -> None:
        while True:
            node_id = await self._due.get()
            await self._expire(node_id)

    async def _expire(self, node_id: str) -> None:
        last_seen = self._last_seen.get(node_id)
        if last_seen is None or self._health.get(node_id) != Health.HEALTHY:
            return
        if self._clock.now() < last_seen + self._ttl:
            return  # a heartbeat came in after the timer fired
        try:
            stored = await self._store.get_node(node_id)
        except NotFound:
            return  # removed meanwhile
        node = msgspec.structs.replace(stored, health=Health.UNHEALTHY)
        await self._store.upsert_node(node)
        self._health[node_id] = Health.UNHEALTHY
        log.warning("node_unhealthy", node_id=node_id, last_seen=last_seen)
        self._bus.publish(NodeChanged(node))
