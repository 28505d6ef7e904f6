"""The agent's side of the link: running tasks as real processes for the controller, keeping
results until acknowledged, cancel, assignments to the supervisor; and the in-process link
of all-in-one mode, end to end through the hub and the task engine."""

from __future__ import annotations

import asyncio

import pytest

from plum.agent.agent import Agent
from plum.agent.link import LocalLink
from plum.agent.protocol import (
    Assignments,
    CancelTask,
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
from plum.config import load_config
from plum.engine.tasks import TaskState
from plum.executors.base import ExecutionRequest, ExecutorKind
from plum.testing import FakeClock
from tests.support.hub import Controller, Messages, settle
from tests.support.pids import wait_gone

pytestmark = pytest.mark.timeout(30)

SAFETY = 10.0  # never reached when all is well


class FakeLink(Messages):
    """Records what the agent posts; `up = False` drops posts like a link that is down
    (`tried` has every message, delivered or not; `wait_for` looks at those)."""

    def __init__(self) -> None:
        super().__init__(SAFETY)
        self.up = True
        self.posted: list = []

    @property
    def tried(self) -> list:
        return self.messages

    async def run(self, agent) -> None:
        await asyncio.Event().wait()  # linked until cancelled

    def post(self, message) -> bool:
        self.record(message)
        if self.up:
            self.posted.append(message)
        return self.up

    async def flush(self, timeout: float) -> None:
        return None


class FakeSupervisor:
    def __init__(self) -> None:
        self.applied: list[Assignments] = []

    async def apply(self, assignments: Assignments) -> None:
        self.applied.append(assignments)

    def statuses(self) -> list[InstanceStatus]:
        return [InstanceStatus(instance_id="i1", node_id="nodeA", phase=InstancePhase.RUNNING)]


def config(tmp_path, **environ):
    return load_config(None, dotenv=None, environ={
        "AGENT_NODE_ID": "nodeA", "AGENT_IP": "127.0.0.5", "CONTROLLER_BASE": "http://c:1",
        "CONTROLLER_DATA_DIR": str(tmp_path / "data"), **environ})


def run_task(task_id: str, script: str, attempt: int = 1) -> RunTask:
    return RunTask(request=ExecutionRequest(
        task_id=task_id, attempt=attempt, name="sh", executor=ExecutorKind.OS_PROCESS,
        payload={"command": "/bin/sh", "args": ["-c", script]}))


@pytest.fixture
async def agent(tmp_path):
    link = FakeLink()
    agent = Agent(config(tmp_path), link, FakeClock())
    async with agent.running():
        yield agent, link


async def test_a_task_runs_and_reports_start_output_and_result(agent):
    agent, link = agent
    await agent.receive(run_task("t1", 'echo "$WORKER_NODE_ID $CONTROLLER_BASE"'))
    result = await link.wait_for(TaskResult)
    assert (result.task_id, result.attempt, result.ok) == ("t1", 1, True)
    assert result.result["stdout"] == "nodeA http://c:1\n"
    assert [type(m) for m in link.posted] == [TaskStarted, TaskLog, TaskResult]
    assert link.posted[1] == TaskLog(task_id="t1", attempt=1, stream="stdout",
                                     text="nodeA http://c:1")


async def test_hello_lists_running_tasks_and_unacknowledged_results(agent, tmp_path):
    agent, link = agent
    gate = tmp_path / "go"
    await agent.receive(run_task("slow", f"while [ ! -e {gate} ]; do sleep 0.02; done"))
    await link.wait_for(TaskStarted)
    hello = agent.hello()
    assert isinstance(hello, Hello)
    assert (hello.node_id, hello.ip) == ("nodeA", "127.0.0.5")
    assert hello.running_tasks == [RunningTask(task_id="slow", attempt=1)]
    gate.touch()
    await link.wait_for(TaskResult)
    assert agent.hello().running_tasks == [RunningTask(task_id="slow", attempt=1)]
    await agent.receive(ResultAck(task_id="slow", attempt=1))
    assert agent.hello().running_tasks == []


async def test_a_result_produced_while_the_link_is_down_is_sent_after_the_reconnect(agent):
    agent, link = agent
    link.up = False
    await agent.receive(run_task("t1", "echo done"))
    await link.wait_for(TaskResult)  # tried, dropped
    assert not link.posted
    assert agent.hello().running_tasks == [RunningTask(task_id="t1", attempt=1)]
    link.up = True
    await agent.receive(Welcome(heartbeat_sec=2.0))
    [result] = link.posted
    assert (result.task_id, result.ok, result.result["stdout"]) == ("t1", True, "done\n")
    assert agent.heartbeat_sec == 2.0
    assert agent.registered.is_set()


async def test_cancel_kills_the_process(agent):
    agent, link = agent
    await agent.receive(run_task("t1", "echo $$; exec sleep 300"))
    line = await link.wait_for(TaskLog)
    await agent.receive(CancelTask(task_id="t1", attempt=2))  # another attempt: ignored
    assert agent.hello().running_tasks == [RunningTask(task_id="t1", attempt=1)]
    await agent.receive(CancelTask(task_id="t1", attempt=1))
    assert await wait_gone(int(line.text))
    assert agent.hello().running_tasks == []
    assert not [m for m in link.posted if isinstance(m, TaskResult)]


async def test_the_same_attempt_sent_twice_runs_once(agent, tmp_path):
    agent, link = agent
    gate = tmp_path / "go"
    message = run_task("t1", f"echo once; while [ ! -e {gate} ]; do sleep 0.02; done")
    await agent.receive(message)
    await link.wait_for(TaskStarted)
    await agent.receive(message)
    assert len([m for m in link.posted if isinstance(m, TaskStarted)]) == 2  # said again
    gate.touch()
    await link.wait_for(TaskResult)
    await agent.receive(message)  # after it ended: the kept result is sent again
    assert len([m for m in link.posted if isinstance(m, TaskResult)]) == 2
    assert [m.text for m in link.posted if isinstance(m, TaskLog)] == ["once"]


async def test_assignments_go_to_the_supervisor_and_statuses_go_to_the_controller(tmp_path):
    link = FakeLink()
    supervisor = FakeSupervisor()
    agent = Agent(config(tmp_path), link, FakeClock(), supervisor=supervisor)
    async with agent.running():
        change = Assignments(removed=["i0"])
        await agent.receive(change)
        assert supervisor.applied == [change]
        assert [s.instance_id for s in agent.hello().instances] == ["i1"]
        status = InstanceStatus(instance_id="i1", node_id="nodeA", phase=InstancePhase.FAILED)
        agent.report_status(status)
        assert link.posted == [InstanceStatusMsg(status=status)]


# --- all-in-one: the in-process link ---------------------------------------------------------


async def test_the_in_process_agent_runs_tasks_through_the_hub(tmp_path):
    clock = FakeClock()
    ctl = await Controller(tmp_path, clock).start(local_node="nodeA")
    try:
        agent = Agent(config(tmp_path), LocalLink(ctl.hub, clock), clock)
        async with agent.running(wait_registered=True):
            assert ctl.hub.connected_nodes() == {"nodeA"}
            task = await ctl.submit(payload={"command": "/bin/sh",
                                             "args": ["-c", "echo $WORKER_NODE_ID"]})
            done = ctl.task_reaches(task.task_id, TaskState.SUCCEEDED)
            finished = (await settle(done)).task
            assert finished.scheduled_on == "nodeA"
            assert finished.result["stdout"] == "nodeA\n"
            assert [line.text for line in ctl.engine.logs.lines(task.task_id)] == ["nodeA"]
            node = await ctl.nodes.get("nodeA")
            assert (node.ip, node.health) == ("127.0.0.5", "Healthy")
            assert node.usage.mem_total_bytes > 0  # the first heartbeat goes out at once
    finally:
        await ctl.stop()
