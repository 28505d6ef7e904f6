"""App process groups on an agent: spawn or adopt one, notice its end, stop it, keep its output.

An app must outlive the agent that started it (the next agent adopts it), so it is started
with `subprocess.Popen`, not the event loop's subprocess support: uvloop ignores `close_fds`
and would hand the app every inheritable descriptor of the agent, and its socketpair stdout
would die with the agent. The app leads a new session and process group; its stdout and
stderr are a FIFO in the instance directory (`OutputPump`), opened read-write on the app's
side so that writing never fails while no agent reads: output waits in the pipe (1 MiB)
until the next agent drains it into the rotating log.

The end of a process, ours or adopted, is noticed through a pidfd on the event loop, so
there is no polling and no dependence on SIGCHLD. When the leader exits, what is left of
its group is killed (before the leader is reaped, while the group id cannot be reused) and
the leader is reaped when it is our child. A process is known by pid *and* its start time
(`/proc/<pid>/stat`), so a reused pid is never mistaken for an app.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
from pathlib import Path

from plum.clock import Clock
from plum.logging import get_logger
from plum.procgroup import signal_group, stop_group

log = get_logger(__name__)

PIPE_BYTES = 1024 * 1024  # the FIFO's capacity when the system allows it
_READ_CHUNK = 64 * 1024


def process_identity(pid: int) -> tuple[str, int] | None:
    """`(state, start time in clock ticks since boot)` of a process, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime) of proc(5)


def is_alive(pid: int, start_ticks: int) -> bool:
    identity = process_identity(pid)
    return identity is not None and identity[1] == start_ticks and identity[0] not in "ZX"


class AppProcess:
    """The leader of one app process group; `exited` resolves with its exit code.

    The code is negative for a signal, and None for an adopted process (its parent reaps it).
    """

    def __init__(self, pid: int, start_ticks: int, popen: subprocess.Popen | None = None):
        loop = asyncio.get_running_loop()
        self.pid = pid
        self.start_ticks = start_ticks
        self.exited: asyncio.Future[int | None] = loop.create_future()
        self._popen = popen
        self._loop = loop
        self._pidfd: int | None = os.pidfd_open(pid)
        loop.add_reader(self._pidfd, self._on_exit)

    @classmethod
    def spawn(cls, argv: list[str], *, cwd: Path, env: dict[str, str], output: int) -> AppProcess:
        """Start `argv` in a new session; `output` becomes its stdout and stderr. Raises OSError."""
        popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            start_new_session=True, close_fds=True,
        )
        identity = process_identity(popen.pid)
        return cls(popen.pid, identity[1] if identity else 0, popen)

    @classmethod
    def adopt(cls, pid: int, start_ticks: int) -> AppProcess | None:
        """Watch a process started by an earlier agent, if it is still that process."""
        try:
            process = cls(pid, start_ticks)
        except ProcessLookupError:
            return None
        # checked after the pidfd is open, so the pidfd is known to refer to this very process
        if not is_alive(pid, start_ticks):
            process.detach()
            return None
        return process

    def _on_exit(self) -> None:
        self._close_pidfd()
        signal_group(self.pid, signal.SIGKILL)  # the rest of the group goes with its leader
        code = self._reap()
        if not self.exited.done():
            self.exited.set_result(code)

    def _reap(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return None  # not our child: its own parent (or init) reaps it
        return os.waitstatus_to_exitcode(status) if pid else None

    def detach(self) -> None:
        """Stop watching; the process keeps running (the next agent adopts it)."""
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def terminate(self, clock: Clock, grace: float) -> None:
        """SIGTERM the group, SIGKILL it once the leader exits or `grace` passes on `clock`."""
        await stop_group(self.pid, self.exited, grace, clock)


def kill_stale_group(pgid: int, start_ticks: int) -> None:
    """SIGKILL what is left of a group whose leader has died, unless its id has been reused.

    A group id stays reserved while any member lives; once a new process holds the number,
    the old group is empty and the new holder's group is none of ours.
    """
    identity = process_identity(pgid)
    if identity is not None and identity[1] != start_ticks:
        return
    signal_group(pgid, signal.SIGKILL)


class RotatingLog:
    """`path` up to `max_bytes`, then `path.1` ... `path.<backups>` (oldest dropped)."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path = path
        self._max = max(1, max_bytes)
        self._backups = backups
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        return os.open(self.path, flags, 0o644)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._size and self._size + len(view) > self._max:
                self._rotate()
            written = os.write(self._fd, view[: self._max - self._size])
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        os.close(self._fd)
        if self._backups > 0:
            for number in range(self._backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{number}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{number + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OutputPump:
    """Carries an app's output from its FIFO into a `RotatingLog` as it arrives.

    The agent's end is opened read-write, so the FIFO never reads as closed: the app's exit
    is learnt from its pidfd, after which `drain()` takes what is left.
    """

    def __init__(self, fifo: Path, sink: RotatingLog):
        if not fifo.exists():
            os.mkfifo(fifo, 0o600)
        self.fifo = fifo
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size for us: keep the default size
        self._loop.add_reader(self._fd, self._read_once)

    def app_end(self) -> int:
        """A new descriptor for the app's stdout and stderr (blocking; close it after spawning)."""
        return os.open(self.fifo, os.O_RDWR | os.O_CLOEXEC)

    def _read_once(self) -> bool:
        try:
            data = os.read(self._fd, _READ_CHUNK)
        except BlockingIOError:
            return False
        try:
            self._sink.write(data)
        except OSError as exc:
            log.warning("instance_log_write_failed", path=str(self._sink.path), error=str(exc))
        return bool(data)

    def drain(self) -> None:
        while self._fd >= 0 and self._read_once():
            pass

    def close(self) -> None:
        if self._fd >= 0:
            self.drain()
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._sink.close()
