"""Real HTTP services on 127.0.0.1 free ports, and an in-process controller to register them."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from plum.testing import FakeClock
from tests.discovery.fakes import FakeService
from tests.support.controller import start_controller


@pytest.fixture
async def fake_services():
    """`await fake_services(name)` starts a service; all are stopped at the end."""
    started: list[FakeService] = []

    async def start(name: str) -> FakeService:
        service = await FakeService(name).start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def controller(tmp_path, clock):
    """(client, services) of an in-process controller on a real SQLite file."""
    async with AsyncExitStack() as stack:
        client, role = await start_controller(stack, tmp_path / "data", clock)
        yield client, role.services
