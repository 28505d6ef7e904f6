"""The agent hub with in-process connections that record what the controller sends: hello
and welcome, tasks sent and their results, link loss, heartbeat TTL, replaced connections,
adoption of tasks after a controller restart, assignments and instance statuses."""

from __future__ import annotations

import pytest

from plum.agent.protocol import (
    Assignment,
    Assignments,
    CancelTask,
    DesiredState,
    Heartbeat,
    Hello,
    InstancePhase,
    InstanceStatus,
    InstanceStatusMsg,
    ResultAck,
    RunningTask,
    RunTask,
    TaskLog,
    TaskResult,
    TaskStarted,
    Welcome,
)
from plum.bus import NodeChanged
from plum.engine.model import Health, Usage
from plum.engine.tasks import TaskRun, TaskState
from plum.errors import BadRequest
from plum.executors.base import TargetKind
from plum.testing import FakeClock
from tests.support.hub import TTL, Controller, FakeConnection, Link, settle

pytestmark = pytest.mark.timeout(30)

S = TaskState


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def ctl(tmp_path, clock):
    controller = await Controller(tmp_path, clock).start()
    yield controller
    await controller.stop()


async def run_on(ctl: Controller, link: Link, **fields) -> tuple[TaskRun, RunTask]:
    """Submit an os_process task and wait until the agent of `link` is asked to run it."""
    task = await ctl.submit(**fields)
    sent = await link.conn.wait_for(RunTask, lambda m: m.request.task_id == task.task_id)
    return task, sent


async def start_running(ctl: Controller, link: Link, **fields) -> TaskRun:
    task, sent = await run_on(ctl, link, **fields)
    running = ctl.task_reaches(task.task_id, S.RUNNING)
    await link.send(TaskStarted(task_id=task.task_id, attempt=sent.request.attempt))
    return (await settle(running)).task


# --- hello ----------------------------------------------------------------------------------


async def test_hello_registers_the_node_and_answers_welcome_then_full_assignments(ctl):
    wanted = Assignment(instance_id="i1", deployment_id="d1", node_id="nodeB",
                        desired=DesiredState.RUNNING, artifact_url="http://x/a.zip")
    asked: list[str] = []

    async def source(node_id: str) -> list[Assignment]:
        asked.append(node_id)
        return [wanted]

    ctl.hub.set_assignment_source(source)
    healthy = ctl.node_becomes("nodeB", Health.HEALTHY)
    link = await ctl.link().hello(labels={"zone": "a"})
    node = (await settle(healthy)).node
    assert (node.ip, node.labels, node.capacity) == ("127.0.0.2", {"zone": "a"}, 4)
    assert [type(m) for m in link.conn.sent] == [Welcome, Assignments]
    assert link.conn.sent[0].heartbeat_sec == 5.0
    assert link.conn.sent[1] == Assignments(items=[wanted], full=True)
    assert asked == ["nodeB"]
    assert ctl.hub.connected_nodes() == {"nodeB"}
    assert ctl.pool.nodes() == ["nodeB"]


async def test_heartbeats_carry_usage(ctl):
    link = await ctl.link().hello()
    changed = ctl.bus.wait_for(
        lambda e: isinstance(e, NodeChanged) and e.node.usage.mem_total_bytes == 1024)
    await link.send(Heartbeat(usage=Usage(cpu_percent=12.5, mem_total_bytes=1024)))
    node = (await settle(changed)).node
    assert (node.health, node.usage.cpu_percent) == (Health.HEALTHY, 12.5)


async def test_anything_before_hello_breaks_the_protocol(ctl):
    conn = FakeConnection()
    async with ctl.hub.session(conn) as session:
        with pytest.raises(BadRequest, match="before hello"):
            await session.receive(Heartbeat())
        await session.receive(Hello(node_id="nodeB", ip="127.0.0.2"))
        with pytest.raises(BadRequest, match="twice"):
            await session.receive(Hello(node_id="nodeB", ip="127.0.0.2"))
    assert ctl.hub.connected_nodes() == set()


