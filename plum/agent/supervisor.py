"""The app supervisor: keeps a node's assigned app instances as the controller wants them.

`apply()` takes the controller's assignments (the full set, or changes plus removed ids);
each instance is an `Instance` task in the supervisor's `TaskGroup`, working in
`data_dir/<node>/<instance>/`. Downloads are cached under `data_dir/<node>/.cache/`.

Apps outlive the agent (see `processes`). When `running()` starts, it looks through the
instance directories an earlier agent left: a live process (pid and start time from
`instance.json`) is watched and adopted once it is assigned again unchanged, so there is no
second process; a dead one leaves no group behind. What the first full assignment set does
not name is stopped and its directory removed. On exit every instance is stopped, unless
`detach()` (or `running(stop_on_exit=False)`) leaves them for the next agent.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import msgspec

from plum.agent.artifacts import AppMeta, ArtifactStore, extract_app
from plum.agent.instance import (
    LOG_FILE,
    PIPE_FILE,
    STATE_FILE,
    Instance,
    InstanceConfig,
    Leftover,
    Report,
    read_state,
)
from plum.agent.processes import AppProcess, kill_stale_group
from plum.agent.protocol import Assignment, Assignments, InstancePhase, InstanceStatus
from plum.clock import Clock
from plum.errors import InvalidState
from plum.logging import get_logger
from plum.procgroup import run_to_completion

log = get_logger(__name__)

CACHE_DIR = ".cache"
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class Supervisor:
    def __init__(
        self,
        *,
        node_id: str,
        data_dir: Path,
        clock: Clock,
        report: Report,
        controller_base: str,
        grpc_addr: str,
        token: str | None = None,
        node_ip: str = "127.0.0.1",
        kill_grace: float = 5.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        log_max_bytes: int = 1 << 20,
        log_backups: int = 3,
    ):
        self.node_id = node_id
        self.clock = clock
        self.root = data_dir / node_id
        self.config = InstanceConfig(
            node_id=node_id, controller_base=controller_base, grpc_addr=grpc_addr,
            kill_grace=kill_grace, backoff_base=backoff_base, backoff_max=backoff_max,
            log_max_bytes=log_max_bytes, log_backups=log_backups, node_ip=node_ip,
        )
        self.reserved = frozenset(
            {STATE_FILE, f".{STATE_FILE}.tmp", PIPE_FILE, LOG_FILE}
            | {f"{LOG_FILE}.{n}" for n in range(1, log_backups + 1)}
        )
        self._report = report
        self._token = token
        self._instances: dict[str, Instance] = {}
        self._retiring: dict[str, asyncio.Task] = {}  # stopping and removing; a re-add waits
        self._leftovers: dict[str, Leftover] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._artifacts: ArtifactStore | None = None
        self._stop_on_exit = True
        self._closing = False

    # --- lifecycle ----------------------------------------------------------------------

    @asynccontextmanager
    async def running(self, *, stop_on_exit: bool = True) -> AsyncIterator[Supervisor]:
        """Run instances until exit, which stops them all, or leaves them running for the
        next agent to adopt when `stop_on_exit` is False or `detach()` was called."""
        self._stop_on_exit, self._closing = stop_on_exit, False
        self._instances.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._artifacts = ArtifactStore(
                self.root / CACHE_DIR, session, controller_base=self.config.controller_base,
                token=self._token,
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    self._find_leftovers()
                    try:
                        yield self
                    finally:
                        self._close()
            finally:
                self._tg = self._artifacts = None

    def detach(self) -> None:
        """On exit, leave every instance running (an agent restart: the next one adopts them)."""
        self._stop_on_exit = False

    def _close(self) -> None:
        self._closing = True
        for instance in self._instances.values():
            instance.close(stop=self._stop_on_exit)
        for left in self._leftovers.values():
            if not left.alive():
                continue
            if self._stop_on_exit:
                self._start_discard(left, remove_dir=False)
            else:
                left.process.detach()
        self._leftovers.clear()

    # --- the interface ------------------------------------------------------------------

    def apply(self, message: Assignments) -> None:
        """`full`: the complete set, anything else goes; otherwise changes plus `removed`."""
        if self._tg is None or self._closing:
            raise InvalidState("the supervisor is not running")
        wanted: dict[str, Assignment] = {}
        for assignment in message.items:
            if not _INSTANCE_ID.match(assignment.instance_id):
                log.warning("assignment_refused", instance_id=assignment.instance_id)
                continue
            wanted[assignment.instance_id] = assignment
            if (instance := self._instances.get(assignment.instance_id)) is not None:
                instance.assign(assignment)
            else:
                self._launch(assignment)
        gone = set(message.removed)
        if message.full:
            gone |= self._instances.keys() | self._leftovers.keys()
        for instance_id in gone - wanted.keys():
            if instance_id in self._instances:
                instance = self._instances.pop(instance_id)
                instance.remove()
                self._retire(instance_id, instance.task)
            elif (left := self._leftovers.pop(instance_id, None)) is not None:
                self._start_discard(left, remove_dir=True)

    def statuses(self) -> list[InstanceStatus]:
        """Every instance this node has, including ones found running on start (for `hello`)."""
        found = [self._leftover_status(left) for left in self._leftovers.values() if left.alive()]
        return [instance.status for instance in self._instances.values()] + found

    def log_path(self, instance_id: str) -> Path:
        return self.root / instance_id / LOG_FILE

    # --- instances ----------------------------------------------------------------------

    def _launch(self, assignment: Assignment) -> None:
        instance_id = assignment.instance_id
        instance = Instance(
            assignment, directory=self.root / instance_id, config=self.config, clock=self.clock,
            report=self._report, install=self._install,
        )
        left = self._leftovers.pop(instance_id, None)
        previous = self._retiring.get(instance_id)
        instance.task = self._tg.create_task(
            instance.run(left, previous), name=f"instance-{instance_id}"
        )
        self._instances[instance_id] = instance

    def _start_discard(self, left: Leftover, *, remove_dir: bool) -> None:
        task = self._tg.create_task(
            self._discard(left, remove_dir), name=f"discard-{left.instance_id}"
        )
        self._retire(left.instance_id, task)

    def _retire(self, instance_id: str, task: asyncio.Task) -> None:
        self._retiring[instance_id] = task

        def forget(done: asyncio.Task) -> None:
            if self._retiring.get(instance_id) is done:
                del self._retiring[instance_id]

        task.add_done_callback(forget)

    async def _install(self, assignment: Assignment, dest: Path) -> AppMeta:
        """Download (or take from the cache) and extract the app into a clean `dest`."""
        assert self._artifacts is not None
        zip_path = await self._artifacts.fetch(assignment.artifact_url, assignment.artifact_sha256)
        return await asyncio.to_thread(_reinstall, zip_path, dest, self.reserved)

    # --- what an earlier agent left -----------------------------------------------------

    def _find_leftovers(self) -> None:
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            state = read_state(entry / STATE_FILE)
            process = None
            if state is not None:
                process = AppProcess.adopt(state.pid, state.start_ticks)
                if process is None:
                    kill_stale_group(state.pgid, state.start_ticks)
                    (entry / STATE_FILE).unlink(missing_ok=True)
                    state = None
            self._leftovers[entry.name] = Leftover(entry.name, entry, state, process)
            log.info("instance_found", instance_id=entry.name, alive=process is not None)

    def _leftover_status(self, left: Leftover) -> InstanceStatus:
        assert left.state is not None and left.process is not None
        return InstanceStatus(
            instance_id=left.instance_id, node_id=self.node_id, phase=InstancePhase.RUNNING,
            deployment_id=left.state.assignment.deployment_id, pid=left.process.pid,
            restarts=left.state.restarts, message="running since before the agent started",
            reported_at=self.clock.now(),
        )

    async def _discard(self, left: Leftover, remove_dir: bool) -> None:
        """Stop a leftover's process; remove its directory too when it is not assigned."""

        async def discard() -> None:
            status = self._leftover_status(left) if left.alive() else None
            if status is not None:
                await left.process.terminate(self.clock, self.config.kill_grace)
                log.info("instance_discarded", instance_id=left.instance_id)
            if remove_dir:
                await asyncio.to_thread(shutil.rmtree, left.dir, ignore_errors=True)
            else:
                (left.dir / STATE_FILE).unlink(missing_ok=True)
            if status is not None:
                self._report(msgspec.structs.replace(
                    status, phase=InstancePhase.STOPPED, pid=None,
                    message="not assigned" if remove_dir else "", reported_at=self.clock.now(),
                ))

        await run_to_completion(discard())


def _reinstall(zip_path: Path, dest: Path, reserved: frozenset[str]) -> AppMeta:
    """Replace the app files in `dest` (the agent's own files stay). Blocking."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in dest.iterdir():
        if entry.name in reserved:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    return extract_app(zip_path, dest, reserved=reserved)
