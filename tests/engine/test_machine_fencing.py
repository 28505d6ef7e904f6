"""A task end reaches its node by key; only the node's current task may finish it."""

import msgspec

from plum.engine.dag import Dag, WorkflowSpec
from plum.engine.machine import RunMachine, Start, StartTask, TaskDone
from plum.engine.rules import NodeState


def test_end_of_an_older_task_does_not_finish_the_node():
    spec = WorkflowSpec(name="w", dag=msgspec.convert(
        {"nodes": [{"id": "a", "taskName": "builtin.echo"}]}, Dag))
    machine = RunMachine("r", spec, {})
    start = next(c for c in machine.handle(Start(), 1.0) if isinstance(c, StartTask))
    machine.assign(start.key, task_id="current")
    assert machine.handle(TaskDone("a", NodeState.SUCCEEDED, task_id="older"), 2.0) == []
    assert machine.nodes["a"].state == NodeState.RUNNING
    machine.handle(TaskDone("a", NodeState.SUCCEEDED, {"ok": 1}, task_id="current"), 3.0)
    assert machine.nodes["a"].state == NodeState.SUCCEEDED
