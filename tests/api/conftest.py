"""In-process API tests: the real app, a real SQLite file, aiohttp's test client."""

from contextlib import AsyncExitStack

import pytest

from plum.testing import FakeClock
from tests.support.controller import start_controller


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def make_client(tmp_path, clock):
    """`await make_client(**env)` -> (client, services) for a controller with that config."""
    stack = AsyncExitStack()

    async def make(dist=None, **environ):
        client, role = await start_controller(stack, tmp_path / "data", clock, dist=dist,
                                              **environ)
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
