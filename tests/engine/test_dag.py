"""Workflow definitions: every input form normalises to one spec; validation names every
problem by its field path."""

from __future__ import annotations

import time
from itertools import pairwise
from typing import Any

import pytest

from plum.engine.dag import (
    Condition,
    Dag,
    DagNode,
    Edge,
    EdgeType,
    InvalidWorkflow,
    LoopMode,
    LoopSpec,
    NodeType,
    Operator,
    WorkflowSpec,
    find_cycle,
    validate,
)
from plum.engine.forms import normalize

TASK_DEFS = {"def-service", "def-process"}
TASK_NAMES = {"builtin.echo", "builtin.delay", "builtin.fail"}
SELF = "wf-self"
WORKFLOWS = {SELF: {"wf-leaf"}, "wf-leaf": set(), "wf-a": {"wf-b"}, "wf-b": {SELF}}


def task(node_id: str, **fields: Any) -> dict:
    return {"id": node_id, "type": "task", "taskName": "builtin.echo", **fields}


def edge(src: str, dst: str, kind: str | None = None) -> dict:
    return {"from": src, "to": dst, **({"edgeType": kind} if kind else {})}


def body(nodes: list[dict], edges: list[dict] | tuple = ()) -> dict:
    return {"name": "wf", "nodes": nodes, "edges": list(edges)}


def problems_of(raw: dict) -> list[tuple[str, str]]:
    """(field, message) of every problem normalize or validate reports for `raw`."""
    try:
        spec = normalize(raw)
        known = {"task_defs": TASK_DEFS, "task_names": TASK_NAMES, "workflows": WORKFLOWS}
        validate(spec, **known, self_id=SELF)
    except InvalidWorkflow as exc:
        return [(p.field, p.message) for p in exc.problems]
    return []


def fields_of(raw: dict) -> list[str]:
    return [f for f, _ in problems_of(raw)]


# -- normalize: accepted forms
LOOP_BODY = Dag(
    nodes=[DagNode(id="tick", task_name="builtin.echo", payload={"i": "${loop.index}"})],
)

