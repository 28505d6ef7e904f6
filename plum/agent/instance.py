"""One app instance on an agent: a task that keeps its process group as the assignment says.

It downloads and extracts the app (through `install`), starts it in its own directory with
the app environment, reports every phase change, restarts it after a crash with exponential
backoff on the injected clock, and stops it (SIGTERM to the group, SIGKILL after
`kill_grace`). It waits only on futures: a change of assignment, the process's exit (a
pidfd), a clock timer.

Restart policy: a non-zero exit (or a signal) is `Failed` and restarted; a clean exit (code
0) is `Completed` and stays so until the assignment changes. `restarts` counts automatic
restarts; the backoff doubles from `backoff_base` to `backoff_max` and starts over once the
process has stayed up `STABLE_AFTER` seconds. With services, the instance is healthy once
the first service port accepts a connection at the node's address, where discovery sends
clients (`node_ip`, given to the app as `PLUM_NODE_IP`; tried until `HEALTH_DEADLINE`);
without, as soon as it runs.

`instance.json` in the directory records the running process (pid, start time, assignment)
for the next agent, which hands it to `run()` as a `Leftover` to adopt.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import msgspec

from plum.agent.artifacts import AppMeta, read_meta_file
from plum.agent.processes import AppProcess, OutputPump, RotatingLog
from plum.agent.protocol import (
    Assignment,
    DesiredState,
    InstancePhase,
    InstanceStatus,
    ServiceEndpoint,
)
from plum.clock import Clock, clock_timer
from plum.errors import Invalid, TooLarge, Unavailable
from plum.logging import get_logger
from plum.procgroup import run_to_completion, signal_name

log = get_logger(__name__)

STATE_FILE = "instance.json"
LOG_FILE = "instance.log"
PIPE_FILE = "instance.pipe"
STABLE_AFTER = 60.0  # seconds up after which a crash counts as the first again
HEALTH_DEADLINE = 60.0  # for the first service port to accept a connection
_PROBE_FIRST, _PROBE_MAX, _PROBE_CONNECT = 0.05, 1.0, 2.0

Report = Callable[[InstanceStatus], None]
Install = Callable[[Assignment, Path], Awaitable[AppMeta]]


@dataclass(frozen=True)
class InstanceConfig:
    """What every instance of one supervisor shares."""

    node_id: str
    controller_base: str
    grpc_addr: str
    kill_grace: float
    backoff_base: float
    backoff_max: float
    log_max_bytes: int
    log_backups: int
    node_ip: str = "127.0.0.1"  # the agent's address: apps listen there, probes go there


class State(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """instance.json: what the next agent needs to recognise and adopt a running instance."""

    pid: int
    pgid: int
    start_ticks: int
    started_at: float
    restarts: int = 0
    assignment: Assignment


@dataclass
class Leftover:
    """An instance directory an earlier agent left: adopted if assigned again, else removed."""

    instance_id: str
    dir: Path
    state: State | None  # set when its process is still alive
    process: AppProcess | None

    def alive(self) -> bool:
        return self.process is not None and not self.process.exited.done()


class Instance:
    """One assigned instance; `run()` keeps the process in line with the assignment."""

    task: asyncio.Task

    def __init__(
        self,
        assignment: Assignment,
        *,
        directory: Path,
        config: InstanceConfig,
        clock: Clock,
        report: Report,
        install: Install,
    ):
        self._config = config
        self._clock = clock
        self._report_to = report
        self._install = install
        self._loop = asyncio.get_running_loop()
        self.assignment = assignment
        self.dir = directory
        self.removed = False
        self.restarts = 0
        self.status = InstanceStatus(
            instance_id=assignment.instance_id, node_id=config.node_id,
            phase=InstancePhase.PENDING, deployment_id=assignment.deployment_id,
        )
        self._changed: asyncio.Future[None] = self._loop.create_future()
        self._process: AppProcess | None = None
        self._pump: OutputPump | None = None
        self._probe: asyncio.Task | None = None
        self._spec: Assignment | None = None  # what the files and the process are for
        self._meta = AppMeta()
        self._prepared = False
        self._completed = False
        self._restart_due = False
        self._crashes = 0  # in a row, for the backoff
        self._started = 0.0  # clock.monotonic() at start
        self._stop_on_close = True
        self._closing = False
        self._begun = False
        self._tg: asyncio.TaskGroup | None = None  # owns the health probe

    # --- from Supervisor.apply ----------------------------------------------------------

    def assign(self, assignment: Assignment) -> None:
        if assignment != self.assignment:
            self.assignment = assignment
            self._signal_change()

    def remove(self) -> None:
        self.removed = True
        self._signal_change()

    def close(self, *, stop: bool) -> None:
        """End the task; its process is stopped, or left running for the next agent."""
        self._stop_on_close, self._closing = stop, True
        self._signal_change()
        if self._begun:  # a task cancelled before its first step would skip its cleanup
            self.task.cancel()

    def _signal_change(self) -> None:
        if not self._changed.done():
            self._changed.set_result(None)

    # --- the task -----------------------------------------------------------------------

    async def run(self, left: Leftover | None, previous: asyncio.Task | None) -> None:
        """Until removed or closed. `previous`: a task of the same id still being removed."""
        self._begun = True
        try:
            if previous is not None and not self._closing:
                await asyncio.wait([previous])
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    if left is not None:
                        self._take_over(left)
                    await self._follow_assignment()
                finally:
                    self._cancel_probe()
        finally:
            await run_to_completion(self._finish())

    async def _follow_assignment(self) -> None:
        while not (self.removed or self._closing):
            if self._changed.done():
                self._changed = self._loop.create_future()
            if self.assignment.desired is DesiredState.RUNNING:
                await self._keep_running()
            else:
                await self._stop()
                self._completed, self._crashes, self._restart_due = False, 0, False
                self._report(InstancePhase.STOPPED)
                await self._wait()

    async def _keep_running(self) -> None:
        """Start, watch and restart the process until the assignment changes."""
        spec = _spec(self.assignment)
        if spec != self._spec:
            await self._stop()
            self._spec, self._prepared, self._completed = spec, False, False
            self._crashes, self._restart_due = 0, False
        while not self._completed:
            if self._process is None:
                retry = await self._start()
                if retry is not None:
                    if not await self._wait(delay=retry):
                        return
                    continue
            assert self._process is not None
            if not await self._wait(self._process.exited):
                return
            retry = self._on_exit()
            if retry is not None and not await self._wait(delay=retry):
                return
        await self._wait()

    async def _wait(self, future: asyncio.Future | None = None, delay: float | None = None) -> bool:
        """Wait for `future` or `delay` seconds on the clock (neither: for a change);
        False when the assignment changed first."""
        waits: list[asyncio.Future] = [self._changed]
        handle = None
        if future is not None:
            waits.append(future)
        if delay is not None and delay != math.inf:
            timer, handle = clock_timer(self._clock, delay)
            waits.append(timer)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if handle is not None:
                handle.cancel()
        return not self._changed.done()

    async def _start(self) -> float | None:
        """Prepare the files (once per spec) and spawn. None once running, else how long to
        wait before trying again (`inf`: until the assignment changes)."""
        if not self._prepared:
            self._report(InstancePhase.PENDING, message="downloading artifact")
            try:
                self._meta = await self._install(self.assignment, self.dir)
            except (Invalid, TooLarge) as exc:
                self._report(InstancePhase.FAILED, message=exc.message)
                return math.inf
            except Unavailable as exc:
                delay = self._backoff()
                self._report(InstancePhase.FAILED, message=f"{exc.message}; retrying in {delay:g}s")
                return delay
            self._prepared = True
        if self._restart_due:
            self.restarts += 1
            self._restart_due = False
        self._report(InstancePhase.PENDING, message="starting")
        try:
            self._spawn()
        except ValueError as exc:  # a NUL in the command or the environment
            self._report(InstancePhase.FAILED, message=f"cannot start: {exc}")
            return math.inf
        except OSError as exc:
            delay = self._backoff()
            self._restart_due = True
            self._report(
                InstancePhase.FAILED,
                message=f"cannot start: {exc.strerror or exc}; restarting in {delay:g}s",
            )
            return delay
        return None

    def _spawn(self) -> None:
        pump = self._open_pump()
        output, env = pump.app_end(), self._env()
        try:
            try:
                process = AppProcess.spawn(self._argv(), cwd=self.dir, env=env, output=output)
            except OSError as exc:
                if exc.errno != errno.ENOEXEC or self.assignment.start_cmd:
                    raise
                argv = ["/bin/sh", "./start.sh"]  # a start.sh without a #! line
                process = AppProcess.spawn(argv, cwd=self.dir, env=env, output=output)
        finally:
            os.close(output)
        self._process = process
        self._started = self._clock.monotonic()
        write_state(self.dir / STATE_FILE, State(
            pid=process.pid, pgid=process.pid, start_ticks=process.start_ticks,
            started_at=self._clock.now(), restarts=self.restarts, assignment=self.assignment,
        ))
        log.info("instance_started", instance_id=self.assignment.instance_id, pid=process.pid)
        self._report_running("")

    def _argv(self) -> list[str]:
        if self.assignment.start_cmd:
            return ["/bin/sh", "-c", self.assignment.start_cmd]
        return ["./start.sh"]

    def _env(self) -> dict[str, str]:
        a, config = self.assignment, self._config
        return {
            **os.environ,
            "PLUM_INSTANCE_ID": a.instance_id,
            "PLUM_APP_NAME": a.app_name or self._meta.name,
            "PLUM_APP_VERSION": a.app_version or self._meta.version,
            "WORKER_NODE_ID": config.node_id,
            "PLUM_NODE_IP": config.node_ip,
            "CONTROLLER_BASE": config.controller_base,
            "CONTROLLER_GRPC_ADDR": config.grpc_addr,
            # The interpreter Plum runs on, so Python apps can use the Plum SDK.
            "PLUM_PYTHON": os.environ.get("PLUM_PYTHON", sys.executable),
            **a.env,
        }

    def _services(self) -> list[ServiceEndpoint]:
        return list(self.assignment.services or self._meta.services)

    def _open_pump(self) -> OutputPump:
        if self._pump is None:
            config = self._config
            sink = RotatingLog(self.dir / LOG_FILE, config.log_max_bytes, config.log_backups)
            self._pump = OutputPump(self.dir / PIPE_FILE, sink)
        return self._pump

    def _on_exit(self) -> float | None:
        """Record the end of the process; the backoff before the restart, None if Completed."""
        assert self._process is not None
        code = self._process.exited.result()
        self._forget_process()
        log.info("instance_exited", instance_id=self.assignment.instance_id, exit_code=code)
        if code == 0:
            self._completed = True
            self._report(InstancePhase.COMPLETED, exit_code=0, message="exited with code 0")
            return None
        if self._clock.monotonic() - self._started >= STABLE_AFTER:
            self._crashes = 0
        delay = self._backoff()
        self._restart_due = True
        self._report(
            InstancePhase.FAILED, exit_code=code,
            message=f"{_describe_exit(code)}; restarting in {delay:g}s",
        )
        return delay

    def _backoff(self) -> float:
        self._crashes += 1
        config = self._config
        return min(config.backoff_max, config.backoff_base * 2 ** min(self._crashes - 1, 62))

    async def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        if not process.exited.done():
            await process.terminate(self._clock, self._config.kill_grace)
        log.info("instance_stopped", instance_id=self.assignment.instance_id, pid=process.pid)
        self._forget_process()

    def _forget_process(self) -> None:
        self._process = None
        self._cancel_probe()
        if self._pump is not None:
            self._pump.drain()
        (self.dir / STATE_FILE).unlink(missing_ok=True)

    async def _finish(self) -> None:
        stopping = self.removed or (self._process is not None and self._stop_on_close)
        if stopping:
            await self._stop()
        elif self._process is not None:
            self._process.detach()  # left running with its state file, for the next agent
        if self._pump is not None:
            self._pump.close()
        if self.removed:
            await asyncio.to_thread(shutil.rmtree, self.dir, ignore_errors=True)
        if stopping:
            self._report(InstancePhase.STOPPED, message="removed" if self.removed else "")

    # --- adoption -----------------------------------------------------------------------

    def _take_over(self, left: Leftover) -> None:
        """Watch the process an earlier agent left, if alive; the loop then keeps, replaces or
        stops it like any other (kept only when assigned Running with the same spec)."""
        if not left.alive() or left.state is None:
            (self.dir / STATE_FILE).unlink(missing_ok=True)
            return
        self._process, state = left.process, left.state
        self._spec = _spec(state.assignment)
        self._prepared = True
        self._meta = read_meta_file(self.dir)
        self.restarts = state.restarts
        self._started = self._clock.monotonic() - max(0.0, self._clock.now() - state.started_at)
        self._open_pump()
        adopt = self.assignment.desired is DesiredState.RUNNING and not self._closing
        if adopt and _spec(self.assignment) == self._spec:
            log.info("instance_adopted", instance_id=left.instance_id, pid=self._process.pid)
            self._report_running("adopted after an agent restart")

    # --- reporting and health -----------------------------------------------------------

    def _cancel_probe(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def _report_running(self, message: str) -> None:
        assert self._process is not None
        services = self._services()
        self._report(
            InstancePhase.RUNNING, pid=self._process.pid, healthy=not services, message=message
        )
        if services:
            self._probe = self._tg.create_task(
                self._wait_healthy(self._config.node_ip, services[0].port, self._process.pid),
                name=f"probe-{self.assignment.instance_id}",
            )

    async def _wait_healthy(self, host: str, port: int, pid: int) -> None:
        """Healthy once `host:port` accepts a connection, tried until the deadline."""
        deadline = self._clock.monotonic() + HEALTH_DEADLINE
        delay = _PROBE_FIRST
        while not await _accepts(host, port):
            if self._clock.monotonic() + delay > deadline:
                self._report(
                    InstancePhase.RUNNING, pid=pid,
                    message=f"port {port} accepted no connection within {HEALTH_DEADLINE:g}s",
                )
                return
            await self._clock.sleep(delay)
            delay = min(delay * 2, _PROBE_MAX)
        self._report(InstancePhase.RUNNING, pid=pid, healthy=True, message=self.status.message)

    def _report(
        self,
        phase: InstancePhase,
        *,
        pid: int | None = None,
        exit_code: int | None = None,
        healthy: bool = False,
        message: str = "",
    ) -> None:
        """Report a status unless it says nothing new."""
        status = InstanceStatus(
            instance_id=self.assignment.instance_id, node_id=self._config.node_id, phase=phase,
            deployment_id=self.assignment.deployment_id, pid=pid, exit_code=exit_code,
            restarts=self.restarts, message=message, healthy=healthy,
            reported_at=self.status.reported_at,
        )
        if status == self.status:
            return
        self.status = msgspec.structs.replace(status, reported_at=self._clock.now())
        self._report_to(self.status)


def _spec(assignment: Assignment) -> Assignment:
    """What decides the process: everything but `desired`."""
    return msgspec.structs.replace(assignment, desired=DesiredState.RUNNING)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (exit code unknown: started by an earlier agent)"
    if code < 0:
        return f"killed by signal {signal_name(-code)}"
    return f"exited with code {code}"


async def _accepts(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(_PROBE_CONNECT):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
    return True


def read_state(path: Path) -> State | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=State)
    except (OSError, msgspec.DecodeError):
        return None


def write_state(path: Path, state: State) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(msgspec.json.encode(state))
    tmp.replace(path)
