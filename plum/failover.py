"""Failover: moving instances off nodes that stay down, and cleaning up when they return.

It follows node health on the bus (`NodeChanged`, `NodeRemoved` from the node registry).
When a node turns `Unhealthy` and auto-migration is on, a timer on the clock is armed for
`grace` seconds later (no polling); a heartbeat before then disarms it. When it fires with
the node still down, `DeploymentService.migrate_off` re-places the instances of running
deployments elsewhere. A node that is removed is failed over at once.

Whether migration is on or not, a node that comes back healthy (or is removed) has its
failed-over leftovers dropped and its agent told to stop them (`retire_stale`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from plum.bus import END, RESYNC, Bus, NodeChanged, NodeRemoved, Subscription
from plum.clock import Clock, TimerHandle
from plum.deployments import DeploymentService
from plum.engine.model import Health
from plum.errors import PlumError
from plum.logging import get_logger
from plum.nodes import NodeRegistry

log = get_logger(__name__)


class Failover:
    def __init__(
        self,
        deployments: DeploymentService,
        nodes: NodeRegistry,
        bus: Bus,
        clock: Clock,
        *,
        enabled: bool,
        grace: float,
    ):
        self._deployments = deployments
        self._nodes = nodes
        self._bus = bus
        self._clock = clock
        self.enabled = enabled
        self._grace = grace
        self._health: dict[str, Health] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._due: asyncio.Queue[str] = asyncio.Queue()
        self._busy = False
        self._sub: Subscription | None = None
        self._progress = asyncio.Condition()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Failover]:
        # Subscribe before reading the nodes, so no change falls in between.
        with self._bus.subscribe({"nodes"}) as sub:
            self._sub = sub
            await self._resync()
            async with asyncio.TaskGroup() as tg:
                workers = [
                    tg.create_task(self._follow(sub), name="failover-follow"),
                    tg.create_task(self._fail_over_due(), name="failover-migrate"),
                ]
                try:
                    yield self
                finally:
                    for worker in workers:
                        worker.cancel()
                    for timer in self._timers.values():
                        timer.cancel()
                    self._timers.clear()

    def armed_nodes(self) -> set[str]:
        """Nodes whose failover timer is running."""
        return set(self._timers)

    async def wait_idle(self) -> None:
        """Until every node event published so far is handled (tests use this)."""
        async with self._progress:
            await self._progress.wait_for(
                lambda: not self._busy and (self._sub is None or self._sub.pending() == 0)
            )

    # -- following node health
    async def _follow(self, sub: Subscription) -> None:
        while True:
            item = await sub.get()
            self._busy = True
            try:
                if item is END:
                    return
                if item is RESYNC:
                    await self._resync()
                else:
                    match item.event:
                        case NodeChanged(node=node):
                            await self._on_health(node.node_id, node.health)
                        case NodeRemoved(node_id=node_id):
                            await self._on_removed(node_id)
            except PlumError as exc:  # the store is failing: the next event tries again
                log.error("failover_event_failed", error=exc.message)
            finally:
                self._busy = False
                async with self._progress:
                    self._progress.notify_all()

    async def _resync(self) -> None:
        """Rebuild what is known of every node (at start, and after a bus resync)."""
        offset = 0
        while True:
            page = await self._nodes.list(limit=1000, offset=offset)
            for node in page.items:
                await self._on_health(node.node_id, node.health)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    async def _on_health(self, node_id: str, health: Health) -> None:
        previous = self._health.get(node_id)
        self._health[node_id] = health
        if health == Health.HEALTHY:
            self._disarm(node_id)
            if previous != Health.HEALTHY:
                await self._deployments.retire_stale(node_id)
        elif node_id not in self._timers:
            self._arm(node_id)

    async def _on_removed(self, node_id: str) -> None:
        self._disarm(node_id)
        self._health.pop(node_id, None)
        if self.enabled:
            await self._deployments.migrate_off(node_id)
        await self._deployments.retire_stale(node_id)

    # -- the timers
    def _arm(self, node_id: str) -> None:
        if not self.enabled:
            return
        when = self._clock.now() + self._grace
        self._timers[node_id] = self._clock.call_at(when, self._due.put_nowait, node_id)
        log.info("node_failover_armed", node_id=node_id, at=round(when, 3))

    def _disarm(self, node_id: str) -> None:
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
            log.info("node_failover_disarmed", node_id=node_id)

    async def _fail_over_due(self) -> None:
        while True:
            node_id = await self._due.get()
            self._timers.pop(node_id, None)
            if self._health.get(node_id) != Health.UNHEALTHY:
                continue  # it came back (or went) meanwhile
            try:
                moved = await self._deployments.migrate_off(node_id)
            except PlumError as exc:
                log.error("node_failover_failed", node_id=node_id, error=exc.message)
                continue
            log.warning("node_failed_over", node_id=node_id, instances=moved)