FORMS = [
    pytest.param(
        {
            "name": "dag",
            "description": "d",
            "params": {"threshold": 60},
            "nodes": [
                {"id": "a", "taskName": "builtin.echo", "payload": {"x": 1}, "timeoutSec": 5},
                {
                    "id": "b",
                    "type": "branch",
                    "triggerRule": "all_done",
                    "condition": {"source": "a", "field": "result.x", "operator": ">", "value": 0},
                },
                {
                    "id": "c",
                    "type": "loop",
                    "loop": {"mode": "count", "count": 3},
                    "body": {
                        "nodes": [
                            {
                                "id": "tick",
                                "taskName": "builtin.echo",
                                "payload": {"i": "${loop.index}"},
                            }
                        ]
                    },
                },
            ],
            "edges": [edge("a", "b"), edge("b", "c", "true")],
        },
        WorkflowSpec(
            name="dag",
            description="d",
            params={"threshold": 60},
            dag=Dag(
                nodes=[
                    DagNode(id="a", task_name="builtin.echo", payload={"x": 1}, timeout_sec=5),
                    DagNode(
                        id="b",
                        type=NodeType.BRANCH,
                        trigger_rule="all_done",
                        condition=Condition(source="a", field="result.x", operator=">", value=0),
                    ),
                    DagNode(id="c", type=NodeType.LOOP, loop=LoopSpec(count=3), body=LOOP_BODY),
                ],
                edges=[Edge(from_="a", to="b"), Edge(from_="b", to="c", edge_type=EdgeType.TRUE)],
            ),
        ),
        id="dag",
    ),
    pytest.param(
        {
            "name": "seq",
            "steps": [
                {"name": "second", "executor": "embedded", "ord": 2, "payload": {"n": 2}},
                {
                    "name": "first",
                    "executor": "service",
                    "definitionId": "def-service",
                    "ord": 1,
                    "timeoutSec": 9,
                    "maxRetries": 2,
                },
                {"name": "last", "executor": "os_process", "definitionId": ""},
            ],
        },
        WorkflowSpec(
            name="seq",
            dag=Dag(
                nodes=[
                    DagNode(
                        id="step1",
                        name="first",
                        task_def_id="def-service",
                        timeout_sec=9,
                        max_retries=2,
                    ),
                    DagNode(id="step2", name="second", task_name="second", executor="embedded",
                            payload={"n": 2}),
                    DagNode(id="step3", name="last", task_name="last", executor="os_process"),
                ],
                edges=[Edge(from_="step1", to="step2"), Edge(from_="step2", to="step3")],
            ),
        ),
        id="steps-with-ord",
    ),
    pytest.param(
        {
            "name": "seq",
            "steps": [{"name": "x", "executor": "embedded"}, {"name": "y", "executor": "embedded"}],
        },
        WorkflowSpec(
            name="seq",
            dag=Dag(
                nodes=[
                    DagNode(id="step1", name="x", task_name="x", executor="embedded"),
                    DagNode(id="step2", name="y", task_name="y", executor="embedded"),
                ],
                edges=[Edge(from_="step1", to="step2")],
            ),
        ),
        id="steps-without-ord-keep-order",
    ),
    pytest.param(
        {
            "name": "original",
            "nodes": {
                "a": {
                    "type": "Task",
                    "taskDefinitionId": "def-service",
                    "payloadJson": '{"k": [1, 2]}',
                    "triggerRule": "",
                },
                "b": {
                    "type": "BRANCH",
                    "condition": {
                        "sourceTask": "a",
                        "field": "result.k.0",
                        "operator": "==",
                        "value": 1,
                    },
                },
                "c": {
                    "id": "cc",
                    "type": "Loop",
                    "loopMaxIterations": 7,
                    "loopCondition": {
                        "sourceTask": "tick",
                        "field": "result.done",
                        "operator": "!=",
                        "value": True,
                    },
                    "body": {
                        "nodes": {
                            "tick": {
                                "taskName": "builtin.echo",
                                "payloadJson": '{"i": "${loop.index}"}',
                            }
                        }
                    },
                },
                "d": {
                    "type": "loop",
                    "loopCondition": {"field": "f", "operator": "<"},
                    "body": {"nodes": [task("tock")]},
                },
            },
            "edges": [
                {"source": "a", "target": "b", "type": ""},
                {"source": "b", "target": "cc", "type": "TRUE"},
                {"from": "b", "to": "d", "type": "False"},
            ],
        },
        WorkflowSpec(
            name="original",
            dag=Dag(
                nodes=[
                    DagNode(id="a", task_def_id="def-service", payload={"k": [1, 2]}),
                    DagNode(
                        id="b",
                        type=NodeType.BRANCH,
                        condition=Condition(source="a", field="result.k.0", operator="==", value=1),
                    ),
                    DagNode(
                        id="cc",
                        type=NodeType.LOOP,
                        loop=LoopSpec(
                            mode=LoopMode.CONDITION,
                            condition=Condition(
                                source="tick", field="result.done", operator=Operator.NE, value=True
                            ),
                            max_iterations=7,
                        ),
                        body=LOOP_BODY,
                    ),
                    DagNode(
                        id="d",
                        type=NodeType.LOOP,
                        loop=LoopSpec(
                            mode=LoopMode.CONDITION,
                            max_iterations=100,
                            condition=Condition(field="f", operator=Operator.LT),
                        ),
                        body=Dag(nodes=[DagNode(id="tock", task_name="builtin.echo")]),
                    ),
                ],
                edges=[
                    Edge(from_="a", to="b"),
                    Edge(from_="b", to="cc", edge_type=EdgeType.TRUE),
                    Edge(from_="b", to="d", edge_type=EdgeType.FALSE),
                ],
            ),
        ),
        id="original-keyed-nodes",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), FORMS)
def test_normalize_accepts_every_form(raw: dict, expected: WorkflowSpec) -> None:
    assert normalize(raw) == expected