# --- tasks ----------------------------------------------------------------------------------


async def test_a_task_runs_on_the_agent_with_its_logs_and_result(ctl):
    link = await ctl.link().hello()
    task, sent = await run_on(ctl, link, timeout_sec=60)
    assert (sent.request.attempt, sent.request.payload) == (1, {"command": "true"})
    running = ctl.task_reaches(task.task_id, S.RUNNING)
    await link.send(TaskStarted(task_id=task.task_id, attempt=1))
    assert (await settle(running)).task.scheduled_on == "nodeB"
    await link.send(TaskLog(task_id=task.task_id, attempt=1, stream="stdout", text="hello"))
    assert [line.text for line in ctl.engine.logs.lines(task.task_id)] == ["hello"]
    done = ctl.task_reaches(task.task_id, S.SUCCEEDED)
    await link.send(TaskResult(task_id=task.task_id, attempt=1, ok=True, result={"exitCode": 0}))
    finished = (await settle(done)).task
    assert (finished.result, finished.scheduled_on) == ({"exitCode": 0}, "nodeB")
    assert await link.conn.wait_for(ResultAck) == ResultAck(task_id=task.task_id, attempt=1)


async def test_a_failure_result_is_a_failed_task(ctl):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    failed = ctl.task_reaches(task.task_id, S.FAILED)
    await link.send(TaskResult(task_id=task.task_id, attempt=1, ok=False,
                               error="process exited with code 3"))
    assert (await settle(failed)).task.error == "process exited with code 3"


async def test_a_targeted_task_waits_for_its_node(ctl):
    link_b = await ctl.link().hello("nodeB")
    task = await ctl.submit(target_kind=TargetKind.NODE, target_ref="nodeC")
    link_c = await ctl.link().hello("nodeC")
    sent = await link_c.conn.wait_for(RunTask)
    assert sent.request.task_id == task.task_id
    assert not link_b.conn.of(RunTask)


async def test_cancel_reaches_the_agent(ctl):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    await ctl.engine.cancel(task.task_id)
    assert await link.conn.wait_for(CancelTask) == CancelTask(task_id=task.task_id, attempt=1)


async def test_a_timeout_reaches_the_agent(ctl, clock):
    link = await ctl.link().hello()
    task = await start_running(ctl, link, timeout_sec=10)  # below the TTL: still linked
    timed_out = ctl.task_reaches(task.task_id, S.TIMEOUT)
    clock.advance(10)
    await settle(timed_out)
    assert await link.conn.wait_for(CancelTask) == CancelTask(task_id=task.task_id, attempt=1)


async def test_a_stale_result_is_ignored_and_still_acknowledged(ctl):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    await link.send(TaskResult(task_id=task.task_id, attempt=7, ok=True))
    await link.conn.wait_for(ResultAck, lambda m: m.attempt == 7)
    assert ctl.engine.get_active(task.task_id).state == S.RUNNING


# --- link loss ------------------------------------------------------------------------------


async def test_a_dropped_link_makes_the_node_unhealthy_and_loses_its_tasks(ctl):
    link = await ctl.link().hello()
    retried = await start_running(ctl, link, max_retries=1)
    single = await start_running(ctl, link)
    unhealthy = ctl.node_becomes("nodeB", Health.UNHEALTHY)
    failed = ctl.task_reaches(single.task_id, S.FAILED)
    pending = ctl.task_reaches(retried.task_id, S.PENDING, attempt=2)
    await link.drop()
    await settle(unhealthy)
    assert (await settle(failed)).task.error == "agent lost"
    assert (await settle(pending)).task.error == "agent lost"
    assert ctl.hub.connected_nodes() == set()
    assert ctl.pool.nodes() == []


