"""The link's messages survive a JSON round trip, with camelCase fields and `type` tags."""

from __future__ import annotations

import json

import msgspec
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
    ServiceEndpoint,
    TaskLog,
    TaskResult,
    TaskStarted,
    Welcome,
    decode_from_agent,
    decode_from_controller,
    encode,
)
from plum.engine.model import Usage
from plum.executors.base import ExecutionRequest, ExecutorKind

STATUS = InstanceStatus(instance_id="i1", node_id="nodeB", phase=InstancePhase.RUNNING, pid=42,
                        restarts=1, healthy=True, reported_at=1.5)
FROM_AGENT = [
    Hello(node_id="nodeB", ip="127.0.0.2", labels={"zone": "a"}, capacity=8, version="1.0",
          instances=[STATUS], running_tasks=[RunningTask(task_id="t1", attempt=2)]),
    Heartbeat(usage=Usage(cpu_percent=1.5, mem_percent=2.5, mem_used_bytes=3,
                          mem_total_bytes=4)),
    InstanceStatusMsg(status=STATUS),
    TaskStarted(task_id="t1", attempt=1),
    TaskResult(task_id="t1", attempt=1, ok=True, result={"exitCode": 0, "stdout": "é\n"}),
    TaskResult(task_id="t1", attempt=1, ok=False, error="process exited with code 1"),
    TaskLog(task_id="t1", attempt=1, stream="stderr", text="warn"),
]
FROM_CONTROLLER = [
    Welcome(heartbeat_sec=5.0, controller_version="1.0"),
    Assignments(full=True, removed=["i0"], items=[Assignment(
        instance_id="i1", deployment_id="d1", node_id="nodeB", desired=DesiredState.RUNNING,
        artifact_url="http://c/artifacts/a.zip", env={"A": "1"},
        services=[ServiceEndpoint(service_name="web", protocol="http", port=8000)])]),
    RunTask(request=ExecutionRequest(
        task_id="t1", attempt=3, name="sh", executor=ExecutorKind.OS_PROCESS,
        payload={"command": "/bin/sh", "args": ["-c", "true"]}, target_kind="node",
        target_ref="nodeB", labels={"a": "b"}, timeout_sec=30.0)),
    CancelTask(task_id="t1", attempt=3),
    ResultAck(task_id="t1", attempt=3),
]


@pytest.mark.parametrize("message", FROM_AGENT, ids=lambda m: type(m).__name__)
def test_agent_messages_round_trip(message):
    assert decode_from_agent(encode(message)) == message
    assert decode_from_agent(encode(message).decode()) == message


@pytest.mark.parametrize("message", FROM_CONTROLLER, ids=lambda m: type(m).__name__)
def test_controller_messages_round_trip(message):
    assert decode_from_controller(encode(message)) == message


def test_wire_shape_is_tagged_camel_case():
    hello = json.loads(encode(FROM_AGENT[0]))
    assert hello["type"] == "hello"
    assert hello["nodeId"] == "nodeB"
    assert hello["runningTasks"] == [{"taskId": "t1", "attempt": 2}]
    run = json.loads(encode(FROM_CONTROLLER[2]))
    assert run["type"] == "runTask"
    assert run["request"]["targetRef"] == "nodeB"
    tags = {json.loads(encode(m))["type"] for m in FROM_AGENT + FROM_CONTROLLER}
    assert tags == {"hello", "heartbeat", "instanceStatus", "taskStarted", "taskResult",
                    "taskLog", "welcome", "assignments", "runTask", "cancelTask", "resultAck"}


@pytest.mark.parametrize("raw", [
    b"not json",
    b'{"type": "nonsense"}',
    b'{"type": "hello"}',  # nodeId missing
    b'{"type": "taskStarted", "taskId": "t1", "attempt": "one"}',
    b'{"type": "runTask", "request": {}}',  # a controller message, from an agent
])
def test_malformed_frames_are_rejected(raw):
    with pytest.raises(msgspec.DecodeError):
        decode_from_agent(raw)


def test_each_side_only_decodes_the_other_sides_messages():
    with pytest.raises(msgspec.DecodeError):
        decode_from_controller(encode(TaskStarted(task_id="t1", attempt=1)))
