"""In-process API tests: the real app, a real SQLite file, aiohttp's test client."""

from contextlib import AsyncExitStack

import pytest
from aiohttp.test_utils import TestClient, TestServer

from plum.api.app import build_app
from plum.config import load_config
from plum.roles.controller import ControllerRole
from plum.testing import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def make_client(tmp_path, clock):
    """`await make_client(**env)` -> (client, services) for a controller with that config."""
    stack = AsyncExitStack()

    async def make(dist=None, **environ):
        config = load_config(
            None,
            environ={"CONTROLLER_DATA_DIR": str(tmp_path / "data"),
                     "CONTROLLER_GRPC_ADDR": "127.0.0.1:0", **environ},
            dotenv=None,
        )
        role = ControllerRole(config, clock)
        await role.start_core(stack)
        kwargs = {"dist": dist} if dist is not None else {}
        client = TestClient(TestServer(build_app(role.services, **kwargs)))
        await client.start_server()
        stack.push_async_callback(client.close)
        return client, role.services

    yield make
    await stack.aclose()


@pytest.fixture
async def api(make_client):
    client, _ = await make_client()
    return client


@pytest.fixture
async def api_services(make_client):
    return await make_client()