async def test_the_retry_of_a_lost_task_goes_to_another_agent(ctl, clock):
    link_b = await ctl.link().hello("nodeB")
    task = await start_running(ctl, link_b, max_retries=1, retry_backoff_sec=1)
    link_c = await ctl.link().hello("nodeC")
    await link_b.drop()
    clock.advance(1)
    sent = await link_c.conn.wait_for(RunTask)
    assert (sent.request.task_id, sent.request.attempt) == (task.task_id, 2)
    running = ctl.task_reaches(task.task_id, S.RUNNING, attempt=2)
    await link_c.send(TaskStarted(task_id=task.task_id, attempt=2))
    assert (await settle(running)).task.scheduled_on == "nodeC"


async def test_silence_for_the_ttl_is_a_dropped_link(ctl, clock):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    clock.advance(TTL - 1)
    await link.send(Heartbeat())
    clock.advance(TTL - 1)  # the heartbeat re-armed the deadline
    assert not link.conn.closed
    failed = ctl.task_reaches(task.task_id, S.FAILED)
    clock.advance(1)
    await link.conn.wait_closed()
    assert (await settle(failed)).task.error == "agent lost"
    assert (await ctl.nodes.get("nodeB")).health == Health.UNHEALTHY
    await link.drop()


async def test_a_new_connection_replaces_the_old_and_keeps_the_tasks_it_still_runs(ctl):
    old = await ctl.link().hello()
    kept = await start_running(ctl, old)
    dropped = await start_running(ctl, old)
    failed = ctl.task_reaches(dropped.task_id, S.FAILED)
    new = await ctl.link().hello(running_tasks=[RunningTask(task_id=kept.task_id, attempt=1)])
    await old.conn.wait_closed()
    assert (await settle(failed)).task.error == "agent lost"
    await old.drop()  # the old reader ends after the new one took over: nothing happens
    assert ctl.hub.connected_nodes() == {"nodeB"}
    assert (await ctl.nodes.get("nodeB")).health == Health.HEALTHY
    done = ctl.task_reaches(kept.task_id, S.SUCCEEDED)
    await new.send(TaskResult(task_id=kept.task_id, attempt=1, ok=True))
    await settle(done)


async def test_a_listed_task_the_controller_gave_up_on_is_canceled(ctl):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    await link.drop()  # lost: Failed
    again = await ctl.link().hello(running_tasks=[RunningTask(task_id=task.task_id, attempt=1)])
    assert await again.conn.wait_for(CancelTask) == CancelTask(task_id=task.task_id, attempt=1)


# --- controller restart ---------------------------------------------------------------------


async def restart(ctl: Controller, **kwargs) -> Controller:
    await ctl.stop()
    return await Controller(ctl.path.parent, ctl.clock).start(**kwargs)


async def test_after_a_restart_a_task_still_running_on_its_agent_is_adopted(ctl, tmp_path):
    link = await ctl.link().hello()
    task = await start_running(ctl, link, timeout_sec=60)
    ctl = await restart(ctl)
    try:
        assert ctl.engine.get_active(task.task_id).state == S.RUNNING
        link = await ctl.link().hello(running_tasks=[RunningTask(task_id=task.task_id,
                                                                 attempt=1)])
        await link.send(TaskLog(task_id=task.task_id, attempt=1, stream="stdout", text="late"))
        done = ctl.task_reaches(task.task_id, S.SUCCEEDED)
        await link.send(TaskResult(task_id=task.task_id, attempt=1, ok=True, result="r"))
        finished = (await settle(done)).task
        assert (finished.attempt, finished.result, finished.scheduled_on) == (1, "r", "nodeB")
        attempts = await ctl.store.list_attempts(task.task_id)
        assert [(a.attempt, a.state) for a in attempts] == [(1, S.SUCCEEDED)]
    finally:
        await ctl.stop()


