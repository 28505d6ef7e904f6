"""The `embedded` executor: builtins run in the controller's loop; any other name goes to
a registered worker serving it."""

from __future__ import annotations

from plum.clock import Clock
from plum.executors.base import ExecutionContext, ExecutionRequest, ExecutionResult, ExecutorKind
from plum.executors.builtin import BUILTINS


class EmbeddedExecutor:
    kind = ExecutorKind.EMBEDDED

    def __init__(self, clock: Clock):
        self._clock = clock

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        builtin = BUILTINS.get(request.name)
        if builtin is None:
            return ExecutionResult.failure(f"no worker serves task '{request.name}'")
        await ctx.mark_running()
        return await builtin[0](request.payload, self._clock)