SHAPE_ERRORS = [
    pytest.param([1, 2], "$", id="not-an-object"),
    pytest.param({"nodes": [task("a")]}, "name", id="missing-name"),
    pytest.param({"name": 3, "nodes": [task("a")]}, "name", id="name-not-a-string"),
    pytest.param({"name": "x"}, "nodes", id="neither-nodes-nor-steps"),
    pytest.param(
        {"name": "x", "nodes": [task("a")], "steps": [{"name": "s"}]},
        "steps",
        id="both-nodes-and-steps",
    ),
    pytest.param({"name": "x", "nodes": "a"}, "nodes", id="nodes-not-a-collection"),
    pytest.param(
        body([task("a"), task("b"), task("c", type="bogus")]), "nodes[2].type", id="bad-node-type"
    ),
    pytest.param(body([task("a", timeoutSec="soon")]), "nodes[0].timeoutSec", id="bad-timeout"),
    pytest.param(body([{"type": "task"}]), "nodes[0].id", id="missing-id"),
    pytest.param(body(["a"]), "nodes[0]", id="node-not-an-object"),
    pytest.param(
        body([task("a", triggerRule="sometimes")]), "nodes[0].triggerRule", id="bad-trigger-rule"
    ),
    pytest.param(
        body([task("a", type="branch", condition={"field": "f", "operator": "~"})]),
        "nodes[0].condition.operator",
        id="bad-operator",
    ),
    pytest.param(
        {"name": "x", "nodes": {"a": {"payloadJson": "{nope"}}},
        "nodes.a.payloadJson",
        id="undecodable-payloadJson",
    ),
    pytest.param(
        {"name": "x", "nodes": {"a": {"type": "loop", "loopCondition": "x > 1"}}},
        "nodes.a.loopCondition",
        id="loopCondition-not-an-object",
    ),
    pytest.param(
        body([task("a")], [edge("a", "b", "maybe")]), "edges[0].edgeType", id="bad-edge-type"
    ),
    pytest.param(body([task("a")], [{"from": "a"}]), "edges[0].to", id="edge-without-to"),
    pytest.param({"name": "x", "nodes": [task("a")], "edges": {}}, "edges", id="edges-not-array"),
    pytest.param(
        body([{"id": "l", "type": "loop", "body": {"nodes": [task("b", type="x")]}}]),
        "nodes[0].body.nodes[0].type",
        id="bad-type-in-loop-body",
    ),
    pytest.param(
        body([{"id": "l", "type": "loop", "body": []}]), "nodes[0].body", id="body-not-an-object"
    ),
    pytest.param(
        {"name": "x", "steps": [{"executor": "embedded"}]}, "steps[0].name", id="step-without-name"
    ),
    pytest.param(
        {"name": "x", "steps": [{"name": "s", "ord": "one"}]}, "steps[0].ord", id="step-bad-ord"
    ),
    pytest.param({"name": "x", "steps": {"a": 1}}, "steps", id="steps-not-array"),
]


@pytest.mark.parametrize(("raw", "field"), SHAPE_ERRORS)
def test_normalize_names_the_bad_field(raw: Any, field: str) -> None:
    with pytest.raises(InvalidWorkflow) as caught:
        normalize(raw)
    assert [p.field for p in caught.value.problems] == [field]
    assert caught.value.field == field


def test_normalize_collects_every_shape_problem() -> None:
    raw = {
        "name": 1,
        "nodes": [task("a", type="x"), task("b", maxRetries="2")],
        "edges": [edge("a", "b", "odd")],
    }
    with pytest.raises(InvalidWorkflow) as caught:
        normalize(raw)
    fields = [p.field for p in caught.value.problems]
    assert fields == ["name", "nodes[0].type", "nodes[1].maxRetries", "edges[0].edgeType"]


# -- validate
def seed() -> dict:
    """echo -> branch `score > 60` -> true: service task / false: os_process task ->
    parallel -> loop x3 with a body."""
    return {
        "name": "seed",
        "params": {"threshold": 60},
        "nodes": [
            task("start", payload={"score": 72}),
            {
                "id": "check",
                "type": "branch",
                "condition": {"field": "result.echo.score", "operator": ">", "value": 60},
            },
            {
                "id": "notify",
                "type": "task",
                "taskDefId": "def-service",
                "maxRetries": 2,
                "retryBackoffSec": 1.5,
            },
            {
                "id": "local",
                "type": "task",
                "taskDefId": "def-process",
                "timeoutSec": 30,
                "payload": {"command": "echo", "args": ["low"]},
            },
            {"id": "join", "type": "parallel", "triggerRule": "one_success"},
            {
                "id": "repeat",
                "type": "loop",
                "loop": {"mode": "count", "count": 3, "var": "i"},
                "body": {
                    "nodes": [
                        task("tick", payload={"i": "${loop.index}"}),
                        task("tock", taskName="builtin.delay"),
                    ],
                    "edges": [edge("tick", "tock")],
                },
            },
            {"id": "child", "type": "subworkflow", "workflowId": "wf-leaf"},
        ],
        "edges": [
            edge("start", "check"),
            edge("check", "notify", "true"),
            edge("check", "local", "false"),
            edge("notify", "join"),
            edge("local", "join"),
            edge("join", "repeat"),
            edge("repeat", "child"),
        ],
    }


