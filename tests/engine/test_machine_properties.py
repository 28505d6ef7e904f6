"""Invariants of the run state machine over Hypothesis-generated DAGs (tasks, branches,
parallel points, count loops, subworkflows; random trigger rules), answered in a random
order with random outcomes:

(a) no node leaves Pending except as its trigger rule decides over its upstreams' states at
    that moment (a branch's untaken side counting as Skipped);
(b) every run ends, within a bounded number of events, Succeeded or Failed;
(c) every node ends in a terminal state;
(d) the stored records (the initial ones, then the latest `NodeChanged` of each key) rebuild
    the same machine through `RunMachine.restore`, and a machine restored half-way goes on
    exactly like the original;
(e) the run is Failed exactly when a leaf ends Failed, Timeout or UpstreamFailed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plum.engine.dag import (
    Condition,
    Dag,
    DagNode,
    Edge,
    EdgeType,
    Graph,
    LoopSpec,
    NodeType,
    Operator,
    TriggerRule,
    WorkflowSpec,
    validate,
)
from plum.engine.machine import (
    RUN_TERMINAL,
    ChildDone,
    Command,
    Event,
    NodeChanged,
    NodeRecord,
    RunChanged,
    RunMachine,
    RunState,
    Start,
    StartChild,
    StartTask,
    TaskDone,
)
from plum.engine.rules import NODE_TERMINAL, Decision, NodeState, decide

S = NodeState
CHILD_WF = "child-wf"
LEAF_FAILED = {S.FAILED, S.TIMEOUT, S.UPSTREAM_FAILED}
SCORED = {NodeType.TASK, NodeType.SUBWORKFLOW}  # whose results carry a `score`
DECISION_OF = {S.RUNNING: Decision.RUN, S.FAILED: Decision.RUN, S.SKIPPED: Decision.SKIP,
               S.UPSTREAM_FAILED: Decision.UPSTREAM_FAILED}


# -- random workflows
def _task(node_id: str, rule: TriggerRule) -> DagNode:
    return DagNode(id=node_id, task_name="t", trigger_rule=rule)


@st.composite
def loop_nodes(draw: st.DrawFn, node_id: str, rule: TriggerRule) -> DagNode:
    size = draw(st.integers(1, 3))
    body_ids = [f"{node_id}_b{k}" for k in range(size)]
    body = Dag(
        nodes=[_task(b, draw(st.sampled_from(TriggerRule))) for b in body_ids],
        edges=[Edge(from_=a, to=b) for a, b in pairwise(body_ids)],
    )
    return DagNode(id=node_id, type=NodeType.LOOP, trigger_rule=rule,
                   loop=LoopSpec(count=draw(st.integers(1, 3))), body=body)


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowSpec:
    n = draw(st.integers(5, 30))
    ids = [f"n{i}" for i in range(n)]
    kinds: list[NodeType] = []
    for i in range(n):
        choices = [NodeType.TASK] * 6 + [NodeType.PARALLEL, NodeType.LOOP, NodeType.SUBWORKFLOW]
        if 1 <= i <= n - 3:
            choices += [NodeType.BRANCH] * 2
        kinds.append(draw(st.sampled_from(choices)))
    edges: dict[tuple[int, int], EdgeType] = {}
    upstream: dict[int, list[int]] = {}
    for j in range(1, n):
        ups = draw(st.lists(st.integers(0, j - 1), max_size=3, unique=True))
        if kinds[j] is NodeType.BRANCH and not ups:
            ups = [j - 1]
        upstream[j] = ups
        for i in ups:
            edges[(i, j)] = (draw(st.sampled_from([EdgeType.TRUE, EdgeType.FALSE]))
                             if kinds[i] is NodeType.BRANCH else EdgeType.NORMAL)
    for i in (i for i, k in enumerate(kinds) if k is NodeType.BRANCH):
        _give_both_sides(i, n, edges, upstream)
    nodes = []
    for i, kind in enumerate(kinds):
        rule = draw(st.sampled_from(TriggerRule))
        match kind:
            case NodeType.TASK:
                nodes.append(_task(ids[i], rule))
            case NodeType.PARALLEL:
                nodes.append(DagNode(id=ids[i], type=kind, trigger_rule=rule))
            case NodeType.SUBWORKFLOW:
                nodes.append(DagNode(id=ids[i], type=kind, trigger_rule=rule,
                                     workflow_id=CHILD_WF))
            case NodeType.LOOP:
                nodes.append(draw(loop_nodes(ids[i], rule)))
            case NodeType.BRANCH:
                sources = [u for u in upstream[i] if kinds[u] in SCORED] or upstream[i]
                source = draw(st.sampled_from(sources))
                cond = Condition(source=ids[source], field="result.score",
                                 operator=draw(st.sampled_from(Operator)),
                                 value=draw(st.integers(0, 100)))
                nodes.append(DagNode(id=ids[i], type=kind, trigger_rule=rule, condition=cond))
    dag = Dag(nodes=nodes, edges=[Edge(from_=ids[a], to=ids[b], edge_type=t)
                                  for (a, b), t in edges.items()])
    spec = WorkflowSpec(name="random", dag=dag)
    validate(spec, task_defs=set(), task_names={"t"}, workflows={CHILD_WF: set()})
    return spec


def _give_both_sides(i: int, n: int, edges: dict[tuple[int, int], EdgeType],
                     upstream: dict[int, list[int]]) -> None:
    """A branch needs an outgoing `true` and `false` edge; add or flip edges to later nodes."""
    for kind in (EdgeType.TRUE, EdgeType.FALSE):
        if kind in {t for (a, _), t in edges.items() if a == i}:
            continue
        free = [j for j in range(i + 1, n) if (i, j) not in edges]
        if free:
            edges[(i, free[0])] = kind
            upstream[free[0]].append(i)
        else:  # every later node is already a target (and there are at least two)
            edges[(i, i + 1)] = kind


# -- driving a run
@dataclass
class Driver:
    spec: WorkflowSpec
    rng: random.Random
    machine: RunMachine = field(init=False)
    stored: dict[str, NodeRecord] = field(init=False)
    open: list[StartTask | StartChild] = field(default_factory=list)
    graphs: dict[str, Graph] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)
    run_states: list[RunState] = field(default_factory=list)
    failure_rate: float = 0.0
    now: float = 0.0

    def __post_init__(self) -> None:
        self.failure_rate = self.rng.choice([0.0, 0.1, 0.3, 0.6])
        self.machine = RunMachine("run-p", self.spec, {})
        self.stored = dict(self.machine.nodes)
        self.graphs[""] = Graph.of(self.spec.dag)
        for node in self.spec.dag.nodes:
            if node.body is not None:
                self.graphs[node.id] = Graph.of(node.body)

    def send(self, event: Event) -> list[Command]:
        self.now += 1
        commands = self.machine.handle(event, self.now)
        for command in commands:
            self.check(command)
        return commands

    def check(self, command: Command) -> None:
        match command:
            case NodeChanged(record):
                old = self.stored.get(record.node_key)
                if old is not None and old.state == S.PENDING and record.state != S.PENDING:
                    self.check_decision(record)
                self.stored[record.node_key] = record
            case StartTask(key) | StartChild(key):
                assert self.stored[key].state == S.RUNNING, key
                self.open.append(command)
            case RunChanged(state):
                assert not self.run_states or self.run_states[-1] not in RUN_TERMINAL, \
                    f"{state} after the run ended"
                self.run_states.append(state)

    def check_decision(self, record: NodeRecord) -> None:
        """(a): the node leaves Pending only as its rule decides, and only once."""
        assert record.node_key not in self.decided, f"{record.node_key} decided twice"
        self.decided.add(record.node_key)
        graph = self.graphs[_loop_id(record.scope)]
        node = graph.nodes[record.node_id]
        states = [self.edge_state(record.scope, e) for e in graph.upstream[node.id]]
        want = decide(node.trigger_rule, states)
        assert want is not None and DECISION_OF[record.state] == want, \
            (record.node_key, record.state, node.trigger_rule, states)

    def edge_state(self, scope: str, edge: Edge) -> NodeState:
        up = self.stored[scope + edge.from_]
        if up.type is NodeType.BRANCH and up.state == S.SUCCEEDED:
            taken = EdgeType.TRUE if up.decision else EdgeType.FALSE
            return S.SUCCEEDED if edge.edge_type == taken else S.SKIPPED
        return up.state

    def answer(self) -> Event:
        """An answer to a random open command: random outcome, random score."""
        command = self.open.pop(self.rng.randrange(len(self.open)))
        score = {"score": self.rng.randint(0, 100)}
        ok = self.rng.random() >= self.failure_rate
        if isinstance(command, StartChild):
            state = RunState.SUCCEEDED if ok else RunState.FAILED
            return ChildDone(command.key, state, score if ok else None)
        state = S.SUCCEEDED if ok else self.rng.choice([S.FAILED, S.TIMEOUT])
        return TaskDone(command.key, state, score if state == S.SUCCEEDED else None,
                        attempt=self.rng.randint(1, 3))

    def restore(self) -> RunMachine:
        return RunMachine.restore("run-p", self.spec, {}, self.machine.state,
                                  list(self.stored.values()))


def _loop_id(scope: str) -> str:
    """`n5#1/` -> `n5` (the loops generated here are not nested)."""
    return scope.rsplit("#", 1)[0] if scope else ""


def max_events(spec: WorkflowSpec) -> int:
    total = 0
    for node in spec.dag.nodes:
        if node.loop is not None and node.body is not None:
            total += (node.loop.count or 0) * len(node.body.nodes)
        else:
            total += 1
    return total


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workflows(), rng=st.randoms(use_true_random=False), cut=st.integers(0, 12))
def test_random_runs_keep_the_machine_invariants(spec: WorkflowSpec, rng: random.Random,
                                                 cut: int):
    """`cut`: the step at which a restored machine joins in and must go on identically."""
    driver = Driver(spec, rng)
    driver.send(Start())
    bound = max_events(spec)
    restored: RunMachine | None = None
    steps = 0
    while driver.open:
        steps += 1
        assert steps <= bound, "more events than the workflow has tasks"  # (b)
        now = driver.restore()  # (d) at every step
        assert now.nodes == driver.machine.nodes and now.state == driver.machine.state
        if steps == cut:
            restored = now
        event = driver.answer()
        commands = driver.send(event)
        if restored is not None:
            assert restored.handle(event, driver.now) == commands  # (d)
        if rng.random() < 0.1:  # a duplicate report changes nothing
            assert driver.machine.handle(event, driver.now) == []

    machine = driver.machine
    assert machine.state in (RunState.SUCCEEDED, RunState.FAILED)  # (b)
    assert driver.run_states[0] == RunState.RUNNING and driver.run_states[-1] == machine.state
    assert {n.id for n in spec.dag.nodes} <= machine.nodes.keys()
    assert all(r.state in NODE_TERMINAL for r in machine.nodes.values())  # (c)
    again = driver.restore()  # (d)
    assert again.nodes == machine.nodes and again.state == machine.state
    if restored is not None:
        assert restored.nodes == machine.nodes and restored.state == machine.state
    leaves = Graph.of(spec.dag).leaves()  # (e)
    failed = any(machine.nodes[leaf].state in LEAF_FAILED for leaf in leaves)
    assert machine.state == (RunState.FAILED if failed else RunState.SUCCEEDED)
