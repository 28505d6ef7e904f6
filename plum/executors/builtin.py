"""The builtin tasks: `builtin.echo`, `builtin.delay`, `builtin.sleep`, `builtin.fail`."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from plum.clock import Clock
from plum.engine.tasks import TaskDef
from plum.executors.base import ExecutionResult, ExecutorKind

PREFIX = "builtin."
Builtin = Callable[[Any, Clock], Awaitable[ExecutionResult]]


async def echo(payload: Any, clock: Clock) -> ExecutionResult:
    return ExecutionResult.success({"echo": payload})


async def delay(payload: Any, clock: Clock) -> ExecutionResult:
    seconds = payload.get("seconds", 1) if isinstance(payload, dict) else 1
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return ExecutionResult.failure(f"payload.seconds must be a number >= 0, got {seconds!r}")
    await clock.sleep(seconds)
    return ExecutionResult.success({"seconds": seconds})


async def fail(payload: Any, clock: Clock) -> ExecutionResult:
    message = payload.get("message") if isinstance(payload, dict) else None
    return ExecutionResult.failure(str(message) if message else "builtin fail")


BUILTINS: dict[str, tuple[Builtin, str]] = {
    "builtin.echo": (echo, "Returns its payload as {\"echo\": payload}."),
    "builtin.delay": (delay, "Waits payload.seconds (default 1) without blocking anything."),
    "builtin.sleep": (delay, "Same as builtin.delay."),
    "builtin.fail": (fail, "Fails with payload.message (default \"builtin fail\")."),
}


def builtin_def_id(name: str) -> str:
    """Builtins have the same id in every installation."""
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


def builtin_defs(now: float) -> list[TaskDef]:
    return [
        TaskDef(def_id=builtin_def_id(name), name=name, executor=ExecutorKind.EMBEDDED.value,
                description=text, builtin=True, created_at=round(now, 3))
        for name, (_, text) in BUILTINS.items()
    ]
