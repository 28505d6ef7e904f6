"""An in-process controller core with its gRPC server on a free port, a fake clock, and
aiohttp's test client for the REST side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from plum.api.context import Services
from plum.engine.tasks import TaskFilter, TaskState
from plum.testing import FakeClock
from tests.rpc.rawworker import RawWorker
from tests.support.controller import start_controller


@dataclass
class Controller:
    client: TestClient
    svc: Services
    grpc_addr: str
    clock: FakeClock
    stack: AsyncExitStack

    async def worker(self, worker_id: str, tasks: list[str], **kw) -> RawWorker:
        worker = RawWorker(self.grpc_addr, worker_id, tasks, **kw)
        self.stack.push_async_callback(worker.close)
        return worker


@asynccontextmanager
async def running_controller(data_dir: Path, **environ: str) -> AsyncIterator[Controller]:
    clock = FakeClock()
    async with AsyncExitStack() as stack:
        client, role = await start_controller(stack, data_dir, clock, **environ)
        workers = AsyncExitStack()
        ctl = Controller(client, role.services, role.grpc_addr, clock, workers)
        try:
            yield ctl
        finally:
            # Nothing is left for the engine to drain: stopping never waits its grace.
            engine = role.services.engine
            for state in (TaskState.PENDING, TaskState.RUNNING):
                page = await role.services.tasks.list_tasks(
                    TaskFilter(state=state), limit=1000, offset=0)
                for task in page.items:
                    if engine.get_active(task.task_id) is not None:
                        await engine.cancel(task.task_id)
            await workers.aclose()


@pytest.fixture
async def controller(tmp_path):
    async with running_controller(tmp_path / "data") as ctl:
        yield ctl
