"""Task runs against real `plum serve` processes (all-in-one: the in-process agent runs
os_process tasks as real subprocesses): output, timeouts and cancellation that kill the
process group, followed logs, 1,000 concurrent delays, and recovery after `kill -9`."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from tests.support.pids import alive, wait_gone
from tests.support.procs import PlumProcess, plum_with_stream, start_plum
from tests.support.sse import EventStream, SseEvent, open_stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEADLINE = 30.0  # generous: the machine may be loaded; never reached when all is well
TERMINAL = {"Succeeded", "Failed", "Timeout", "Canceled"}
# prints the leader's pid, then the pid of a background grandchild, then waits for it
LEADER_AND_CHILD = "echo $$; sleep 300 & echo $!; wait"


def sh(script: str) -> dict:
    return {"command": "/bin/sh", "args": ["-c", script]}


async def create(session: aiohttp.ClientSession, plum: PlumProcess, **body) -> str:
    async with session.post(f"{plum.url}/v1/tasks", json=body) as response:
        assert response.status == 201, await response.text()
        return (await response.json())["taskId"]


async def get_json(session: aiohttp.ClientSession, url: str):
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def get_task(session: aiohttp.ClientSession, plum: PlumProcess, task_id: str) -> dict:
    return await get_json(session, f"{plum.url}/v1/tasks/{task_id}")


def is_task(event: SseEvent, task_id: str, states: set[str]) -> bool:
    if event.event != "tasks":
        return False
    data = event.json()
    return data.get("taskId") == task_id and data.get("state") in states


async def wait_state(events: EventStream, task_id: str, *states: str) -> dict:
    """The task as of its next SSE event in one of `states`."""
    event = await events.wait_for(lambda e: is_task(e, task_id, set(states)), DEADLINE)
    return event.json()


async def wait_all(events: EventStream, task_ids: set[str], *states: str) -> None:
    pending = set(task_ids)
    while pending:
        event = await events.wait_for(
            lambda e: any(is_task(e, t, set(states)) for t in pending), DEADLINE
        )
        pending.discard(event.json()["taskId"])


async def node_id(session: aiohttp.ClientSession, plum: PlumProcess) -> str:
    [node] = await get_json(session, f"{plum.url}/v1/nodes")
    return node["nodeId"]


async def logged_pids(
    session: aiohttp.ClientSession, plum: PlumProcess, task_id: str, count: int
) -> list[int]:
    """The first `count` stdout lines of a task (pids it printed), from its followed logs."""
    pids: list[int] = []
    url = f"{plum.url}/v1/tasks/{task_id}/logs?follow=true"
    async with open_stream(session, url) as stream:
        while len(pids) < count:
            event = await stream.next(DEADLINE)
            assert event.event == "log", f"the task ended before printing {count} pids"
            line = event.json()
            if line["stream"] == "stdout":
                pids.append(int(line["text"]))
    return pids




def kill_leftover(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- os_process -----------------------------------------------------------------------------


async def test_os_process_success_captures_output(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    script = 'echo "$GREETING"; cat; pwd; echo warn >&2'
    async with plum_with_stream(tmp_path, "tasks") as (plum, session, events):
        task_id = await create(
            session, plum, name="greet", executor="os_process", autoStart=True,
            payload={**sh(script), "env": {"GREETING": "hello"}, "input": "from stdin\n",
                     "workingDir": str(workdir)},
        )
        await wait_state(events, task_id, *TERMINAL)
        task = await get_task(session, plum, task_id)
        assert task["state"] == "Succeeded", task
        assert task["scheduledOn"] == await node_id(session, plum)
        result = task["result"]
        assert result["exitCode"] == 0
        assert result["stdout"] == f"hello\nfrom stdin\n{os.path.realpath(workdir)}\n"
        assert result["stderr"] == "warn\n"
        assert (result["command"], result["args"]) == ("/bin/sh", ["-c", script])
        assert result["workingDir"] == str(workdir)
        assert isinstance(result["durationMs"], int)
        logs = await get_json(session, f"{plum.url}/v1/tasks/{task_id}/logs")
        assert [line["text"] for line in logs["lines"] if line["stream"] == "stdout"] == [
            "hello", "from stdin", os.path.realpath(workdir),
        ]


async def test_os_process_shell_form(tmp_path):
    async with plum_with_stream(tmp_path, "tasks") as (plum, session, events):
        task_id = await create(
            session, plum, name="piped", executor="os_process", autoStart=True,
            payload={"command": "echo a b c | tr ' ' '-'", "shell": True},
        )
        task = await wait_state(events, task_id, *TERMINAL)
        assert task["state"] == "Succeeded", task
        assert task["result"]["stdout"] == "a-b-c\n"


async def test_os_process_failures(tmp_path):
    async with plum_with_stream(tmp_path, "tasks") as (plum, session, events):
        exits = await create(session, plum, name="exit3", executor="os_process",
                             autoStart=True, payload=sh("echo partial; exit 3"))
        task = await wait_state(events, exits, *TERMINAL)
        assert (task["state"], task["error"]) == ("Failed", "process exited with code 3")
        assert (task["result"]["exitCode"], task["result"]["stdout"]) == (3, "partial\n")

        missing = await create(session, plum, name="nope", executor="os_process",
                               autoStart=True, payload={"command": "/no/such/program"})
        task = await wait_state(events, missing, *TERMINAL)
        assert (task["state"], task["error"]) == ("Failed", "command not found: /no/such/program")


async def test_timeout_kills_the_process_group(tmp_path):
    async with plum_with_stream(tmp_path, "tasks") as (plum, session, events):
        # 2 s rather than 1: the pids must be printed before the deadline on a loaded machine
        task_id = await create(session, plum, name="slow", executor="os_process",
                               autoStart=True, timeoutSec=2, payload=sh(LEADER_AND_CHILD))
        leader, child = await logged_pids(session, plum, task_id, 2)
        try:
            task = await wait_state(events, task_id, *TERMINAL)
            assert (task["state"], task["error"]) == ("Timeout", "timed out after 2s")
            assert await wait_gone(child), f"background child {child} outlived the timeout"
            assert await wait_gone(leader), f"leader {leader} outlived the timeout"
            attempts = (await get_task(session, plum, task_id))["attempts"]
            assert [(a["attempt"], a["state"]) for a in attempts] == [(1, "Timeout")]
        finally:
            kill_leftover(child)


async def test_cancel_kills_the_process_group(tmp_path):
    async with plum_with_stream(tmp_path, "tasks") as (plum, session, events):
        task_id = await create(session, plum, name="long", executor="os_process",
                               autoStart=True, timeoutSec=600, payload=sh(LEADER_AND_CHILD))
        await wait_state(events, task_id, "Running")
        leader, child = await logged_pids(session, plum, task_id, 2)
        try:
            assert alive(leader) and alive(child)
            async with session.post(f"{plum.url}/v1/tasks/{task_id}?action=cancel") as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["state"] == "Canceled"
            await wait_state(events, task_id, "Canceled")
            assert await wait_gone(child), f"background child {child} outlived the cancel"
            assert await wait_gone(leader), f"leader {leader} outlived the cancel"
            assert (await get_task(session, plum, task_id))["state"] == "Canceled"
        finally:
            kill_leftover(child)
            kill_leftover(leader)


async def test_logs_follow_streams_lines_while_the_process_runs(tmp_path):
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    script = f"echo one; echo two >&2; read x < '{fifo}'; echo \"three $x\""
    async with plum_with_stream(tmp_path, "tasks") as (plum, session, events):
        task_id = await create(session, plum, name="talker", executor="os_process",
                               autoStart=True, timeoutSec=60, payload=sh(script))
        await wait_state(events, task_id, "Running")
        url = f"{plum.url}/v1/tasks/{task_id}/logs?follow=true"
        async with open_stream(session, url) as logs:
            first = [(await logs.next(DEADLINE)).json() for _ in range(2)]
            assert sorted((line["stream"], line["text"]) for line in first) == [
                ("stderr", "two"), ("stdout", "one"),
            ]
            # the process is still running, blocked on the FIFO, until we write to it
            assert (await get_task(session, plum, task_id))["state"] == "Running"
            await asyncio.to_thread(fifo.write_text, "go\n")
            third = await logs.next(DEADLINE)
            assert (third.event, third.json()["text"]) == ("log", "three go")
            end = await logs.next(DEADLINE)
            assert (end.event, end.json()) == ("end", {"state": "Succeeded"})
        task = await get_task(session, plum, task_id)
        assert task["result"]["stdout"] == "one\nthree go\n"


# --- scale ----------------------------------------------------------------------------------


async def succeeded_ids(session: aiohttp.ClientSession, plum: PlumProcess) -> set[str]:
    tasks = await get_json(session, f"{plum.url}/v1/tasks?state=Succeeded&limit=1000")
    return {t["taskId"] for t in tasks}


async def wait_succeeded(
    session: aiohttp.ClientSession, plum: PlumProcess, events: EventStream, count: int
) -> None:
    """Until `count` tasks have succeeded, from SSE; a resync (we fell behind) refetches."""
    done: set[str] = set()
    while len(done) < count:
        event = await events.next(DEADLINE)
        if event.event == "resync":
            done |= await succeeded_ids(session, plum)
        elif event.event == "tasks" and event.json().get("state") == "Succeeded":
            done.add(event.json()["taskId"])


async def test_a_thousand_delays_run_concurrently(tmp_path):
    count = 1000
    body = {"name": "builtin.delay", "executor": "embedded", "payload": {"seconds": 1},
            "autoStart": True}
    limit = asyncio.Semaphore(50)
    async with (
        start_plum(tmp_path) as plum,
        aiohttp.ClientSession() as watcher,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session,
        open_stream(watcher, f"{plum.url}/v1/stream?topics=tasks") as events,
    ):
        async def create_one() -> str:
            async with limit:
                return await create(session, plum, **body)

        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
            all_done = tg.create_task(wait_succeeded(watcher, plum, events, count))
            ids = await asyncio.gather(*(create_one() for _ in range(count)))
            await all_done
        elapsed = loop.time() - started
        assert elapsed < 30, f"{count} one-second delays took {elapsed:.1f}s"

        response = await session.get(f"{plum.url}/v1/tasks?limit=1000")
        assert response.headers["X-Total-Count"] == str(count)
        tasks = await response.json()
        assert {t["taskId"] for t in tasks} == set(ids)
        assert {t["state"] for t in tasks} == {"Succeeded"}
        durations = [t["finishedAt"] - t["startedAt"] for t in tasks]
        assert all(0.9 <= d <= 10 for d in durations), (min(durations), max(durations))


# --- restart --------------------------------------------------------------------------------


async def test_restart_after_kill_9_recovers_tasks(tmp_path):
    # `exec` makes the printed pid the sleep itself: after kill -9 it survives as an orphan
    sleeper = sh("echo $$; exec sleep 300")
    leftovers: list[int] = []
    try:
        async with plum_with_stream(tmp_path, "tasks") as (plum, session, events):
            retried = await create(session, plum, name="sleep-retried", executor="os_process",
                                   autoStart=True, timeoutSec=600, maxRetries=1,
                                   payload=sleeper)
            single = await create(session, plum, name="sleep-once", executor="os_process",
                                  autoStart=True, timeoutSec=600, maxRetries=0, payload=sleeper)
            await wait_all(events, {retried, single}, "Running")
            for task_id in (retried, single):
                leftovers += await logged_pids(session, plum, task_id, 1)
            queued = await create(session, plum, name="builtin.echo", executor="embedded")
            await plum.kill()

        async with plum_with_stream(tmp_path, "tasks") as (plum, session, events):
            task = await get_task(session, plum, retried)
            assert task["attempt"] == 2, task
            assert task["state"] in ("Pending", "Running"), task
            first = task["attempts"][0]
            assert (first["attempt"], first["state"], first["error"]) == (
                1, "Failed", "controller restarted")
            if task["state"] != "Running":
                task = await wait_state(events, retried, "Running")
            assert task["attempt"] == 2
            leftovers += await logged_pids(session, plum, retried, 1)

            task = await get_task(session, plum, single)
            assert (task["state"], task["error"]) == ("Failed", "controller restarted")
            assert [(a["attempt"], a["state"], a["error"]) for a in task["attempts"]] == [
                (1, "Failed", "controller restarted")]

            assert (await get_task(session, plum, queued))["state"] == "Queued"
            async with session.post(f"{plum.url}/v1/tasks/{queued}?action=start") as response:
                assert response.status == 200, await response.text()
            assert (await wait_state(events, queued, *TERMINAL))["state"] == "Succeeded"
            everything = await get_json(session, f"{plum.url}/v1/tasks")
            assert len(everything) == 3
            assert not [t for t in everything if t["state"] == "Running" and t["attempt"] == 1]

            async with session.post(f"{plum.url}/v1/tasks/{retried}?action=cancel") as response:
                assert response.status == 200, await response.text()
            assert await wait_gone(leftovers[-1]), "the canceled retry's process survived"
    finally:
        for pid in leftovers:
            kill_leftover(pid)
