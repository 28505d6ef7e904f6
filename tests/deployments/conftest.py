"""Deployments with their real collaborators on a memory store, a fake clock and a fake hub."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from plum.apps import AppService
from plum.appzip import ZipLimits
from plum.bus import Bus
from plum.deployments import DeploymentService
from plum.discovery.registry import ServiceRegistry
from plum.failover import Failover
from plum.nodes import NodeRegistry
from plum.testing import FakeClock
from plum.testing.memory_store import MemoryStore
from tests.support.fake_hub import FakeHub

TTL = 15.0
GRACE = 5.0


class World:
    def __init__(self, tmp_path, *, enabled: bool):
        self.clock = FakeClock()
        self.bus = Bus(self.clock)
        self.store = MemoryStore()
        self.nodes = NodeRegistry(self.store, self.bus, self.clock, ttl=TTL)
        self.discovery = ServiceRegistry(self.store, self.bus, self.clock)
        self.apps = AppService(
            self.store, self.clock, artifacts_dir=tmp_path / "artifacts",
            limits=ZipLimits(max_total_bytes=2**20, max_entry_bytes=2**20, max_entries=100),
            max_upload_bytes=2**20,
        )
        self.deployments = DeploymentService(self.store, self.apps, self.nodes, self.discovery,
                                             self.bus, self.clock)
        self.hub = FakeHub()
        self.deployments.attach(self.hub)
        self.failover = Failover(self.deployments, self.nodes, self.bus, self.clock,
                                 enabled=enabled, grace=GRACE)

    async def start(self, stack: AsyncExitStack) -> World:
        await stack.enter_async_context(self.nodes.running())
        await stack.enter_async_context(self.deployments.running())
        await stack.enter_async_context(self.failover.running())
        return self


@pytest.fixture
async def make_world(tmp_path):
    """`await make_world(enabled=...)`: every component running until the test ends."""
    async with AsyncExitStack() as stack:

        async def make(*, enabled: bool = True) -> World:
            return await World(tmp_path, enabled=enabled).start(stack)

        yield make
