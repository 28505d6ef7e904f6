"""The `os_process` executor: run a command in its own process group, capture its output.

`parse_os_process_payload` checks a payload where it enters (the API, at task creation).
`run_process` spawns the command with `start_new_session=True`, so the child leads a new
process group; output arrives through a `SubprocessProtocol` (no reader tasks, no line-length
limit), goes line by line to `log` and is kept up to `output_cap` bytes per stream. The run
ends when the leader exits and both pipes reach EOF, or `drain_grace` seconds after the exit
when background children still hold them. Background children of a finished process are left
alone; on cancellation (a cancel or the engine's deadline) the whole group gets SIGTERM, then
SIGKILL once the leader has exited or `kill_grace` has passed.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import shlex
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from plum.clock import Clock
from plum.errors import Invalid
from plum.executors.base import (
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    ExecutorKind,
    LogStream,
)
from plum.procgroup import run_to_completion, signal_name, stop_group

DEFAULT_OUTPUT_CAP = 1024 * 1024
DEFAULT_KILL_GRACE = 5.0
DEFAULT_DRAIN_GRACE = 1.0
MAX_LOG_LINE = 64 * 1024  # a longer line reaches `log` in pieces of this many characters

LogFn = Callable[[LogStream, str], None]
OnSpawn = Callable[[int], Awaitable[None]]


class OsProcessPayload(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    command: str
    args: list[str] = []
    working_dir: str | None = None
    env: dict[str, str] = {}
    input: str | None = None
    shell: bool = False


_MSGSPEC_ERROR = re.compile(r"^(?P<detail>.*?)(?: - at `\$(?P<path>.*)`)?$", re.DOTALL)
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<name>\w+)`$")


def parse_os_process_payload(payload: Any) -> OsProcessPayload:
    """Validate a decoded JSON payload; `Invalid.field` names the field (`payload.args`)."""
    try:
        spec = msgspec.convert(payload, OsProcessPayload)
    except msgspec.ValidationError as exc:
        raise _invalid_from(str(exc)) from None
    _check_strings(spec)
    return spec


def _invalid_from(text: str) -> Invalid:
    match = _MSGSPEC_ERROR.match(text)
    detail, path = match["detail"], match["path"] or ""
    if missing := _MISSING_FIELD.match(detail):
        field = f"payload.{missing['name']}"
        return Invalid(f"{field} is required", field=field)
    top = re.match(r"\.(\w+)", path)
    field = f"payload.{top[1]}" if top else "payload"
    where = "payload" + path.replace("[...]", "")
    return Invalid(f"invalid {where}: {detail}", field=field)


def _check_strings(spec: OsProcessPayload) -> None:
    if not spec.command.strip():
        raise Invalid("payload.command must not be empty", field="payload.command")
    if "\0" in spec.command:
        raise Invalid("payload.command contains a NUL character", field="payload.command")
    if any("\0" in arg for arg in spec.args):
        raise Invalid("payload.args contains a NUL character", field="payload.args")
    if spec.working_dir is not None and "\0" in spec.working_dir:
        raise Invalid("payload.workingDir contains a NUL character", field="payload.workingDir")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise Invalid(f"payload.env has an invalid variable: {key!r}", field="payload.env")


class _Capture:
    """One output stream: the first `cap` bytes kept, every line passed to `log`."""

    def __init__(self, stream: LogStream, cap: int, log: LogFn | None):
        self.stream = stream
        self.cap = cap
        self.log = log
        self.kept = bytearray()
        self.truncated = False
        self.closed = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial = ""

    def feed(self, data: bytes) -> None:
        room = self.cap - len(self.kept)
        if len(data) > room:
            self.truncated = True
        self.kept += data[: max(room, 0)]
        if self.log is not None:
            self._emit(self._decoder.decode(data))

    def finish(self) -> None:
        self.closed = True
        if self.log is not None:
            self._emit(self._decoder.decode(b"", final=True))
            if self._partial:
                self.log(self.stream, self._partial)
                self._partial = ""

    def text(self) -> str:
        # a cut in the middle of a character drops that character instead of replacing it
        return codecs.getincrementaldecoder("utf-8")("replace").decode(
            bytes(self.kept), final=not self.truncated
        )

    def _emit(self, text: str) -> None:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self.log(self.stream, line)
        while len(self._partial) >= MAX_LOG_LINE:
            self.log(self.stream, self._partial[:MAX_LOG_LINE])
            self._partial = self._partial[MAX_LOG_LINE:]


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, cap: int, log: LogFn | None):
        loop = asyncio.get_running_loop()
        self.captures = {
            1: _Capture(LogStream.STDOUT, cap, log),
            2: _Capture(LogStream.STDERR, cap, log),
        }
        self.exited = loop.create_future()
        self.drained = loop.create_future()  # both pipes at EOF
        self.failed = loop.create_future()  # a bug in a callback (`log` raised)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._guarded(self.captures[fd].feed, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd not in self.captures:
            return
        self._guarded(self.captures[fd].finish)
        if all(c.closed for c in self.captures.values()) and not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def detach(self) -> None:
        """No more `log` calls: the run is over (pipes closed later report nothing)."""
        for capture in self.captures.values():
            capture.log = None

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            if not self.failed.done():
                self.failed.set_exception(exc)


async def run_process(
    spec: OsProcessPayload,
    *,
    clock: Clock,
    log: LogFn | None = None,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    kill_grace: float = DEFAULT_KILL_GRACE,
    extra_env: dict[str, str] | None = None,
    on_spawn: OnSpawn | None = None,
    drain_grace: float = DEFAULT_DRAIN_GRACE,
) -> ExecutionResult:
    """Run `spec` to completion; a cancellation kills the whole process group first."""
    if spec.working_dir and not os.path.isdir(spec.working_dir):
        return ExecutionResult.failure(f"working directory not found: {spec.working_dir}")
    started = clock.monotonic()
    spawned = await _spawn(spec, output_cap, log, extra_env)
    if isinstance(spawned, ExecutionResult):
        return spawned
    transport, proto = spawned
    pid = transport.get_pid()
    finished = False
    try:
        if on_spawn is not None:
            await on_spawn(pid)
        await _wait_first(proto.exited, proto.failed)
        # background children may hold the pipes open: wait for EOF only so long
        await _wait_first(proto.drained, proto.failed, timeout=drain_grace)
        finished = True
    finally:
        proto.detach()
        try:
            if not finished:
                await run_to_completion(stop_group(pid, proto.exited, kill_grace))
        finally:
            transport.close()
    return _result(spec, transport.get_returncode(), proto, clock.monotonic() - started)


async def _spawn(
    spec: OsProcessPayload, cap: int, log: LogFn | None, extra_env: dict[str, str] | None
) -> tuple[asyncio.SubprocessTransport, _Protocol] | ExecutionResult:
    argv = [spec.command, *spec.args]
    if spec.shell:
        argv = ["/bin/sh", "-c", " ".join([spec.command, *map(shlex.quote, spec.args)])]
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.subprocess_exec(
            lambda: _Protocol(cap, log),
            *argv,
            stdin=asyncio.subprocess.DEVNULL if spec.input is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=spec.working_dir or None,
            env={**os.environ, **(extra_env or {}), **spec.env},
            start_new_session=True,
        )
    except FileNotFoundError:
        return ExecutionResult.failure(f"command not found: {spec.command}")
    except PermissionError:
        return ExecutionResult.failure(f"permission denied: {spec.command}")
    except OSError as exc:
        return ExecutionResult.failure(f"cannot run {spec.command}: {exc.strerror or exc}")
    stdin = transport.get_pipe_transport(0)
    if stdin is not None and not stdin.is_closing():
        # close() flushes first; a child that exits without reading is not an error
        stdin.write(spec.input.encode())
        stdin.close()
    return transport, proto


def _result(
    spec: OsProcessPayload, code: int | None, proto: _Protocol, elapsed: float
) -> ExecutionResult:
    out, err = proto.captures[1], proto.captures[2]
    result: dict[str, Any] = {
        "command": spec.command,
        "args": list(spec.args),
        "workingDir": spec.working_dir,
        "exitCode": code,
        "durationMs": round(elapsed * 1000),
        "stdout": out.text(),
        "stderr": err.text(),
    }
    if out.truncated or err.truncated:
        result["truncated"] = True
    if code == 0:
        return ExecutionResult.success(result)
    if code is not None and code < 0:
        return ExecutionResult.failure(f"process killed by signal {signal_name(-code)}", result)
    return ExecutionResult.failure(f"process exited with code {code}", result)


async def _wait_first(*futures: asyncio.Future, timeout: float | None = None) -> None:
    """Wait until one future is done or `timeout` passes, cancelling none; raise its error."""
    done, _ = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for future in done:
        future.result()


class OsProcessExecutor:
    kind = ExecutorKind.OS_PROCESS

    def __init__(
        self,
        clock: Clock,
        *,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        kill_grace: float = DEFAULT_KILL_GRACE,
        extra_env: dict[str, str] | None = None,
    ):
        self.clock = clock
        self.output_cap = output_cap
        self.kill_grace = kill_grace
        self.extra_env = dict(extra_env or {})

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        try:
            spec = parse_os_process_payload(request.payload)
        except Invalid as exc:
            return ExecutionResult.failure(exc.message)

        async def on_spawn(pid: int) -> None:
            await ctx.mark_running()

        return await run_process(
            spec, clock=self.clock, log=ctx.log, output_cap=self.output_cap,
            kill_grace=self.kill_grace, extra_env=self.extra_env, on_spawn=on_spawn,
        )