def test_seed_workflow_is_valid() -> None:
    assert problems_of(seed()) == []


BRANCH = {"id": "br", "type": "branch", "condition": {"field": "result.x", "operator": ">"}}
BRANCH_EDGES = [edge("a", "br"), edge("br", "t", "true"), edge("br", "f", "false")]


def branch(**condition: Any) -> dict:
    return {**BRANCH, "condition": {**BRANCH["condition"], **condition}}


def loop(node_id: str = "l", spec: Any = None, nodes: Any = None, **fields: Any) -> dict:
    node = {"id": node_id, "type": "loop", "loop": spec or {"mode": "count", "count": 2}}
    node["body"] = {"nodes": [task("in")] if nodes is None else nodes}
    return {**node, **fields}


def with_node(node: dict) -> dict:
    return body([task("a"), node], [edge("a", node["id"])])


PROBLEMS = [
    # graph
    pytest.param({**body([task("a")]), "name": " "}, "name", "empty", id="empty-name"),
    pytest.param(body([]), "nodes", "at least one", id="no-nodes"),
    pytest.param(body([task("a"), task("a")]), "nodes[1].id", "duplicate", id="duplicate-id"),
    pytest.param(body([task("")]), "nodes[0].id", "empty", id="empty-id"),
    pytest.param(
        body([task("a")], [edge("x", "a")]), "edges[0].from", "unknown node 'x'", id="dangling-from"
    ),
    pytest.param(
        body([task("a")], [edge("a", "y")]), "edges[0].to", "unknown node 'y'", id="dangling-to"
    ),
    pytest.param(body([task("a")], [edge("a", "a")]), "edges[0]", "self-loop", id="self-loop"),
    pytest.param(
        body([task("a"), task("b")], [edge("a", "b"), edge("a", "b")]),
        "edges[1]",
        "duplicate edge",
        id="duplicate-edge",
    ),
    pytest.param(
        body([task("a"), task("b"), task("c")], [edge("a", "b"), edge("b", "c"), edge("c", "b")]),
        "edges",
        "cycle: b → c → b",
        id="cycle",
    ),
    # task
    pytest.param(body([{"id": "a"}]), "nodes[0].taskDefId", "exactly one", id="task-no-ref"),
    pytest.param(
        body([task("a", taskDefId="def-service")]),
        "nodes[0].taskDefId",
        "exactly one",
        id="task-both-refs",
    ),
    pytest.param(
        body([{"id": "a", "taskDefId": "nope"}]),
        "nodes[0].taskDefId",
        "unknown task definition 'nope'",
        id="unknown-def-id",
    ),
    pytest.param(
        body([task("a", taskName="builtin.nope")]),
        "nodes[0].taskName",
        "unknown task 'builtin.nope'",
        id="unknown-task-name",
    ),
    pytest.param(
        body([task("a", timeoutSec=-1)]), "nodes[0].timeoutSec", ">= 0", id="negative-timeout"
    ),
    pytest.param(
        body([task("a", maxRetries=-1)]), "nodes[0].maxRetries", ">= 0", id="negative-retries"
    ),
    pytest.param(
        body([task("a", retryBackoffSec=-0.5)]),
        "nodes[0].retryBackoffSec",
        ">= 0",
        id="negative-backoff",
    ),
    # branch
    pytest.param(
        body([task("a"), {"id": "br", "type": "branch"}, task("t"), task("f")], BRANCH_EDGES),
        "nodes[1].condition",
        "needs a condition",
        id="branch-without-condition",
    ),
    pytest.param(
        body([task("a"), branch(field=""), task("t"), task("f")], BRANCH_EDGES),
        "nodes[1].condition.field",
        "empty",
        id="branch-empty-field",
    ),
    pytest.param(
        body([task("a"), branch(source="t"), task("t"), task("f")], BRANCH_EDGES),
        "nodes[1].condition.source",
        "not a direct upstream",
        id="source-not-upstream",
    ),
    pytest.param(
        body(
            [task("a"), task("b"), BRANCH, task("t"), task("f")], [*BRANCH_EDGES, edge("b", "br")]
        ),
        "nodes[2].condition.source",
        "2 upstream",
        id="no-source-two-upstreams",
    ),
    pytest.param(
        body([BRANCH, task("t"), task("f")], BRANCH_EDGES[1:]),
        "nodes[0].condition.source",
        "0 upstream",
        id="no-source-no-upstream",
    ),
    pytest.param(
        body([task("a"), BRANCH, task("t")], BRANCH_EDGES[:2]),
        "nodes[1]",
        "`false` edge",
        id="branch-without-false-edge",
    ),
    pytest.param(
        body([task("a"), BRANCH, task("f")], [BRANCH_EDGES[0], BRANCH_EDGES[2]]),
        "nodes[1]",
        "`true` edge",
        id="branch-without-true-edge",
    ),
    pytest.param(
        body(
            [task("a"), BRANCH, task("t"), task("f"), task("n")], [*BRANCH_EDGES, edge("br", "n")]
        ),
        "edges[3].edgeType",
        "must be `true` or `false`",
        id="normal-edge-out-of-branch",
    ),
    pytest.param(
        body([task("a"), task("b")], [edge("a", "b", "true")]),
        "edges[0].edgeType",
        "only edges out of a branch",
        id="true-edge-out-of-task",
    ),
    # loop
    pytest.param(
        with_node({"id": "l", "type": "loop", "body": {"nodes": [task("in")]}}),
        "nodes[1].loop",
        "loop spec",
        id="loop-without-spec",
    ),
    pytest.param(
        with_node(loop(spec={"mode": "count", "count": 0})),
        "nodes[1].loop.count",
        "between 1 and 10000",
        id="loop-count-zero",
    ),
    pytest.param(
        with_node(loop(spec={"mode": "count"})),
        "nodes[1].loop.count",
        "between 1 and 10000",
        id="loop-count-missing",
    ),
    pytest.param(
        with_node(loop(spec={"mode": "count", "count": 10_001})),
        "nodes[1].loop.count",
        "between 1 and 10000",
        id="loop-count-too-big",
    ),
    pytest.param(
        with_node(loop(spec={"mode": "condition", "maxIterations": 5})),
        "nodes[1].loop.condition",
        "required",
        id="loop-condition-missing",
    ),
    pytest.param(
        with_node(
            loop(
                spec={
                    "mode": "condition",
                    "maxIterations": 0,
                    "condition": {"field": "f", "operator": "<"},
                }
            )
        ),
        "nodes[1].loop.maxIterations",
        "between 1",
        id="loop-max-iterations-zero",
    ),
    pytest.param(
        with_node(
            loop(
                spec={
                    "mode": "condition",
                    "maxIterations": 3,
                    "condition": {"source": "zz", "field": "f", "operator": "<"},
                }
            )
        ),
        "nodes[1].loop.condition.source",
        "unknown node 'zz'",
        id="loop-condition-unknown-source",
    ),
    pytest.param(
        with_node(loop(spec={"mode": "count", "count": 2, "var": "index"})),
        "nodes[1].loop.var",
        "identifier",
        id="loop-var-reserved",
    ),
    pytest.param(
        with_node({"id": "l", "type": "loop", "loop": {"count": 2}}),
        "nodes[1].body",
        "needs a body",
        id="loop-without-body",
    ),
    pytest.param(
        with_node(loop(nodes=[])), "nodes[1].body.nodes", "at least one", id="loop-empty-body"
    ),
    pytest.param(
        with_node(loop(nodes=[task("in", taskName="nope")])),
        "nodes[1].body.nodes[0].taskName",
        "unknown task",
        id="loop-body-bad-task",
    ),
    pytest.param(
        with_node(loop(nodes=[task("a")])),
        "nodes[1].body.nodes[0].id",
        "duplicate node id 'a' (also nodes[0])",
        id="loop-body-id-collides",
    ),
    pytest.param(
        with_node({**loop(), "body": {"nodes": [task("in")], "edges": [edge("in", "x")]}}),
        "nodes[1].body.edges[0].to",
        "unknown node 'x'",
        id="loop-body-dangling-edge",
    ),
    pytest.param(
        with_node(
            {
                **loop(),
                "body": {
                    "nodes": [task("p"), task("q")],
                    "edges": [edge("p", "q"), edge("q", "p")],
                },
            }
        ),
        "nodes[1].body.edges",
        "cycle",
        id="loop-body-cycle",
    ),
    # subworkflow
    pytest.param(
        with_node({"id": "s", "type": "subworkflow"}),
        "nodes[1].workflowId",
        "needs workflowId",
        id="subworkflow-without-id",
    ),
    pytest.param(
        with_node({"id": "s", "type": "subworkflow", "workflowId": "wf-gone"}),
        "nodes[1].workflowId",
        "unknown workflow",
        id="subworkflow-unknown",
    ),
    pytest.param(
        with_node({"id": "s", "type": "subworkflow", "workflowId": SELF}),
        "nodes[1].workflowId",
        "recursion: wf-self → wf-self",
        id="calls-itself",
    ),
    pytest.param(
        with_node({"id": "s", "type": "subworkflow", "workflowId": "wf-a"}),
        "nodes[1].workflowId",
        "recursion: wf-self → wf-a → wf-b → wf-self",
        id="calls-itself-indirectly",
    ),
]


