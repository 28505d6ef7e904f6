"""The task engine with a real SQLite store and a fake clock."""

import asyncio
from contextlib import AsyncExitStack

import pytest

from plum.bus import Bus, TaskChanged
from plum.engine.orchestrator import TaskEngine
from plum.engine.tasks import TaskRun, TaskState
from plum.executors.agents import AgentExecutor, AgentPool
from plum.executors.base import ExecutionResult, ExecutorKind
from plum.executors.embedded import EmbeddedExecutor
from plum.ids import new_id
from plum.store.sqlite import SqliteStore
from plum.testing import FakeClock

S = TaskState


class Harness:
    def __init__(self, tmp_path, clock):
        self.path = tmp_path / "plum.db"
        self.clock = clock
        self.stack = AsyncExitStack()
        self.pool = AgentPool()

    async def start(self, extra_executors=None) -> "Harness":
        self.store = SqliteStore(self.path)
        await self.stack.enter_async_context(self.store)
        self.bus = Bus(self.clock)
        executors = {ExecutorKind.EMBEDDED: EmbeddedExecutor(self.clock),
                     ExecutorKind.OS_PROCESS: AgentExecutor(self.pool), **(extra_executors or {})}
        self.engine = TaskEngine(self.store, self.bus, self.clock, executors, drain_grace=0.1)
        await self.stack.enter_async_context(self.engine.running())
        return self

    async def stop(self) -> None:
        await self.stack.aclose()

    def reaches(self, task_id: str, *states: S) -> asyncio.Future:
        return self.bus.wait_for(
            lambda e: isinstance(e, TaskChanged) and e.task.task_id == task_id
            and e.task.state in states)

    async def submit(self, name="builtin.echo", executor="embedded", start=True, **kw) -> TaskRun:
        task = TaskRun(task_id=new_id(), name=name, executor=executor, state=S.QUEUED,
                       created_at=self.clock.now(), **kw)
        return await self.engine.submit(task, start=start)


@pytest.fixture
async def h(tmp_path):
    harness = await Harness(tmp_path, FakeClock()).start()
    yield harness
    await harness.stop()


async def wait(future, timeout=5):
    return await asyncio.wait_for(future, timeout)


async def test_echo_runs_to_success_in_order(h):
    seen = []
    with h.bus.subscribe(["tasks"]) as sub:
        done = None
        task = await h.submit(payload={"a": 1})
        while done is None:
            event = (await asyncio.wait_for(sub.get(), 5)).event
            seen.append(event.task.state)
            if event.task.terminal:
                done = event.task
    assert seen == [S.PENDING, S.RUNNING, S.SUCCEEDED]
    assert done.result == {"echo": {"a": 1}}
    stored = await h.store.get_task(task.task_id)
    assert stored.state == S.SUCCEEDED and stored.finished_at is not None


async def test_delay_does_not_block_other_tasks(h):
    slow = await h.submit("builtin.delay", payload={"seconds": 60})
    fast_done = h.bus.wait_for(lambda e: isinstance(e, TaskChanged)
                               and e.task.name == "builtin.echo" and e.task.state == S.SUCCEEDED)
    await h.submit("builtin.echo")
    await wait(fast_done)
    assert h.engine.get_active(slow.task_id).state == S.RUNNING
    finished = h.reaches(slow.task_id, S.SUCCEEDED)
    h.clock.advance(60)
    assert (await wait(finished)).task.result == {"seconds": 60}


async def test_timeout_is_a_deadline_on_the_clock(h):
    running = None
    task = await h.submit("builtin.delay", payload={"seconds": 100}, timeout_sec=5)
    running = h.engine.get_active(task.task_id)
    timed_out = h.reaches(task.task_id, S.TIMEOUT)
    h.clock.advance(4.9)
    await asyncio.sleep(0)
    assert not timed_out.done() and running is not None
    h.clock.advance(0.1)
    event = await wait(timed_out)
    assert event.task.error == "timed out after 5s"


async def test_retry_waits_for_its_backoff(h):
    task = await h.submit("builtin.fail", payload={"message": "nope"}, max_retries=2,
                          retry_backoff_sec=10)
    first_retry_pending = h.bus.wait_for(
        lambda e: isinstance(e, TaskChanged) and e.task.task_id == task.task_id
        and e.task.attempt == 2)
    await wait(first_retry_pending)
    second_attempt_running = h.bus.wait_for(
        lambda e: isinstance(e, TaskChanged) and e.task.task_id == task.task_id
        and e.task.attempt == 2 and e.task.state == S.RUNNING)
    h.clock.advance(9.9)
    await asyncio.sleep(0)
    assert not second_attempt_running.done()
    third = h.bus.wait_for(lambda e: isinstance(e, TaskChanged) and e.task.attempt == 3)
    h.clock.advance(0.1)
    await wait(second_attempt_running)
    await wait(third)
    failed = h.reaches(task.task_id, S.FAILED)
    h.clock.advance(20)  # second backoff: 20 s
    event = await wait(failed)
    assert event.task.attempt == 3 and event.task.error == "nope"
    attempts = await h.store.list_attempts(task.task_id)
    assert [(a.attempt, a.state, a.error) for a in attempts] == [
        (1, S.FAILED, "nope"), (2, S.FAILED, "nope"), (3, S.FAILED, "nope")]


