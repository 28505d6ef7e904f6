"""Process groups and output on their own: the rotating log, identity by start time, pidfd
watching, and a FIFO that outlives its reader."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from plum.agent.processes import (
    AppProcess,
    OutputPump,
    RotatingLog,
    is_alive,
    kill_stale_group,
    process_identity,
)
from plum.testing.clock import FakeClock
from tests.agent.apps import group_members
from tests.support.pids import alive, wait_gone

pytestmark = pytest.mark.timeout(30)


def popen(*argv: str, **options) -> subprocess.Popen:
    """A process in a new session, not started by the code under test."""
    return subprocess.Popen(argv, start_new_session=True, **options)


def test_rotating_log_keeps_backups_and_splits_big_writes(tmp_path: Path):
    path = tmp_path / "out.log"
    sink = RotatingLog(path, max_bytes=10, backups=2)
    sink.write(b"0123456789abcdefghijklmnopqrstuvwxyz")
    sink.close()
    assert path.read_bytes() == b"uvwxyz"
    assert (tmp_path / "out.log.1").read_bytes() == b"klmnopqrst"
    assert (tmp_path / "out.log.2").read_bytes() == b"abcdefghij"
    assert not (tmp_path / "out.log.3").exists()


def test_rotating_log_appends_to_what_is_there_and_can_keep_no_backups(tmp_path: Path):
    path = tmp_path / "out.log"
    path.write_bytes(b"12345678")
    sink = RotatingLog(path, max_bytes=10, backups=0)
    sink.write(b"ab")
    assert path.read_bytes() == b"12345678ab"
    sink.write(b"cd")  # would pass the limit: start over, nothing kept
    sink.close()
    assert path.read_bytes() == b"cd"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log"]


def test_identity_is_pid_and_start_time():
    state, ticks = process_identity(os.getpid())
    assert state == "R" and ticks > 0
    assert is_alive(os.getpid(), ticks)
    assert not is_alive(os.getpid(), ticks + 1)
    assert process_identity(2**22 + 1) is None  # above pid_max: never a process


async def test_spawn_watch_and_terminate(tmp_path: Path):
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        process = AppProcess.spawn(
            ["/bin/sh", "-c", "sleep 1000 & exec sleep 1000"], cwd=tmp_path, env={}, output=sink
        )
    finally:
        os.close(sink)
    assert os.getpgid(process.pid) == process.pid
    clock = FakeClock()
    await process.terminate(clock, grace=5)
    assert process.exited.result() == -signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)  # reaped
    for member in group_members(process.pid):  # the background sleep goes with the group
        assert await wait_gone(member)


async def test_adopt_checks_the_start_time_and_sees_the_end(tmp_path: Path):
    other = popen("sleep", "1000")
    try:
        _, ticks = process_identity(other.pid)
        assert AppProcess.adopt(other.pid, ticks + 1) is None
        kill_stale_group(other.pid, ticks + 1)  # its pid is someone else's now: left alone
        assert alive(other.pid)
        adopted = AppProcess.adopt(other.pid, ticks)
        assert adopted is not None
        other.kill()
        assert await adopted.exited == -signal.SIGKILL  # our child here, so it is reaped too
    finally:
        other.kill()
        other.wait()
    assert AppProcess.adopt(other.pid, ticks) is None


async def test_stale_group_members_are_killed(tmp_path: Path):
    leader = popen("/bin/sh", "-c", "sleep 1000 & echo $!; exit 0", stdout=subprocess.PIPE)
    child = int(leader.stdout.readline())
    leader.wait()
    leader.stdout.close()
    _, ticks = process_identity(child)
    assert alive(child)
    kill_stale_group(leader.pid, ticks)  # leader gone, its number still names the group
    assert await wait_gone(child)


async def test_output_waits_in_the_fifo_while_nobody_reads(tmp_path: Path):
    fifo = tmp_path / "out.pipe"
    pump = OutputPump(fifo, RotatingLog(tmp_path / "out.log", 1 << 20, 1))
    app_end = pump.app_end()
    pump.close()  # the reader goes away; writing must neither fail nor block (while it fits)
    os.write(app_end, b"while away\n")
    pump = OutputPump(fifo, RotatingLog(tmp_path / "out.log", 1 << 20, 1))
    pump.drain()
    os.close(app_end)
    pump.close()
    assert (tmp_path / "out.log").read_bytes() == b"while away\n"