@pytest.mark.parametrize(("raw", "field", "message"), PROBLEMS)
def test_validate_names_the_problem(raw: dict, field: str, message: str) -> None:
    problems = problems_of(raw)
    assert [f for f, _ in problems] == [field], problems
    assert message in problems[0][1]


def test_validate_reports_every_problem_at_once() -> None:
    raw = body(
        [
            task("a", timeoutSec=-1),
            task("a"),
            {"id": "b", "taskDefId": "nope"},
            {"id": "s", "type": "subworkflow"},
            loop(nodes=[]),
        ],
        [edge("a", "zz"), edge("b", "b")],
    )
    raw["name"] = ""
    assert fields_of(raw) == [
        "name",
        "nodes[1].id",
        "edges[0].to",
        "edges[1]",
        "nodes[0].timeoutSec",
        "nodes[2].taskDefId",
        "nodes[3].workflowId",
        "nodes[4].body.nodes",
    ]
    with pytest.raises(InvalidWorkflow) as caught:
        validate(normalize(raw), task_defs=TASK_DEFS, task_names=TASK_NAMES, workflows={})
    assert caught.value.field == "name"
    assert caught.value.message.endswith("(and 7 more)")
    assert len(caught.value.details["problems"]) == 8


def test_new_workflow_cannot_recurse() -> None:
    raw = with_node({"id": "s", "type": "subworkflow", "workflowId": "wf-a"})
    validate(normalize(raw), task_defs=TASK_DEFS, task_names=TASK_NAMES, workflows=WORKFLOWS)


