"""The run state machine, events in and commands out: every node type, templates, cancel,
retry, the run's outcome, late events, and rebuilding from the stored node records.

Commands are compared in a short form (see `Run.send`): `("run", state)`, `(key, state)`
for a node's state change, `("start", key)`, `("child", key, workflow, params)`,
`("cancel", key, task_id)`, `("cancel-child", key, child_run_id)`."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

import pytest

from plum.engine.dag import WorkflowSpec, validate
from plum.engine.forms import normalize
from plum.engine.machine import (
    Cancel,
    CancelChild,
    CancelTask,
    ChildDone,
    Command,
    Event,
    NodeChanged,
    NodeRecord,
    NodesDropped,
    RetryFailed,
    RunChanged,
    RunMachine,
    RunState,
    Start,
    StartChild,
    StartTask,
    TaskDone,
)
from plum.engine.rules import NodeState

S = NodeState
CHILD_WF = "child-wf"


# -- building workflows
def task(node_id: str, **fields: Any) -> dict:
    return {"id": node_id, "taskName": "t", **fields}


def edge(src: str, dst: str, kind: str | None = None) -> dict:
    return {"from": src, "to": dst, **({"edgeType": kind} if kind else {})}


def chain(*ids: str) -> list[dict]:
    return [edge(a, b) for a, b in pairwise(ids)]


def branch(node_id: str, field: str, operator: str, value: Any, *, source: str | None = None,
           **fields: Any) -> dict:
    cond = {"field": field, "operator": operator, "value": value,
            **({"source": source} if source else {})}
    return {"id": node_id, "type": "branch", "condition": cond, **fields}


def loop(node_id: str, loop_spec: dict, nodes: list[dict], edges: Iterable[dict] = ()) -> dict:
    return {"id": node_id, "type": "loop", "loop": loop_spec,
            "body": {"nodes": nodes, "edges": list(edges)}}


def wf(nodes: list[dict], edges: Iterable[dict] = (), *, params: dict | None = None,
       check: bool = True) -> WorkflowSpec:
    spec = normalize({"name": "wf", "params": params or {}, "nodes": nodes,
                      "edges": list(edges)})
    if check:
        validate(spec, task_defs=set(), task_names={"t"}, workflows={CHILD_WF: set()})
    return spec


# -- driving a machine
Outcome = Callable[[StartTask], tuple[NodeState, Any]]


def echo(command: StartTask) -> tuple[NodeState, Any]:
    return S.SUCCEEDED, {"echo": command.payload}


def fail(*keys: str, state: NodeState = S.FAILED, then: Outcome = echo) -> Outcome:
    """Fails the given node keys (or node ids), answers the rest with `then`."""
    def outcome(command: StartTask) -> tuple[NodeState, Any]:
        if command.key in keys or command.node.id in keys:
            return state, None
        return then(command)
    return outcome


def results(by_id: dict[str, Any]) -> Outcome:
    """Succeeds with a fixed result per node id (echo for the others)."""
    def outcome(command: StartTask) -> tuple[NodeState, Any]:
        if command.node.id in by_id:
            return S.SUCCEEDED, by_id[command.node.id]
        return echo(command)
    return outcome


def iteration_of(key: str) -> int:
    return int(key.rsplit("#", 1)[1].split("/", 1)[0])


class Run:
    """A machine plus what the orchestrator would keep: the stored node records (the
    initial ones, then the latest `NodeChanged` of each key), the unanswered StartTask /
    StartChild commands, and every payload a task was started with."""

    def __init__(self, spec: WorkflowSpec, params: dict | None = None):
        self.params = {**spec.params, **(params or {})}
        self.machine = RunMachine("run-1", spec, self.params)
        self.stored: dict[str, NodeRecord] = dict(self.machine.nodes)
        self.open: deque[StartTask | StartChild] = deque()
        self.payloads: dict[str, Any] = {}
        self.children: dict[str, StartChild] = {}
        self.last_run: RunChanged | None = None
        self.events: list[Event] = []
        self.now = 0.0

    def send(self, event: Event) -> list[tuple]:
        self.now += 1
        self.events.append(event)
        return [self._brief(c) for c in self._apply(self.machine.handle(event, self.now))]

    def _apply(self, commands: list[Command]) -> Iterable[Command]:
        for command in commands:
            match command:
                case NodeChanged(record):
                    old = self.stored.get(record.node_key)
                    self.stored[record.node_key] = record
                    if old is not None and old.state == record.state:
                        continue
                case StartTask(key, _, payload):
                    self.open.append(command)
                    self.payloads[key] = payload
                case StartChild(key):
                    self.open.append(command)
                    self.children[key] = command
                case RunChanged():
                    self.last_run = command
                case NodesDropped(keys):
                    for key in keys:
                        self.stored.pop(key, None)
                    continue
            yield command

    @staticmethod
    def _brief(command: Command) -> tuple:
        match command:
            case NodeChanged(record):
                return (record.node_key, record.state.value)
            case RunChanged(state):
                return ("run", state.value)
            case StartTask(key):
                return ("start", key)
            case StartChild(key, workflow_id, params):
                return ("child", key, workflow_id, params)
            case CancelTask(key, task_id):
                return ("cancel", key, task_id)
            case CancelChild(key, child_run_id):
                return ("cancel-child", key, child_run_id)
        raise AssertionError(command)

    def start(self) -> list[tuple]:
        return self.send(Start())

    def done(self, key: str, state: NodeState = S.SUCCEEDED, result: Any = None,
             error: str | None = None) -> list[tuple]:
        return self.send(TaskDone(key, state, result, error))

    def child_done(self, key: str, state: RunState, result: Any = None,
                   error: str | None = None) -> list[tuple]:
        return self.send(ChildDone(key, state, result, error))

    def assign(self, key: str, **ids: str) -> None:
        self.stored[key] = self.machine.assign(key, **ids)

    def finish(self, outcome: Outcome = echo,
               child: Callable[[StartChild], tuple[RunState, Any]] | None = None,
               max_steps: int = 1000) -> list[tuple]:
        """Answer every open StartTask (and StartChild) in order until nothing is open."""
        out: list[tuple] = []
        for _ in range(max_steps):
            if not self.open:
                return out
            command = self.open.popleft()
            if isinstance(command, StartTask):
                state, result = outcome(command)
                out += self.done(command.key, state, result)
            else:
                state, result = (child or (lambda c: (RunState.SUCCEEDED, None)))(command)
                out += self.child_done(command.key, state, result)
        raise AssertionError("the run did not settle")

    def run(self, outcome: Outcome = echo, **kw: Any) -> RunMachine:
        self.start()
        self.finish(outcome, **kw)
        return self.machine

    # -- reading the machine
    def state(self, key: str) -> str:
        return self.machine.nodes[key].state.value

    def states(self) -> dict[str, str]:
        return {k: r.state.value for k, r in self.machine.nodes.items()}

    def record(self, key: str) -> NodeRecord:
        return self.machine.nodes[key]

    @property
    def run_state(self) -> str:
        return self.machine.state.value


def started(brief: list[tuple]) -> list[str]:
    return [b[1] for b in brief if b[0] == "start"]


# -- tasks
def test_sequential_steps_run_as_a_chain():
    spec = normalize({"name": "seq", "steps": [
        {"name": "fetch", "executor": "embedded", "payload": {"url": "u"}},
        {"name": "parse", "executor": "embedded"},
        {"name": "store", "executor": "embedded"},
    ]})
    run = Run(spec)
    table = [
        (Start(), [("run", "Running"), ("step1", "Running"), ("start", "step1")]),
        (TaskDone("step1", S.SUCCEEDED, {"n": 1}),
         [("step1", "Succeeded"), ("step2", "Running"), ("start", "step2")]),
        (TaskDone("step2", S.SUCCEEDED, {"n": 2}),
         [("step2", "Succeeded"), ("step3", "Running"), ("start", "step3")]),
        (TaskDone("step3", S.SUCCEEDED, {"n": 3}), [("step3", "Succeeded"), ("run", "Succeeded")]),
    ]
    for event, want in table:
        assert run.send(event) == want, event
    assert run.payloads["step1"] == {"url": "u"}
    assert run.last_run == RunChanged(RunState.SUCCEEDED, {"step3": {"n": 3}})
    record = run.record("step2")
    assert (record.result, record.attempt, record.started_at, record.finished_at) == \
        ({"n": 2}, 1, 2.0, 3.0)


def test_independent_roots_start_together_and_the_task_attempt_is_recorded():
    run = Run(wf([task("a"), task("b"), task("c")], chain("a", "c")))
    assert started(run.start()) == ["a", "b"]
    run.send(TaskDone("b", S.SUCCEEDED, 1, attempt=3))
    assert run.record("b").attempt == 3


# -- payload templates
PARAMS = {"n": 3, "name": "plum", "flags": [1, 2], "cfg": {"deep": True}}
A_RESULT = {"path": "/data/x.csv", "items": [{"score": 0.5}], "count": 2}


@pytest.mark.parametrize(("payload", "want"), [
    ("${params.n}", 3),
    ({"n": "${params.n}", "flags": "${params.flags}"}, {"n": 3, "flags": [1, 2]}),
    ("${params.cfg}", {"deep": True}),
    ("${params.cfg.deep}", True),
    ({"file": "${nodes.a.result.path}"}, {"file": "/data/x.csv"}),
    ("${nodes.a.result.items.0.score}", 0.5),
    ("${nodes.a.result.count}", 2),
    ("${nodes.a.state}", "Succeeded"),
    ("run-${params.n}-of-${params.name}", "run-3-of-plum"),
    ("copy ${nodes.a.result.path} x${nodes.a.result.count}", "copy /data/x.csv x2"),
    ("flags=${params.flags}", "flags=[1,2]"),
    (["${params.n}", {"deep": "${params.name}"}], [3, {"deep": "plum"}]),
    ("no template", "no template"),
    (None, None),
], ids=repr)
def test_payload_templates(payload, want):
    run = Run(wf([task("a"), task("b", payload=payload)], chain("a", "b"), params=PARAMS))
    run.start()
    assert started(run.done("a", result=A_RESULT)) == ["b"]
    assert run.payloads["b"] == want
    assert run.record("b").input == want


@pytest.mark.parametrize("payload", [
    "${params.nope}",
    {"x": "${nodes.a.result.missing}"},
    "${nodes.zzz.result}",
    "x-${loop.index}",
    "${nodes.c.result.v}",  # c is still running: it has no result yet
])
def test_a_template_naming_nothing_fails_the_node(payload):
    spec = wf([task("a"), task("b", payload=payload), task("c"), task("d")],
              chain("a", "b", "d"), params=PARAMS)
    run = Run(spec)
    run.start()
    brief = run.done("a", result=A_RESULT)
    assert started(brief) == []
    assert ("b", "Failed") in brief and ("d", "UpstreamFailed") in brief
    assert run.record("b").error.startswith("template error")
    run.done("c", result={"v": 1})
    assert run.run_state == "Failed"
    assert run.last_run.error.startswith("d UpstreamFailed")


def test_run_params_override_workflow_defaults():
    spec = wf([task("a", payload="${params.n}")], params={"n": 1})
    run = Run(spec, {"n": 2})
    run.start()
    assert run.payloads["a"] == 2


# -- branches
def branch_wf(cond_field: str = "result.score", operator: str = ">", value: Any = 50,
              join_rule: str | None = None) -> WorkflowSpec:
    """a -> br; true: t1 -> t2; false: f1 -> f2; optionally t2, f2 -> join."""
    nodes = [task("a"), branch("br", cond_field, operator, value),
             task("t1"), task("t2"), task("f1"), task("f2")]
    edges = [edge("a", "br"), edge("br", "t1", "true"), edge("br", "f1", "false"),
             *chain("t1", "t2"), *chain("f1", "f2")]
    if join_rule:
        nodes.append(task("join", triggerRule=join_rule))
        edges += [edge("t2", "join"), edge("f2", "join")]
    return wf(nodes, edges)


@pytest.mark.parametrize(("score", "taken", "untaken"), [
    (80, ["t1", "t2"], ["f1", "f2"]),
    (20, ["f1", "f2"], ["t1", "t2"]),
])
def test_branch_skips_the_untaken_side_through_its_chain(score, taken, untaken):
    run = Run(branch_wf())
    run.start()
    brief = run.done("a", result={"score": score})
    assert [b for b in brief if b[0] == "br"] == [("br", "Running"), ("br", "Succeeded")]
    assert started(brief) == [taken[0]]
    assert (untaken[0], "Skipped") in brief
    run.finish()
    assert {k: run.state(k) for k in taken + untaken} == \
        {**dict.fromkeys(taken, "Succeeded"), **dict.fromkeys(untaken, "Skipped")}
    assert run.record("br").result == {"value": score, "result": score > 50}
    assert run.record("br").decision is (score > 50)
    assert run.run_state == "Succeeded"  # a Skipped leaf is not a failure


@pytest.mark.parametrize(("rule", "want"), [
    ("one_success", "Succeeded"),
    ("none_failed", "Succeeded"),
    ("all_done", "Succeeded"),
    ("all_success", "Skipped"),
    ("all_failed", "Skipped"),
    ("one_failed", "Skipped"),
])
def test_join_after_a_branch(rule, want):
    run = Run(branch_wf(join_rule=rule))
    run.run(results({"a": {"score": 99}}))
    assert run.state("join") == want
    assert run.run_state == "Succeeded"


@pytest.mark.parametrize(("operator", "value", "result", "want"), [
    (">", 50, 80, True), (">", 80, 80, False), ("<", 50, 80, False), ("<", 81, 80, True),
    (">=", 80, 80, True), ("<=", 79, 80, False), ("==", "gold", "gold", True),
    ("!=", "gold", "gold", False), ("==", None, None, True), ("==", [1], [1], True),
])
def test_branch_operators(operator, value, result, want):
    run = Run(branch_wf(operator=operator, value=value))
    run.start()
    run.done("a", result={"score": result})
    assert run.record("br").decision is want


def test_branch_condition_on_a_nested_path_and_an_explicit_source():
    nodes = [task("a"), task("b"),
             branch("br", "result.items.0.score", ">=", 5, source="b"),
             task("yes"), task("no")]
    spec = wf(nodes, [edge("a", "br"), edge("b", "br"), edge("br", "yes", "true"),
                      edge("br", "no", "false")])
    run = Run(spec)
    run.run(results({"a": {"items": [{"score": 0}]}, "b": {"items": [{"score": 7}, 1]}}))
    assert (run.state("yes"), run.state("no")) == ("Succeeded", "Skipped")
    assert run.record("br").result == {"value": 7, "result": True}


@pytest.mark.parametrize(("a_result", "error"), [
    ({"other": 1}, "result.score"),
    (None, "result.score"),
    ({"score": "high"}, "cannot compare"),
])
def test_branch_fails_when_its_condition_cannot_be_evaluated(a_result, error):
    run = Run(branch_wf())
    run.start()
    brief = run.done("a", result=a_result)
    assert ("br", "Failed") in brief and started(brief) == []
    assert error in run.record("br").error
    run.finish()
    assert {k: run.state(k) for k in ("t1", "t2", "f1", "f2")} == \
        dict.fromkeys(("t1", "t2", "f1", "f2"), "UpstreamFailed")
    assert run.run_state == "Failed"


def test_a_skipped_branch_skips_both_sides():
    spec = wf([task("a"), task("b", triggerRule="all_failed"),
               branch("br", "result.x", "==", 1), task("yes"), task("no")],
              [*chain("a", "b", "br"), edge("br", "yes", "true"), edge("br", "no", "false")])
    run = Run(spec)
    run.run()
    assert run.states() == {"a": "Succeeded", "b": "Skipped", "br": "Skipped",
                            "yes": "Skipped", "no": "Skipped"}
    assert run.run_state == "Succeeded"


# -- parallel
def test_parallel_fans_out_in_one_handle_and_the_join_waits_for_all():
    spec = wf([{"id": "p", "type": "parallel"}, task("x"), task("y"), task("z"), task("j")],
              [edge("p", "x"), edge("p", "y"), edge("p", "z"),
               edge("x", "j"), edge("y", "j"), edge("z", "j")])
    run = Run(spec)
    brief = run.start()
    assert brief[:3] == [("run", "Running"), ("p", "Running"), ("p", "Succeeded")]
    assert sorted(started(brief)) == ["x", "y", "z"]
    assert started(run.done("z")) == []
    assert started(run.done("x")) == []
    assert started(run.done("y")) == ["j"]
    run.finish()
    assert run.run_state == "Succeeded"


def test_parallel_as_a_fan_in_point_keeps_its_trigger_rule():
    spec = wf([task("x"), task("y"), {"id": "p", "type": "parallel", "triggerRule": "all_done"},
               task("z")], [edge("x", "p"), edge("y", "p"), edge("p", "z")])
    run = Run(spec)
    run.start()
    assert run.done("x", S.FAILED) == [("x", "Failed")]
    brief = run.done("y")
    assert ("p", "Succeeded") in brief and started(brief) == ["z"]


# -- loops
def count_loop_wf(count: int = 3) -> WorkflowSpec:
    body = [task("x", payload={"index": "${loop.index}", "i": "${loop.i}", "n": "${params.n}",
                               "pre": "${nodes.pre.result.v}"}),
            task("y", payload="${nodes.x.result.echo.index}")]
    nodes = [task("pre"), loop("l", {"mode": "count", "count": count, "var": "i"}, body,
                               chain("x", "y")),
             task("post", payload="${nodes.l.result.iterations}")]
    return wf(nodes, chain("pre", "l", "post"), params={"n": 7}, check=count > 0)


def test_count_loop_runs_its_body_per_iteration_with_keys_kept_apart():
    run = Run(count_loop_wf(3))
    run.start()
    brief = run.done("pre", result={"v": "p"})
    assert started(brief) == ["l#0/x"]
    brief += run.finish()
    assert started(brief) == ["l#0/x", "l#0/y", "l#1/x", "l#1/y", "l#2/x", "l#2/y", "post"]
    assert [run.payloads[f"l#{i}/x"] for i in range(3)] == \
        [{"index": i, "i": i, "n": 7, "pre": "p"} for i in range(3)]
    assert [run.payloads[f"l#{i}/y"] for i in range(3)] == [0, 1, 2]  # its own iteration's x
    assert run.payloads["post"] == 3
    first, second = run.record("l#0/x"), run.record("l#1/x")
    assert (first.iteration, first.scope, second.iteration, second.scope) == \
        (0, "l#0/", 1, "l#1/")
    assert run.record("l").result == {"iterations": 3,
                                      "results": [{"y": {"echo": i}} for i in range(3)]}
    assert run.record("l").iterations == 3
    assert run.run_state == "Succeeded"


@pytest.mark.parametrize("failing", ["l#1/x", "l#1/y"])
def test_a_failing_iteration_fails_the_loop(failing):
    run = Run(count_loop_wf(3))
    brief = [*run.start(), *run.finish(fail(failing, then=results({"pre": {"v": 1}})))]
    assert "l#2/x" not in started(brief)
    assert run.state("l") == "Failed"
    assert run.record("l").error.startswith("iteration 1 failed: y ")
    assert run.record("l").result["iterations"] == 2
    assert run.state("post") == "UpstreamFailed"
    assert run.run_state == "Failed"


def test_a_count_of_zero_succeeds_at_once():
    run = Run(count_loop_wf(0))
    run.start()
    brief = run.done("pre", result={"v": 1})
    assert brief == [("pre", "Succeeded"), ("l", "Running"), ("l", "Succeeded"),
                     ("post", "Running"), ("start", "post")]
    assert run.record("l").result == {"iterations": 0, "results": []}
    assert run.payloads["post"] == 0


def condition_loop_wf(*, source: str | None = None, max_iterations: int = 5,
                      field: str = "result.more") -> WorkflowSpec:
    cond = {"field": field, "operator": "==", "value": True,
            **({"source": source} if source else {})}
    body = loop("l", {"mode": "condition", "condition": cond, "maxIterations": max_iterations},
                [task("x", payload="${loop.index}"), task("y")], chain("x", "y"))
    return wf([body, task("after")], chain("l", "after"))


def more_until(stop: int, node: str = "y") -> Outcome:
    """`node` answers `{"more": iteration < stop}`; everything else echoes."""
    def outcome(command: StartTask) -> tuple[NodeState, Any]:
        if command.node.id == node:
            return S.SUCCEEDED, {"more": iteration_of(command.key) < stop}
        return echo(command)
    return outcome


@pytest.mark.parametrize(("stop", "max_iterations", "want"), [
    (0, 5, 1),  # do-while: the body runs once even if the condition is false at once
    (2, 5, 3),
    (99, 4, 4),  # capped by maxIterations
    (99, 1, 1),
])
def test_condition_loop_is_a_do_while_on_the_body_leaf(stop, max_iterations, want):
    run = Run(condition_loop_wf(max_iterations=max_iterations))
    brief = [*run.start(), *run.finish(more_until(stop))]
    want_keys = [f"l#{i}/{n}" for i in range(want) for n in ("x", "y")]
    assert started(brief) == [*want_keys, "after"]
    assert run.record("l").iterations == want
    assert (run.state("l"), run.run_state) == ("Succeeded", "Succeeded")


def test_condition_loop_with_a_source_reads_that_body_node():
    run = Run(condition_loop_wf(source="x"))
    brief = [*run.start(), *run.finish(more_until(1, node="x"))]
    assert started(brief)[-1] == "after"
    assert run.record("l").iterations == 2


def test_condition_loop_fails_when_its_field_is_missing():
    run = Run(condition_loop_wf(field="result.nope"))
    run.run(more_until(5))
    assert run.state("l") == "Failed" and "result.nope" in run.record("l").error
    assert run.state("after") == "UpstreamFailed"


def test_a_loop_body_may_branch():
    body = [task("x"), branch("b", "result.go", "==", True), task("yes"), task("no")]
    body_edges = [edge("x", "b"), edge("b", "yes", "true"), edge("b", "no", "false")]
    spec = wf([loop("l", {"mode": "count", "count": 2}, body, body_edges)])
    run = Run(spec)

    def outcome(command: StartTask) -> tuple[NodeState, Any]:
        return S.SUCCEEDED, {"go": iteration_of(command.key) == 1}

    run.run(outcome)
    assert [run.state(k) for k in ("l#0/yes", "l#0/no", "l#1/yes", "l#1/no")] == \
        ["Skipped", "Succeeded", "Succeeded", "Skipped"]
    assert run.run_state == "Succeeded"


# -- subworkflows
def sub_wf() -> WorkflowSpec:
    sub = {"id": "sub", "type": "subworkflow", "workflowId": CHILD_WF,
           "params": {"n": "${params.n}", "from": "${nodes.a.result.v}"}}
    return wf([task("a"), sub, task("post", payload="${nodes.sub.result.total}")],
              chain("a", "sub", "post"), params={"n": 3})


def test_subworkflow_starts_a_child_with_rendered_params_and_takes_its_result():
    run = Run(sub_wf())
    run.start()
    assert run.done("a", result={"v": "x"}) == [
        ("a", "Succeeded"), ("sub", "Running"), ("child", "sub", CHILD_WF, {"n": 3, "from": "x"}),
    ]
    assert run.child_done("sub", RunState.SUCCEEDED, {"total": 9}) == [
        ("sub", "Succeeded"), ("post", "Running"), ("start", "post"),
    ]
    assert run.record("sub").result == {"total": 9}
    assert run.payloads["post"] == 9


@pytest.mark.parametrize(("child_state", "node_state"), [
    (RunState.FAILED, "Failed"),
    (RunState.CANCELED, "Canceled"),
])
def test_a_child_that_does_not_succeed_fails_the_run(child_state, node_state):
    run = Run(sub_wf())
    run.start()
    run.done("a", result={"v": "x"})
    brief = run.child_done("sub", child_state, error="boom")
    assert brief == [("sub", node_state), ("post", "UpstreamFailed"), ("run", "Failed")]
    assert run.record("sub").error == "boom"


def test_a_child_done_for_a_task_node_is_ignored():
    run = Run(sub_wf())
    run.start()
    assert run.child_done("a", RunState.SUCCEEDED) == []
    assert run.state("a") == "Running"


# -- cancel
def cancel_wf() -> WorkflowSpec:
    sub = {"id": "sub", "type": "subworkflow", "workflowId": CHILD_WF}
    nodes = [task("a"), task("b"), sub, loop("l", {"mode": "count", "count": 2}, [task("x")]),
             task("c")]
    return wf(nodes, chain("a", "c"))


def test_cancel_stops_everything_running_and_cancels_what_is_left():
    run = Run(cancel_wf())
    assert sorted(started(run.start())) == ["a", "b", "l#0/x"]
    for key in ("a", "b", "l#0/x"):
        run.assign(key, task_id=f"t-{key}")
    run.assign("sub", child_run_id="child-1")
    run.done("b")
    brief = run.send(Cancel("stop"))
    assert brief[-1] == ("run", "Canceled")
    assert sorted(brief[:-1]) == sorted([
        ("cancel", "a", "t-a"), ("cancel", "l#0/x", "t-l#0/x"), ("cancel-child", "sub", "child-1"),
        ("a", "Canceled"), ("sub", "Canceled"), ("l", "Canceled"), ("l#0/x", "Canceled"),
        ("c", "Canceled"),
    ])
    assert run.state("b") == "Succeeded"
    assert run.record("c").error == "stop" and run.last_run.error == "stop"


@pytest.mark.parametrize("event", [
    TaskDone("a", S.SUCCEEDED, 1),
    TaskDone("l#0/x", S.FAILED),
    ChildDone("sub", RunState.SUCCEEDED, 1),
    Cancel("again"),
    Start(),
], ids=repr)
def test_events_after_cancel_change_nothing(event):
    run = Run(cancel_wf())
    run.start()
    run.send(Cancel())
    before = dict(run.machine.nodes)
    assert run.send(event) == []
    assert run.machine.nodes == before and run.run_state == "Canceled"


def test_cancel_after_the_run_ended_changes_nothing():
    run = Run(wf([task("a")]))
    run.run()
    assert run.send(Cancel()) == []
    assert run.run_state == "Succeeded"


# -- the run's outcome
OUTCOMES = [
    pytest.param(
        [task("a"), task("b"), task("c"), task("cleanup", triggerRule="all_done")],
        [*chain("a", "b", "c"), edge("b", "cleanup")], fail("b"),
        {"b": "Failed", "c": "UpstreamFailed", "cleanup": "Succeeded"}, "Failed",
        id="failed-middle-upstream-fails-successor-cleanup-still-runs"),
    pytest.param(
        [task("a"), task("b"), task("cleanup", triggerRule="all_done")],
        chain("a", "b", "cleanup"), fail("b"),
        {"b": "Failed", "cleanup": "Succeeded"}, "Succeeded",
        id="only-leaf-is-a-succeeded-cleanup"),
    pytest.param([task("a")], [], fail("a", state=S.TIMEOUT), {"a": "Timeout"}, "Failed",
                 id="timeout-leaf"),
    pytest.param([task("a"), task("b")], [], fail("b"), {"a": "Succeeded", "b": "Failed"},
                 "Failed", id="one-failed-root-leaf"),
    pytest.param(
        [task("a"), task("on_fail", triggerRule="one_failed"), task("on_ok")],
        [edge("a", "on_fail"), edge("a", "on_ok")], fail("a"),
        {"on_fail": "Succeeded", "on_ok": "UpstreamFailed"}, "Failed",
        id="upstream-failed-leaf"),
    pytest.param(
        [task("a"), task("on_fail", triggerRule="one_failed")], chain("a", "on_fail"), echo,
        {"on_fail": "Skipped"}, "Succeeded", id="skipped-leaf"),
    pytest.param(
        [task("a"), task("b"), task("both", triggerRule="all_failed")],
        [edge("a", "both"), edge("b", "both")], fail("a", "b", state=S.TIMEOUT),
        {"both": "Succeeded"}, "Succeeded", id="all-failed-handler"),
    pytest.param(
        [task("a"), task("b"), task("c", triggerRule="none_failed")],
        [edge("a", "c"), edge("b", "c")], fail("b"),
        {"c": "UpstreamFailed"}, "Failed", id="none-failed"),
]


@pytest.mark.parametrize(("nodes", "edges", "outcome", "want_nodes", "want_run"), OUTCOMES)
def test_run_outcome_follows_its_leaves(nodes, edges, outcome, want_nodes, want_run):
    run = Run(wf(nodes, edges))
    run.run(outcome)
    assert {k: run.state(k) for k in want_nodes} == want_nodes
    assert run.run_state == want_run
    assert run.last_run.state.value == want_run
    leaves = {n["id"] for n in nodes} - {e["from"] for e in edges}
    assert run.last_run.result.keys() == leaves


# -- retry failed
def fail_once(*keys: str) -> Outcome:
    seen: set[str] = set()

    def outcome(command: StartTask) -> tuple[NodeState, Any]:
        if command.key in keys and command.key not in seen:
            seen.add(command.key)
            return S.FAILED, None
        return echo(command)
    return outcome


def test_retry_reruns_only_what_did_not_succeed():
    spec = wf([task("a", payload=1), task("b", payload="${nodes.a.result.echo}"),
               task("c", payload="${nodes.a.result.echo}"), task("d")], chain("a", "b", "c"))
    run = Run(spec)
    outcome = fail_once("b")
    run.run(outcome)
    assert run.states() == {"a": "Succeeded", "b": "Failed", "c": "UpstreamFailed",
                            "d": "Succeeded"}
    kept = {k: run.record(k) for k in ("a", "d")}
    assert run.send(RetryFailed()) == [
        ("b", "Pending"), ("c", "Pending"), ("run", "Running"), ("b", "Running"), ("start", "b"),
    ]
    assert run.record("b").error is None and run.record("b").attempt == 0
    run.finish(outcome)
    assert {k: run.record(k) for k in ("a", "d")} == kept
    assert run.payloads["c"] == 1
    assert run.run_state == "Succeeded"


@pytest.mark.parametrize("when", ["running", "succeeded"])
def test_retry_of_a_run_that_did_not_fail_changes_nothing(when):
    run = Run(wf([task("a")]))
    run.start()
    if when == "succeeded":
        run.finish()
    assert run.send(RetryFailed()) == []


def test_retry_after_cancel_reruns_the_canceled_nodes():
    run = Run(wf([task("a"), task("b")], chain("a", "b")))
    run.start()
    run.done("a")
    run.send(Cancel())
    assert started(run.send(RetryFailed())) == ["b"]
    run.finish()
    assert run.run_state == "Succeeded"


def test_retry_reruns_a_failed_loop_from_its_first_iteration():
    spec = wf([loop("l", {"mode": "count", "count": 3}, [task("x")])])
    run = Run(spec)
    outcome = fail_once("l#1/x")
    run.run(outcome)
    assert run.state("l") == "Failed"
    brief = run.send(RetryFailed())
    assert started(brief) == ["l#0/x"]
    assert "l#1/x" not in run.machine.nodes
    brief += run.finish(outcome)
    assert started(brief) == ["l#0/x", "l#1/x", "l#2/x"]
    assert run.state("l") == "Succeeded" and run.run_state == "Succeeded"


def test_retry_keeps_a_succeeded_loop():
    spec = wf([loop("l", {"mode": "count", "count": 2}, [task("x")]), task("after")],
              chain("l", "after"))
    run = Run(spec)
    outcome = fail_once("after")
    run.run(outcome)
    loop_records = {k: r for k, r in run.machine.nodes.items() if k.startswith("l")}
    assert started(run.send(RetryFailed())) == ["after"]
    run.finish(outcome)
    assert {k: r for k, r in run.machine.nodes.items() if k.startswith("l")} == loop_records
    assert run.run_state == "Succeeded"


# -- late and duplicate events
def late_wf() -> WorkflowSpec:
    return wf([task("a"), task("b"), task("d"), task("c")], chain("a", "b", "d"))


@pytest.mark.parametrize("event", [
    TaskDone("a", S.SUCCEEDED, "again"),  # duplicate
    TaskDone("a", S.FAILED, error="late failure"),  # a late report of an old attempt
    TaskDone("d", S.SUCCEEDED),  # not started yet
    TaskDone("zzz", S.SUCCEEDED),  # unknown key
    TaskDone("l#0/x", S.SUCCEEDED),  # unknown iteration key
    ChildDone("b", RunState.SUCCEEDED),  # wrong kind of event for a task
    Start(),  # already started
], ids=repr)
def test_an_event_for_a_node_that_is_not_running_changes_nothing(event):
    run = Run(late_wf())
    run.start()
    run.done("a", result="first")
    before = dict(run.machine.nodes)
    assert run.send(event) == []
    assert run.machine.nodes == before


def test_a_task_done_after_the_run_ended_changes_nothing():
    run = Run(late_wf())
    run.start()
    run.done("c", S.FAILED)
    run.finish()
    assert run.run_state == "Failed"
    before = dict(run.machine.nodes)
    for key in ("a", "b", "c", "d"):
        assert run.done(key, S.SUCCEEDED) == []
    assert run.machine.nodes == before


# -- rebuilding from stored records
def mixed_wf() -> WorkflowSpec:
    """A branch into a loop, a parallel fan-out, a subworkflow and a join."""
    nodes = [
        task("a"), branch("br", "result.score", ">", 50),
        loop("l", {"mode": "count", "count": 2, "var": "i"},
             [task("x", payload="${loop.i}"), task("y", payload="${nodes.x.result}")],
             chain("x", "y")),
        task("f"), task("join", triggerRule="none_failed"),
        {"id": "p", "type": "parallel"}, task("q"),
        {"id": "sub", "type": "subworkflow", "workflowId": CHILD_WF},
        loop("w", {"mode": "condition", "maxIterations": 3,
                   "condition": {"field": "result.more", "operator": "==", "value": True}},
             [task("probe")]),
    ]
    edges = [edge("a", "br"), edge("br", "l", "true"), edge("br", "f", "false"),
             edge("l", "join"), edge("f", "join"), edge("p", "q"), edge("p", "sub"),
             edge("q", "w")]
    return wf(nodes, edges)


def mixed_outcome(fail_key: str | None) -> Outcome:
    def outcome(command: StartTask) -> tuple[NodeState, Any]:
        if command.key == fail_key:
            return S.FAILED, None
        if command.node.id == "a":
            return S.SUCCEEDED, {"score": 80}
        if command.node.id == "probe":
            return S.SUCCEEDED, {"more": iteration_of(command.key) < 1}
        return S.SUCCEEDED, {"k": command.key}
    return outcome


def replay(spec: WorkflowSpec, events: list[Event], until: int) -> Run:
    run = Run(spec)
    for event in events[:until]:
        run.send(event)
    return run


@pytest.mark.parametrize("fail_key", [None, "l#1/x", "w#1/probe", "q"])
def test_restore_rebuilds_the_machine_at_every_step(fail_key):
    spec = mixed_wf()
    full = Run(spec)
    full.run(mixed_outcome(fail_key), child=lambda c: (RunState.SUCCEEDED, {"c": 1}))
    events = full.events
    assert full.machine.terminal
    for cut in range(len(events) + 1):
        original = replay(spec, events, cut)
        restored = RunMachine.restore("run-1", spec, original.params, original.machine.state,
                                      list(original.stored.values()))
        assert restored.nodes == original.machine.nodes, cut
        assert restored.state == original.machine.state, cut
        for step, event in enumerate(events[cut:]):
            now = original.now + 1 + step
            assert restored.handle(event, now) == original.machine.handle(event, now), \
                (cut, event)
        assert restored.nodes == full.machine.nodes


def test_restore_keeps_assigned_task_and_child_ids():
    run = Run(cancel_wf())
    run.start()
    run.assign("a", task_id="t-a")
    run.assign("sub", child_run_id="child-1")
    restored = RunMachine.restore("run-1", run.machine.spec, run.params, run.machine.state,
                                  list(run.stored.values()))
    assert restored.nodes == run.machine.nodes
    cancel = restored.handle(Cancel(), 9.0)
    assert CancelTask("a", "t-a") in cancel and CancelChild("sub", "child-1") in cancel


def test_restore_after_a_retry_of_a_failed_loop():
    spec = wf([loop("l", {"mode": "count", "count": 3}, [task("x")])])
    run = Run(spec)
    run.run(fail("l#1/x"))
    run.send(RetryFailed())
    run.finish(fail("l#0/x"))
    assert run.run_state == "Failed"
    restored = RunMachine.restore("run-1", spec, run.params, run.machine.state,
                                  list(run.stored.values()))
    assert restored.nodes == run.machine.nodes
    assert restored.state == run.machine.state
