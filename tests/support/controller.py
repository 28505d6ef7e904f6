"""An in-process controller for tests: the real core on a SQLite file, gRPC on a free port,
and aiohttp's test client for the REST API."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from plum.api.app import build_app
from plum.config import load_config
from plum.roles.controller import ControllerRole
from plum.testing import FakeClock


async def start_controller(
    stack: AsyncExitStack, data_dir: Path, clock: FakeClock, *, dist: Path | None = None,
    **environ: str,
) -> tuple[TestClient, ControllerRole]:
    """Start it with `environ` as its configuration; `stack` stops it."""
    config = load_config(
        None,
        environ={"CONTROLLER_DATA_DIR": str(data_dir), "CONTROLLER_GRPC_ADDR": "127.0.0.1:0",
                 **environ},
        dotenv=None,
    )
    role = ControllerRole(config, clock)
    await role.start_core(stack)
    kwargs = {"dist": dist} if dist is not None else {}
    client = TestClient(TestServer(build_app(role.services, **kwargs)))
    await client.start_server()
    stack.push_async_callback(client.close)
    return client, role
