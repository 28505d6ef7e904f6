"""The `embedded` executor: builtins run in the controller's loop; any other name goes to
a registered worker serving it (`plum.executors.workers`), waiting `Pending` until one can
take it."""

from __future__ import annotations

from plum.clock import Clock
from plum.executors.base import ExecutionContext, ExecutionRequest, ExecutionResult, ExecutorKind
from plum.executors.builtin import BUILTINS
from plum.executors.workers import WorkerPool


class EmbeddedExecutor:
    kind = ExecutorKind.EMBEDDED

    def __init__(self, clock: Clock, workers: WorkerPool | None = None):
        self._clock = clock
        self.workers = workers if workers is not None else WorkerPool()

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        builtin = BUILTINS.get(request.name)
        if builtin is None:
            return await self.workers.run(request, ctx)
        await ctx.mark_running()
        return await builtin[0](request.payload, self._clock)