async def test_late_result_for_an_old_attempt_is_ignored(h):
    task = await h.submit("builtin.delay", payload={"seconds": 100}, timeout_sec=1,
                          max_retries=1, retry_backoff_sec=1)
    retry_pending = h.bus.wait_for(lambda e: isinstance(e, TaskChanged) and e.task.attempt == 2)
    h.clock.advance(1)  # attempt 1 times out
    await wait(retry_pending)
    second = h.bus.wait_for(lambda e: isinstance(e, TaskChanged) and e.task.attempt == 2
                            and e.task.state == S.RUNNING)
    h.clock.advance(1)  # backoff ends, attempt 2 runs
    await wait(second)
    await h.engine.report(task.task_id, 1, ExecutionResult.success("late"))
    current = h.engine.get_active(task.task_id)
    assert (current.state, current.attempt, current.result) == (S.RUNNING, 2, None)


async def test_cancel_stops_the_executor(h):
    task = await h.submit("builtin.delay", payload={"seconds": 100})
    canceled = await h.engine.cancel(task.task_id)
    assert canceled.state == S.CANCELED
    h.clock.advance(200)  # the canceled delay must not report a result
    await asyncio.sleep(0)
    assert (await h.store.get_task(task.task_id)).state == S.CANCELED


async def test_unknown_embedded_task_waits_pending_for_a_worker_until_its_deadline(h):
    reason = h.bus.wait_for(lambda e: isinstance(e, TaskChanged) and e.task.reason != "")
    task = await h.submit("reports.build", timeout_sec=5)
    event = await wait(reason)
    assert event.task.state == S.PENDING
    assert event.task.reason == "waiting for a worker serving 'reports.build'"
    timed_out = h.reaches(task.task_id, S.TIMEOUT)
    h.clock.advance(5)
    assert (await wait(timed_out)).task.error == "timed out after 5s"


async def test_os_process_waits_pending_for_an_agent(h):
    reason = h.bus.wait_for(lambda e: isinstance(e, TaskChanged) and "agent" in e.task.reason)
    task = await h.submit("ls", executor="os_process", payload={"command": "true"},
                          target_kind="node", target_ref="node-b")
    event = await wait(reason)
    assert event.task.state == S.PENDING
    assert event.task.reason == "waiting for the agent of node 'node-b'"

    class Channel:
        node_id = "node-b"
        capacity = 1

        async def run(self, request, ctx):
            await ctx.mark_running()
            return ExecutionResult.success({"ran": request.name})

    done = h.reaches(task.task_id, S.SUCCEEDED)
    await h.pool.attach(Channel())
    event = await wait(done)
    assert event.task.scheduled_on == "node-b"
    assert event.task.result == {"ran": "ls"}


async def test_recovery_after_a_crash(tmp_path):
    clock = FakeClock()
    first = await Harness(tmp_path, clock).start()
    retried = await first.submit("builtin.delay", payload={"seconds": 100}, max_retries=1)
    failed = await first.submit("builtin.delay", payload={"seconds": 100})
    queued = await first.submit("builtin.echo", start=False)
    await first.stop()

    second = Harness(tmp_path, clock)
    await second.start()
    try:
        t1 = await second.store.get_task(retried.task_id)
        t2 = await second.store.get_task(failed.task_id)
        assert t1.attempt == 2 and t1.state == S.PENDING
        assert (t2.state, t2.error) == (S.FAILED, "controller restarted")
        assert (await second.store.get_task(queued.task_id)).state == S.QUEUED
        attempts = await second.store.list_attempts(retried.task_id)
        assert attempts[0].error == "controller restarted"
        running = second.reaches(retried.task_id, S.RUNNING)
        second.clock.advance(1)  # the retry's backoff
        await wait(running)
    finally:
        await second.stop()


async def test_a_retry_backoff_survives_a_restart(tmp_path):
    clock = FakeClock()
    now = clock.now()
    first = await Harness(tmp_path, clock).start()
    task = await first.submit("builtin.fail", max_retries=1, retry_backoff_sec=100)
    waiting = first.bus.wait_for(lambda e: isinstance(e, TaskChanged)
                                 and e.task.task_id == task.task_id and e.task.attempt == 2)
    await wait(waiting)
    await first.stop()

    second = Harness(tmp_path, clock)
    await second.start()
    try:
        stored = await second.store.get_task(task.task_id)
        assert (stored.state, stored.attempt, stored.retry_at) == (S.PENDING, 2, 100 + now)
        failed = second.reaches(task.task_id, S.FAILED)
        clock.advance(50)  # half the backoff
        clock.advance(50)  # all of it
        assert (await wait(failed)).task.attempt == 2
        # attempt 2 went out when the backoff ended, not at the restart
        second_attempt = (await second.store.list_attempts(task.task_id))[1]
        assert second_attempt.started_at >= stored.retry_at
    finally:
        await second.stop()