async def test_after_a_restart_a_task_sent_but_not_yet_running_is_sent_again(ctl):
    link = await ctl.link().hello()
    task, _ = await run_on(ctl, link)  # the agent never said taskStarted: still Pending
    ctl = await restart(ctl)
    try:
        link = await ctl.link().hello(running_tasks=[RunningTask(task_id=task.task_id,
                                                                 attempt=1)])
        done = ctl.task_reaches(task.task_id, S.SUCCEEDED)
        result = TaskResult(task_id=task.task_id, attempt=1, ok=True)
        await link.send(result)  # the agent's kept result, sent again on welcome
        sent = await link.conn.wait_for(RunTask)
        assert (sent.request.task_id, sent.request.attempt) == (task.task_id, 1)
        assert not link.conn.of(CancelTask)
        await link.send(result)  # the agent's answer to the repeated runTask
        finished = (await settle(done)).task
        assert (finished.attempt, finished.scheduled_on) == (1, "nodeB")
        await link.conn.wait_for(ResultAck)
    finally:
        await ctl.stop()


async def test_after_a_restart_an_adopted_task_can_still_be_canceled(ctl):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    ctl = await restart(ctl)
    try:
        link = await ctl.link().hello(running_tasks=[RunningTask(task_id=task.task_id,
                                                                 attempt=1)])
        await ctl.engine.cancel(task.task_id)
        assert await link.conn.wait_for(CancelTask) == CancelTask(task_id=task.task_id,
                                                                  attempt=1)
    finally:
        await ctl.stop()


async def test_after_a_restart_a_task_its_agent_no_longer_runs_is_lost(ctl):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    ctl = await restart(ctl)
    try:
        failed = ctl.task_reaches(task.task_id, S.FAILED)
        await ctl.link().hello()
        assert (await settle(failed)).task.error == "agent lost"
    finally:
        await ctl.stop()


async def test_after_a_restart_a_task_whose_agent_never_returns_is_lost_after_the_ttl(ctl, clock):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    ctl = await restart(ctl)
    try:
        failed = ctl.task_reaches(task.task_id, S.FAILED)
        clock.advance(TTL - 1)
        assert ctl.engine.get_active(task.task_id).state == S.RUNNING
        clock.advance(1)
        assert (await settle(failed)).task.error == "agent lost"
    finally:
        await ctl.stop()


async def test_after_a_restart_the_in_process_agents_tasks_are_not_adopted(ctl):
    link = await ctl.link().hello("local")
    task = await start_running(ctl, link)
    await ctl.stop()
    ctl = await Controller(ctl.path.parent, ctl.clock).start(local_node="local")
    try:
        stored = await ctl.store.get_task(task.task_id)
        assert (stored.state, stored.error) == (S.FAILED, "controller restarted")
    finally:
        await ctl.stop()


async def test_stopping_the_controller_neither_loses_nor_cancels_remote_tasks(ctl):
    link = await ctl.link().hello()
    task = await start_running(ctl, link)
    await ctl.hub.stop()
    await link.conn.wait_closed()
    await link.drop()
    assert not link.conn.of(CancelTask)
    assert ctl.engine.get_active(task.task_id).state == S.RUNNING
    assert (await ctl.nodes.get("nodeB")).health == Health.HEALTHY


# --- assignments and instances --------------------------------------------------------------


async def test_push_reaches_a_connected_node_only(ctl):
    link = await ctl.link().hello()
    change = Assignments(removed=["i9"])
    await ctl.hub.push("nodeB", change)
    await ctl.hub.push("nodeZ", change)  # not connected: nothing happens
    assert link.conn.of(Assignments)[-1] == change


async def test_instance_statuses_reach_every_listener(ctl):
    seen_a: list[InstanceStatus] = []
    seen_b: list[InstanceStatus] = []
    ctl.hub.add_status_listener(seen_a.append)
    ctl.hub.add_status_listener(seen_b.append)
    first = InstanceStatus(instance_id="i1", node_id="nodeB", phase=InstancePhase.RUNNING)
    link = await ctl.link().hello(instances=[first])
    second = InstanceStatus(instance_id="i1", node_id="nodeB", phase=InstancePhase.STOPPED)
    await link.send(InstanceStatusMsg(status=second))
    assert seen_a == seen_b == [first, second]
