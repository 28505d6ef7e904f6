"""Real HTTP services on 127.0.0.1 free ports, and an in-process controller to register them."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
from aiohttp.test_utils import TestClient, TestServer

from plum.api.app import build_app
from plum.config import load_config
from plum.roles.controller import ControllerRole
from plum.testing import FakeClock
from tests.discovery.fakes import FakeService


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
        config = load_config(
            None,
            environ={"CONTROLLER_DATA_DIR": str(tmp_path / "data"),
                     "CONTROLLER_GRPC_ADDR": "127.0.0.1:0"},
            dotenv=None,
        )
        role = ControllerRole(config, clock)
        await role.start_core(stack)
        client = TestClient(TestServer(build_app(role.services)))
        await client.start_server()
        stack.push_async_callback(client.close)
        yield client, role.services