def test_find_cycle() -> None:
    edges = [Edge(from_=a, to=b) for a, b in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")]]
    assert find_cycle(["a", "b", "c", "d"], edges) == ["b", "c", "d", "b"]
    assert find_cycle(["a", "b", "c", "d"], edges[:3]) is None


# -- size: 10,000 nodes validate in well under a second (2 s is a flake-proof bound)
def chain(n: int) -> dict:
    ids = [f"n{i}" for i in range(n)]
    return body([task(i) for i in ids], [edge(a, b) for a, b in pairwise(ids)])


def fan(n: int) -> dict:
    middle = [f"m{i}" for i in range(n - 2)]
    edges = [edge("root", m) for m in middle] + [edge(m, "sink") for m in middle]
    return body([task("root"), *(task(m) for m in middle), task("sink")], edges)


@pytest.mark.parametrize("make", [chain, fan], ids=["chain", "fan-out-fan-in"])
def test_ten_thousand_nodes_validate_quickly(make) -> None:
    raw = make(10_000)
    started = time.perf_counter()
    spec = normalize(raw)
    validate(spec, task_defs=TASK_DEFS, task_names=TASK_NAMES, workflows={})
    assert time.perf_counter() - started < 2.0
    assert len(spec.dag.nodes) == 10_000


def test_ten_thousand_node_cycle_is_found_quickly() -> None:
    raw = chain(10_000)
    raw["edges"].append(edge("n9999", "n0"))
    started = time.perf_counter()
    fields = fields_of(raw)
    assert time.perf_counter() - started < 2.0
    assert fields == ["edges"]


@pytest.mark.parametrize("alias", ["taskDefinitionId", "definitionId", "defId"])
def test_task_def_aliases(alias: str) -> None:
    raw = {"name": "x", "nodes": {"a": {alias: "def-service"}, "b": {alias: "", "taskName": "n"}}}
    nodes = normalize(raw).dag.nodes
    assert [(n.id, n.task_def_id, n.task_name) for n in nodes] == [
        ("a", "def-service", None),
        ("b", None, "n"),
    ]


def test_enum_values_in_any_case() -> None:
    raw = body([loop(spec={"mode": "COUNT", "count": 2}, triggerRule="ALL_DONE", type="Loop")])
    node = normalize(raw).dag.nodes[0]
    assert (node.type, node.trigger_rule, node.loop.mode) == ("loop", "all_done", "count")
