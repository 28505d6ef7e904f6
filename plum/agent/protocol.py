"""The agent link's messages: what agents and the controller say to each other.

The same typed messages travel over the websocket `/v1/agents/connect` (JSON, one message
per frame, tagged by `type`) and, in all-in-one mode, in-process (no encoding at all).

    agent -> controller: hello, heartbeat, instanceStatus, taskStarted, taskResult, taskLog
    controller -> agent: welcome, assignments, runTask, cancelTask, resultAck

On connect the agent says `hello` with its full state (the instances it runs, the tasks
still running); the controller answers `welcome` and then `assignments` with the full set
for that node (`full: true`); after that both sides send changes only. Every task message
carries `attempt`: a result for an older attempt is ignored by the controller. The agent
keeps each task result until the controller acknowledges it (`resultAck`) and lists such
tasks in `hello.runningTasks` with the running ones, so a result produced or sent while the
link was down is sent again after the reconnect.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from plum.engine.model import Model, Usage
from plum.executors.base import ExecutionRequest


class Message(Model, frozen=True, tag_field="type"):
    """Base of link messages; the wire tag is the class's `tag` (camelCase)."""


class InstancePhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    STOPPED = "Stopped"
    FAILED = "Failed"
    COMPLETED = "Completed"


class DesiredState(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"


class ServiceEndpoint(Model, frozen=True):
    """A `service=<name>:<protocol>:<port>` line of an app's meta.ini."""

    service_name: str
    protocol: str
    port: int
    version: str = ""


class Assignment(Model, frozen=True):
    """What the controller wants one instance on one node to be."""

    instance_id: str
    deployment_id: str
    node_id: str
    desired: DesiredState
    artifact_url: str
    artifact_sha256: str = ""
    app_name: str = ""
    app_version: str = ""
    start_cmd: str = ""
    env: dict[str, str] = {}
    services: list[ServiceEndpoint] = []
    image: str = ""  # container runs: the image to start instead of an artifact


class InstanceStatus(Model, frozen=True):
    """What an instance on a node actually is."""

    instance_id: str
    node_id: str
    phase: InstancePhase
    deployment_id: str = ""
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    message: str = ""
    healthy: bool = False
    reported_at: float = 0.0


class RunningTask(Model, frozen=True):
    task_id: str
    attempt: int


# -- agent -> controller
class Hello(Message, frozen=True, tag="hello"):
    node_id: str
    ip: str
    labels: dict[str, str] = {}
    capacity: int = 0
    version: str = ""
    instances: list[InstanceStatus] = []
    running_tasks: list[RunningTask] = []


class Heartbeat(Message, frozen=True, tag="heartbeat"):
    usage: Usage = Usage()


class InstanceStatusMsg(Message, frozen=True, tag="instanceStatus"):
    status: InstanceStatus


class TaskStarted(Message, frozen=True, tag="taskStarted"):
    task_id: str
    attempt: int


class TaskResult(Message, frozen=True, tag="taskResult"):
    task_id: str
    attempt: int
    ok: bool
    result: Any = None
    error: str | None = None


class TaskLog(Message, frozen=True, tag="taskLog"):
    task_id: str
    attempt: int
    stream: str
    text: str


# -- controller -> agent
class Welcome(Message, frozen=True, tag="welcome"):
    heartbeat_sec: float
    controller_version: str = ""


class Assignments(Message, frozen=True, tag="assignments"):
    items: list[Assignment] = []
    removed: list[str] = []
    full: bool = False


class RunTask(Message, frozen=True, tag="runTask"):
    request: ExecutionRequest


class CancelTask(Message, frozen=True, tag="cancelTask"):
    task_id: str
    attempt: int


class ResultAck(Message, frozen=True, tag="resultAck"):
    """The controller has this attempt's result; the agent may forget it."""

    task_id: str
    attempt: int


class InstanceLogRequest(Message, frozen=True, tag="instanceLogRequest"):
    """The controller asks for the end of an instance's log."""

    request_id: str
    instance_id: str
    tail_bytes: int = 64 * 1024


class InstanceLog(Message, frozen=True, tag="instanceLog"):
    """The agent's answer: the last `tail_bytes` of the instance's log (`found` false when
    this node has no such instance)."""

    request_id: str
    instance_id: str
    text: str = ""
    truncated: bool = False
    found: bool = True


AgentMessage = (Hello | Heartbeat | InstanceStatusMsg | TaskStarted | TaskResult | TaskLog
                | InstanceLog)
ControllerMessage = Welcome | Assignments | RunTask | CancelTask | ResultAck | InstanceLogRequest

_agent_decoder = msgspec.json.Decoder(AgentMessage)
_controller_decoder = msgspec.json.Decoder(ControllerMessage)


def encode(message: Message) -> bytes:
    return msgspec.json.encode(message)


def decode_from_agent(raw: bytes | str) -> AgentMessage:
    return _agent_decoder.decode(raw)


def decode_from_controller(raw: bytes | str) -> ControllerMessage:
    return _controller_decoder.decode(raw)
