"""The executor protocol: `async run(request, ctx) -> ExecutionResult`.

An executor carries out one attempt of one task. User failures (non-zero exit, HTTP 5xx,
an exception in a worker) are results with `ok=False`, never exceptions. Cancellation (a
cancel or a timeout) arrives as `asyncio.CancelledError` in `run`; cleanup that must finish
(killing a process group) goes in `finally`. The engine owns deadlines: an executor never
times itself out, it is cancelled.

`ctx.mark_running()` tells the engine the work has really started (a process spawned, a
request sent); until then the task stays `Pending` with `ctx.set_reason(...)` explaining why
(waiting for an agent, for a worker). Executors that start at once call it first thing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

import msgspec


class ExecutorKind(StrEnum):
    EMBEDDED = "embedded"
    SERVICE = "service"
    OS_PROCESS = "os_process"


class TargetKind(StrEnum):
    NONE = ""
    NODE = "node"
    APP = "app"
    SERVICE = "service"
    WORKER = "worker"


class ExecutionRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    task_id: str
    attempt: int
    name: str
    executor: ExecutorKind
    payload: Any = None
    target_kind: str = ""
    target_ref: str = ""
    labels: dict[str, str] = {}
    timeout_sec: float = 0.0


class ExecutionResult(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    result: Any = None
    error: str | None = None

    @classmethod
    def success(cls, result: Any = None) -> ExecutionResult:
        return cls(ok=True, result=result)

    @classmethod
    def failure(cls, error: str, result: Any = None) -> ExecutionResult:
        return cls(ok=False, error=error, result=result)


class LogStream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    WORKER = "worker"


class ExecutionContext(Protocol):
    async def mark_running(self, node: str = "") -> None:
        """The work has started (on `node`, when it runs on an agent or a worker); the task
        becomes `Running`, persisted before this returns."""

    def set_reason(self, reason: str) -> None:
        """Why the task is still `Pending` (shown to users)."""

    def log(self, stream: LogStream, line: str) -> None:
        """One line of output, for `GET /v1/tasks/{id}/logs?follow=true`. Never blocks."""


class Executor(Protocol):
    kind: ExecutorKind

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult: ...


class SimpleContext:
    """A context for running an executor outside the engine (tests, tools)."""

    def __init__(self) -> None:
        self.running = False
        self.node = ""
        self.reasons: list[str] = []
        self.lines: list[tuple[LogStream, str]] = []

    async def mark_running(self, node: str = "") -> None:
        self.running = True
        self.node = node

    def set_reason(self, reason: str) -> None:
        self.reasons.append(reason)

    def log(self, stream: LogStream, line: str) -> None:
        self.lines.append((stream, line))
