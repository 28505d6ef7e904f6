"""The supervisor against real processes, real zips and a real HTTP artifact server.

Timers (backoff, kill grace) run on a `FakeClock`, so a test decides when a restart is due;
the health probe test uses the system clock. Every wait is on a report, a notification from
the app, or (for processes that are not our children) a short /proc poll.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest

from plum.agent import instance as instance_module
from plum.agent.instance import LOG_FILE, STABLE_AFTER, STATE_FILE
from plum.agent.protocol import (
    Assignment,
    Assignments,
    DesiredState,
    InstancePhase,
    ServiceEndpoint,
)
from plum.agent.supervisor import Supervisor
from plum.clock import Clock, SystemClock
from plum.errors import InvalidState
from plum.testing.clock import FakeClock
from tests.agent.apps import (
    PYTHON,
    ArtifactServer,
    Reports,
    app_zip,
    artifact_server,
    group_members,
    make_zip,
    notifier,
    notifying_app,
    processes_in,
)
from tests.support.pids import alive, wait_gone
from tests.support.procs import free_port

pytestmark = pytest.mark.timeout(30)

NODE = "node-1"
RUNNING, PENDING, FAILED = InstancePhase.RUNNING, InstancePhase.PENDING, InstancePhase.FAILED
STOPPED, COMPLETED = InstancePhase.STOPPED, InstancePhase.COMPLETED
SLEEPER = app_zip("exec sleep 1000")


@pytest.fixture
async def server() -> AsyncIterator[ArtifactServer]:
    async with artifact_server() as running:
        yield running


def assign(
    instance_id: str, url: str, sha: str = "", *, desired=DesiredState.RUNNING, **fields
) -> Assignment:
    fields = {"app_name": "demo", "app_version": "1.0", **fields}
    return Assignment(
        instance_id=instance_id, deployment_id="dep-1", node_id=NODE, desired=desired,
        artifact_url=url, artifact_sha256=sha, **fields,
    )


def full(*items: Assignment) -> Assignments:
    return Assignments(items=list(items), full=True)


class Harness:
    def __init__(self, tmp_path: Path, server: ArtifactServer, clock: Clock, **options):
        self.reports = Reports()
        self.clock = clock
        self.data_dir = tmp_path / "data"
        self.supervisor = Supervisor(
            node_id=NODE, data_dir=self.data_dir, clock=clock, report=self.reports,
            controller_base=server.base, grpc_addr="127.0.0.1:9090", **options,
        )

    def dir(self, instance_id: str) -> Path:
        return self.data_dir / NODE / instance_id


@asynccontextmanager
async def supervising(
    tmp_path: Path, server: ArtifactServer, clock: Clock | None = None, *,
    stop_on_exit: bool = True, **options,
) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, server, clock or FakeClock(), **options)
    async with harness.supervisor.running(stop_on_exit=stop_on_exit):
        yield harness


# --- starting ------------------------------------------------------------------------------


async def test_start_reports_running_with_env_and_health(tmp_path: Path, server):
    port = free_port()
    script = f"env > env.txt\nexec {PYTHON} -m http.server {port} --bind 127.0.0.1"
    url, sha = server.add("web.zip", app_zip(script, services=(f"web:http:{port}",)))
    async with supervising(tmp_path, server, SystemClock()) as h:
        h.supervisor.apply(full(assign("web-1", url, sha, env={"GREETING": "hi"})))
        assert (await h.reports.next("web-1", PENDING)).message == "downloading artifact"
        running = await h.reports.next("web-1", RUNNING)
        assert running.pid and not running.healthy  # the port is probed first
        assert running.deployment_id == "dep-1" and running.node_id == NODE
        healthy = await h.reports.next("web-1", RUNNING, healthy=True)
        assert healthy.pid == running.pid
        assert os.getpgid(running.pid) == running.pid == os.getsid(running.pid)
        env = dict(
            line.split("=", 1) for line in (h.dir("web-1") / "env.txt").read_text().splitlines()
            if "=" in line
        )
        assert env["PLUM_INSTANCE_ID"] == "web-1"
        assert env["PLUM_APP_NAME"] == "demo" and env["PLUM_APP_VERSION"] == "1.0"
        assert env["WORKER_NODE_ID"] == NODE
        assert env["CONTROLLER_BASE"] == server.base
        assert env["CONTROLLER_GRPC_ADDR"] == "127.0.0.1:9090"
        assert env["GREETING"] == "hi"
        assert [s.healthy for s in h.supervisor.statuses()] == [True]
    assert not alive(running.pid)  # leaving `running()` stopped it
    assert (await h.reports.next("web-1", STOPPED)).pid is None


async def test_app_without_meta_services_is_healthy_at_once(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    async with supervising(tmp_path, server) as h:
        h.supervisor.apply(full(assign("a", url, sha, start_cmd="exec sleep 999")))
        running = await h.reports.next("a", RUNNING)
        assert running.healthy and running.restarts == 0
        assert os.readlink(f"/proc/{running.pid}/cwd") == str(h.dir("a"))


async def test_service_that_never_listens_is_not_healthy(tmp_path: Path, server, monkeypatch):
    monkeypatch.setattr(instance_module, "HEALTH_DEADLINE", 0.3)
    port = free_port()
    url, _ = server.add("app.zip", SLEEPER)
    async with supervising(tmp_path, server, SystemClock()) as h:
        service = ServiceEndpoint(service_name="web", protocol="http", port=port)
        h.supervisor.apply(full(assign("a", url, services=[service])))
        running = await h.reports.next("a", RUNNING)
        assert not running.healthy
        given_up = await h.reports.next("a", RUNNING)
        assert given_up.message == f"port {port} accepted no connection within 0.3s"
        assert not given_up.healthy and given_up.pid == running.pid


# --- restarts ------------------------------------------------------------------------------


async def test_crash_restarts_with_backoff(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    clock = FakeClock()
    async with supervising(tmp_path, server, clock) as h:
        h.supervisor.apply(full(assign("a", url, sha)))
        first = await h.reports.next("a", RUNNING)
        os.kill(first.pid, signal.SIGKILL)
        failed = await h.reports.next("a", FAILED)
        assert failed.exit_code == -signal.SIGKILL and failed.restarts == 0 and failed.pid is None
        assert failed.message == "killed by signal SIGKILL; restarting in 1s"
        assert not alive(first.pid)
        assert clock.advance(0.5) == 0  # not yet
        assert clock.advance(0.5) == 1
        second = await h.reports.next("a", RUNNING)
        assert second.restarts == 1 and second.pid != first.pid

        os.kill(second.pid, signal.SIGKILL)
        failed = await h.reports.next("a", FAILED)
        assert failed.message.endswith("restarting in 2s") and failed.restarts == 1
        clock.advance(2)
        third = await h.reports.next("a", RUNNING, restarts=2)

        clock.advance(STABLE_AFTER)  # up long enough: the next crash starts the backoff over
        os.kill(third.pid, signal.SIGTERM)
        failed = await h.reports.next("a", FAILED)
        assert failed.message == "killed by signal SIGTERM; restarting in 1s"
        assert (h.dir("a") / STATE_FILE).exists() is False
        clock.advance(1)
        assert (await h.reports.next("a", RUNNING)).restarts == 3
        assert (h.dir("a") / STATE_FILE).exists()
        assert len(server.requests) == 1  # restarts reuse the extracted app


async def test_backoff_is_capped(tmp_path: Path, server):
    url, sha = server.add("app.zip", app_zip("exit 3"))
    clock = FakeClock()
    async with supervising(tmp_path, server, clock, backoff_max=3.0) as h:
        h.supervisor.apply(full(assign("a", url, sha)))
        delays = []
        for restarts in range(4):
            failed = await h.reports.next("a", FAILED, restarts=restarts)
            assert failed.exit_code == 3
            delays.append(failed.message.removeprefix("exited with code 3; restarting in "))
            clock.advance(3)
        assert delays == ["1s", "2s", "3s", "3s"]


async def test_clean_exit_completes_and_output_rotates(tmp_path: Path, server):
    script = 'i=0; while [ $i -lt 40 ]; do echo "line $i"; echo "err $i" >&2; i=$((i+1)); done'
    url, sha = server.add("app.zip", app_zip(script))
    clock = FakeClock()
    async with supervising(tmp_path, server, clock, log_max_bytes=64, log_backups=2) as h:
        h.supervisor.apply(full(assign("a", url, sha)))
        done = await h.reports.next("a", COMPLETED)
        assert done.exit_code == 0 and done.restarts == 0
        assert clock.next_deadline() is None  # a clean exit is not restarted
        log = h.supervisor.log_path("a")
        assert log == h.dir("a") / LOG_FILE
        files = [log.with_name(f"{LOG_FILE}.2"), log.with_name(f"{LOG_FILE}.1"), log]
        assert all(0 < f.stat().st_size <= 64 for f in files)
        assert not log.with_name(f"{LOG_FILE}.3").exists()
        kept = b"".join(f.read_bytes() for f in files).decode()
        everything = "".join(f"line {i}\nerr {i}\n" for i in range(40))
        assert len(kept) > 128 and everything.endswith(kept)


# --- stopping ------------------------------------------------------------------------------


async def test_stop_kills_the_whole_group_and_start_again(tmp_path: Path, server):
    port = free_port()
    script = f"sleep 1000 &\nexec {PYTHON} -m http.server {port} --bind 127.0.0.1"
    url, sha = server.add("app.zip", app_zip(script, services=(f"web:http:{port}",)))
    async with supervising(tmp_path, server, SystemClock()) as h:
        h.supervisor.apply(full(assign("a", url, sha)))
        running = await h.reports.next("a", RUNNING, healthy=True)
        members = group_members(running.pid)
        assert len(members) == 2  # the server and its background sleep
        h.supervisor.apply(Assignments(items=[assign("a", url, sha, desired=DesiredState.STOPPED)]))
        stopped = await h.reports.next("a", STOPPED)
        assert stopped.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(running.pid, 0)  # our child: gone and reaped
        for pid in members:
            assert await wait_gone(pid)
        assert h.dir("a").is_dir() and not (h.dir("a") / STATE_FILE).exists()

        h.supervisor.apply(Assignments(items=[assign("a", url, sha)]))
        again = await h.reports.next("a", RUNNING)
        assert again.pid != running.pid and again.restarts == 0


async def test_sigterm_ignored_means_sigkill_after_the_grace(tmp_path: Path, server):
    url, sha = server.add("app.zip", notifying_app())
    clock = FakeClock()
    async with notifier() as notes, supervising(tmp_path, server, clock, kill_grace=5) as h:
        env = {"NOTIFY_PORT": str(notes.port), "IGNORE_TERM": "1"}
        h.supervisor.apply(full(assign("a", url, sha, env=env)))
        running = await h.reports.next("a", RUNNING)
        assert await notes.next() == "ready"
        h.supervisor.apply(full(assign("a", url, sha, env=env, desired=DesiredState.STOPPED)))
        assert await notes.next() == "term"
        assert alive(running.pid) and h.reports.of("a")[-1].phase is RUNNING
        assert clock.advance(4.9) == 0
        assert clock.advance(0.1) == 1
        await h.reports.next("a", STOPPED)
        assert not alive(running.pid)


async def test_full_set_without_an_instance_stops_and_removes_it(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    async with supervising(tmp_path, server) as h:
        h.supervisor.apply(full(*(assign(name, url, sha) for name in "abc")))
        pids = {name: (await h.reports.next(name, RUNNING)).pid for name in "abc"}
        assert len(server.requests) == 1  # three instances, one download

        h.supervisor.apply(Assignments(removed=["c"]))
        assert (await h.reports.next("c", STOPPED)).message == "removed"
        h.supervisor.apply(full(assign("a", url, sha)))
        await h.reports.next("b", STOPPED)
        for name in "bc":
            assert not h.dir(name).exists()
            assert not alive(pids[name])
        assert alive(pids["a"])
        assert [s.instance_id for s in h.supervisor.statuses()] == ["a"]
        assert [s.phase for s in h.reports.of("a")] == [PENDING, PENDING, RUNNING]


async def test_new_version_replaces_the_process(tmp_path: Path, server):
    url1, sha1 = server.add("v1.zip", SLEEPER)
    url2, sha2 = server.add("v2.zip", app_zip("exec sleep 2000", **{"v2.txt": "2"}))
    async with supervising(tmp_path, server) as h:
        h.supervisor.apply(full(assign("a", url1, sha1)))
        old = await h.reports.next("a", RUNNING)
        h.supervisor.apply(full(assign("a", url1, sha1)))  # the same again: nothing happens
        h.supervisor.apply(full(assign("a", url2, sha2, app_version="2.0")))
        new = await h.reports.next("a", RUNNING)
        assert new.pid != old.pid and not alive(old.pid)
        assert (h.dir("a") / "v2.txt").exists()
        assert [s.phase for s in h.reports.of("a")] == [PENDING, PENDING, RUNNING] * 2


# --- artifacts that cannot run -------------------------------------------------------------


async def test_sha256_mismatch_fails_with_a_clear_message(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    clock = FakeClock()
    async with supervising(tmp_path, server, clock) as h:
        h.supervisor.apply(full(assign("a", url, "0" * 64)))
        failed = await h.reports.next("a", FAILED)
        assert failed.message == (
            f"artifact sha256 mismatch for {url}: expected {'0' * 64}, got {sha}"
        )
        assert failed.pid is None and clock.next_deadline() is None  # not retried
        assert not list((h.data_dir / NODE / ".cache").glob("*.zip"))
        h.supervisor.apply(full(assign("a", url, sha)))  # a corrected assignment runs
        await h.reports.next("a", RUNNING)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (make_zip({"start.sh": "exec sleep 1", "../evil.sh": "boom"}), "leaves the app directory"),
        (make_zip({"start.sh": "exec sleep 1"}, links={"x": "/etc/passwd"}), "symbolic link"),
    ],
)
async def test_unsafe_zip_is_refused(tmp_path: Path, server, data: bytes, reason: str):
    url, sha = server.add("app.zip", data)
    async with supervising(tmp_path, server) as h:
        h.supervisor.apply(full(assign("a", url, sha)))
        assert reason in (await h.reports.next("a", FAILED)).message
        assert not (h.data_dir / NODE / "evil.sh").exists()
        assert not (h.dir("a") / "x").exists()


async def test_download_failure_is_retried_with_backoff(tmp_path: Path, server):
    url = f"{server.base}/artifacts/later.zip"
    clock = FakeClock()
    async with supervising(tmp_path, server, clock) as h:
        h.supervisor.apply(full(assign("a", url)))
        failed = await h.reports.next("a", FAILED)
        assert "answered 404; retrying in 1s" in failed.message
        server.add("later.zip", SLEEPER)
        clock.advance(1)
        assert (await h.reports.next("a", RUNNING)).restarts == 0


async def test_missing_start_script(tmp_path: Path, server):
    url, sha = server.add("app.zip", make_zip({"meta.ini": "name=x\n"}))
    clock = FakeClock()
    async with supervising(tmp_path, server, clock) as h:
        h.supervisor.apply(full(assign("a", url, sha)))
        failed = await h.reports.next("a", FAILED)
        assert failed.message.startswith("cannot start: No such file or directory")
        assert clock.next_deadline() is not None  # retried like a crash


async def test_apply_needs_a_running_supervisor(tmp_path: Path, server):
    harness = Harness(tmp_path, server, FakeClock())
    with pytest.raises(InvalidState):
        harness.supervisor.apply(full())


# --- agent restarts ------------------------------------------------------------------------


async def test_adopts_after_a_restart_and_removes_the_unassigned(tmp_path: Path, server):
    url, sha = server.add("app.zip", notifying_app())
    clock = FakeClock()
    async with notifier() as notes:
        env = {"NOTIFY_PORT": str(notes.port)}
        items = [assign("a", url, sha, env=env), assign("b", url, sha, env=env)]
        async with supervising(tmp_path, server, clock, stop_on_exit=False) as first:
            first.supervisor.apply(full(*items))
            pids = {name: (await first.reports.next(name, RUNNING)).pid for name in "ab"}
            assert [await notes.next(), await notes.next()] == ["ready", "ready"]
        assert all(alive(pid) for pid in pids.values())  # the agent left, the apps stayed
        # output while no agent reads waits in the pipe; writing it does not fail
        os.kill(pids["a"], signal.SIGUSR1)
        assert await notes.next() == "usr1"

        async with supervising(tmp_path, server, clock) as second:
            found = {s.instance_id: s for s in second.supervisor.statuses()}
            assert {k: (s.phase, s.pid) for k, s in found.items()} == {
                "a": (RUNNING, pids["a"]), "b": (RUNNING, pids["b"])
            }
            second.supervisor.apply(full(items[0]))
            adopted = await second.reports.next("a", RUNNING)
            assert adopted.pid == pids["a"] and "adopted" in adopted.message
            assert (await second.reports.next("b", STOPPED)).message == "not assigned"
            assert await wait_gone(pids["b"])
            assert not second.dir("b").exists()
            assert processes_in(second.dir("a")) == [pids["a"]]  # no second process
            assert [s.phase for s in second.reports.of("a")] == [RUNNING]

            os.kill(pids["a"], signal.SIGUSR1)  # the new agent reads its output
            assert await notes.next() == "usr1"
            os.kill(pids["a"], signal.SIGKILL)  # and sees it end
            await second.reports.next("a", FAILED)
            clock.advance(1)
            restarted = await second.reports.next("a", RUNNING)
            assert restarted.pid != pids["a"] and restarted.restarts == 1
            assert await notes.next() == "ready"
        assert not alive(restarted.pid)
    log = second.supervisor.log_path("a").read_text()
    assert log.count("got usr1") == 2 and log.count("started") == 2


async def test_leftover_that_died_is_started_afresh(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    clock = FakeClock()
    async with supervising(tmp_path, server, clock, stop_on_exit=False) as first:
        first.supervisor.apply(full(assign("a", url, sha)))
        pid = (await first.reports.next("a", RUNNING)).pid
    os.kill(pid, signal.SIGKILL)
    assert await wait_gone(pid)
    async with supervising(tmp_path, server, clock) as second:
        assert second.supervisor.statuses() == []
        second.supervisor.apply(full(assign("a", url, sha)))
        assert (await second.reports.next("a", PENDING)).message == "downloading artifact"
        fresh = await second.reports.next("a", RUNNING)
        assert fresh.pid != pid
        assert processes_in(second.dir("a")) == [fresh.pid]


async def test_changed_assignment_replaces_a_leftover(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    clock = FakeClock()
    async with supervising(tmp_path, server, clock, stop_on_exit=False) as first:
        first.supervisor.apply(full(assign("a", url, sha)))
        pid = (await first.reports.next("a", RUNNING)).pid
    async with supervising(tmp_path, server, clock) as second:
        second.supervisor.apply(full(assign("a", url, sha, env={"NEW": "1"})))
        replaced = await second.reports.next("a", RUNNING)
        assert replaced.pid != pid and await wait_gone(pid)


async def test_leftover_assigned_stopped_is_stopped(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    clock = FakeClock()
    async with supervising(tmp_path, server, clock) as first:
        first.supervisor.detach()
        first.supervisor.apply(full(assign("a", url, sha)))
        pid = (await first.reports.next("a", RUNNING)).pid
    assert alive(pid)
    async with supervising(tmp_path, server, clock) as second:
        second.supervisor.apply(full(assign("a", url, sha, desired=DesiredState.STOPPED)))
        await second.reports.next("a", STOPPED)
        assert await wait_gone(pid)
        assert second.dir("a").is_dir()


async def test_exit_right_after_apply_still_detaches_or_stops(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    clock = FakeClock()
    async with supervising(tmp_path, server, clock, stop_on_exit=False) as first:
        first.supervisor.apply(full(assign("a", url, sha)))
        pid = (await first.reports.next("a", RUNNING)).pid
    async with supervising(tmp_path, server, clock, stop_on_exit=False) as second:
        second.supervisor.apply(full(assign("a", url, sha)))  # no task has run yet
    assert alive(pid)
    async with supervising(tmp_path, server, clock) as third:
        third.supervisor.apply(full(assign("a", url, sha)))
    assert not alive(pid) and not processes_in(third.dir("a"))


async def test_a_reused_pid_is_neither_adopted_nor_killed(tmp_path: Path, server):
    url, sha = server.add("app.zip", SLEEPER)
    clock = FakeClock()
    async with supervising(tmp_path, server, clock, stop_on_exit=False) as first:
        first.supervisor.apply(full(assign("a", url, sha), assign("b", url, sha)))
        pids = {name: (await first.reports.next(name, RUNNING)).pid for name in "ab"}
    for name in "ab":  # as if both pids now belonged to processes started since
        state = first.dir(name) / STATE_FILE
        state.write_text(state.read_text().replace('"startTicks":', '"startTicks":1'))
    try:
        async with supervising(tmp_path, server, clock) as second:
            assert second.supervisor.statuses() == []
            second.supervisor.apply(full(assign("a", url, sha)))
            fresh = await second.reports.next("a", RUNNING)
            assert fresh.pid != pids["a"]
            assert alive(pids["a"]) and alive(pids["b"])
        assert not second.dir("b").exists()
        assert alive(pids["a"]) and alive(pids["b"])
    finally:
        for pid in pids.values():
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
