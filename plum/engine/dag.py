"""Workflow definitions: the model and its validation.

Every form the API accepts is normalised to one `Dag` by `plum.engine.forms`. Validation
reports every problem with the node it belongs to (`nodes[3].taskDefId`, `edges[1].to`),
never just the first.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from plum.engine.model import Model
from plum.errors import Invalid


class NodeType(StrEnum):
    TASK = "task"
    BRANCH = "branch"
    PARALLEL = "parallel"
    LOOP = "loop"
    SUBWORKFLOW = "subworkflow"


class TriggerRule(StrEnum):
    ALL_SUCCESS = "all_success"
    ONE_SUCCESS = "one_success"
    ALL_FAILED = "all_failed"
    ONE_FAILED = "one_failed"
    ALL_DONE = "all_done"
    NONE_FAILED = "none_failed"


class EdgeType(StrEnum):
    NORMAL = "normal"
    TRUE = "true"
    FALSE = "false"


class Operator(StrEnum):
    EQ = "=="
    NE = "!="
    GT = ">"
    LT = "<"
    GE = ">="
    LE = "<="


class LoopMode(StrEnum):
    COUNT = "count"
    CONDITION = "condition"


class Condition(Model, frozen=True, omit_defaults=True):
    field: str
    operator: Operator
    value: Any = None
    source: str | None = None


class LoopSpec(Model, frozen=True, omit_defaults=True):
    mode: LoopMode = LoopMode.COUNT
    count: int | None = None
    var: str | None = None
    condition: Condition | None = None
    max_iterations: int | None = None


class DagNode(Model, frozen=True, omit_defaults=True):
    id: str
    type: NodeType = NodeType.TASK
    name: str | None = None
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    ui: dict[str, float] | None = None
    # task
    task_def_id: str | None = None
    task_name: str | None = None
    executor: str | None = None  # an inline task: `taskName` run by this executor, no definition
    payload: Any = None
    timeout_sec: float | None = None
    max_retries: int | None = None
    retry_backoff_sec: float | None = None
    # branch
    condition: Condition | None = None
    # loop
    loop: LoopSpec | None = None
    body: Dag | None = None
    # subworkflow
    workflow_id: str | None = None
    params: dict[str, Any] | None = None


class Edge(Model, frozen=True, omit_defaults=True):
    from_: str = msgspec.field(name="from")
    to: str
    edge_type: EdgeType = EdgeType.NORMAL


class Dag(Model, frozen=True):
    nodes: list[DagNode]
    edges: list[Edge] = []


class WorkflowSpec(Model, frozen=True):
    """A normalised workflow definition, as stored per version."""

    name: str
    dag: Dag
    description: str = ""
    params: dict[str, Any] = {}


# -- graph helpers (used by validation and the state machine)
@dataclass(frozen=True, slots=True)
class Graph:
    """Adjacency of one DAG level (loop bodies are graphs of their own)."""

    nodes: dict[str, DagNode]
    upstream: dict[str, list[Edge]]
    downstream: dict[str, list[Edge]]

    @classmethod
    def of(cls, dag: Dag) -> Graph:
        up: dict[str, list[Edge]] = defaultdict(list)
        down: dict[str, list[Edge]] = defaultdict(list)
        for edge in dag.edges:
            up[edge.to].append(edge)
            down[edge.from_].append(edge)
        nodes = {n.id: n for n in dag.nodes}
        return cls(nodes, {k: up.get(k, []) for k in nodes}, {k: down.get(k, []) for k in nodes})

    def roots(self) -> list[str]:
        return [k for k in self.nodes if not self.upstream[k]]

    def leaves(self) -> list[str]:
        return [k for k in self.nodes if not self.downstream[k]]


def topological_order(nodes: list[str], edges: list[Edge]) -> list[str] | None:
    """Kahn's algorithm; None when there is a cycle."""
    indegree = {n: 0 for n in nodes}
    out: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        if e.from_ in indegree and e.to in indegree:
            indegree[e.to] += 1
            out[e.from_].append(e.to)
    queue = deque(n for n, d in indegree.items() if d == 0)
    order = []
    while queue:
        n = queue.popleft()
        order.append(n)
        for m in out[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                queue.append(m)
    return order if len(order) == len(nodes) else None


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    message: str


class InvalidWorkflow(Invalid):
    """A definition with problems; `details["problems"]` lists every one."""

    def __init__(self, problems: list[Problem]):
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(
            f"{first.field}: {first.message}{more}",
            field=first.field,
            details={"problems": [{"field": p.field, "message": p.message} for p in problems]},
        )
        self.problems = problems


class Workflow(Model, frozen=True):
    """A workflow as stored and served: its current version's definition."""

    workflow_id: str
    name: str
    version: int
    spec: WorkflowSpec
    description: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


def find_cycle(nodes: list[str], edges: list[Edge]) -> list[str] | None:
    """The nodes of one cycle in edge order (`[a, b, a]`), or None; iterative DFS, O(V+E)."""
    out: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        out[e.from_].append(e.to)
    state: dict[str, bool] = {}  # False: on the DFS stack, True: finished
    for start in nodes:
        if start in state:
            continue
        state[start] = False
        stack = [(start, iter(out[start]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = True
                stack.pop()
            elif child not in state:
                state[child] = False
                stack.append((child, iter(out[child])))
            elif state[child] is False:
                path = [n for n, _ in stack]
                return [*path[path.index(child) :], child]
    return None


# -- normalize: every accepted input form -> one WorkflowSpec
_NODE_ID = re.compile(r"^[A-Za-z0-9_:-]+$")
_EXECUTORS = ("embedded", "service", "os_process")
MAX_LOOP_ITERATIONS = 10_000


def validate(
    spec: WorkflowSpec,
    *,
    task_defs: set[str],
    task_names: set[str],
    workflows: dict[str, set[str]],
    self_id: str | None = None,
) -> None:
    """Raise InvalidWorkflow listing every problem. Node ids are unique across the whole
    workflow, loop bodies included (templates and run states are keyed by id alone).

    `workflows` maps a workflow id to the ids it calls as subworkflows; `self_id` is the
    workflow being validated (None for a new one, which nothing can call yet)."""
    checker = _Checker(task_defs, task_names, workflows, self_id)
    if not spec.name.strip():
        checker.add("name", "must not be empty")
    checker.check_ids(spec.dag, "")
    checker.check_level(spec.dag, "")
    if checker.problems:
        raise InvalidWorkflow(checker.problems)


@dataclass(slots=True)
class _Checker:
    task_defs: set[str]
    task_names: set[str]
    workflows: dict[str, set[str]]
    self_id: str | None
    problems: list[Problem] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # node id -> path of its first use

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def check_ids(self, dag: Dag, prefix: str) -> None:
        for i, node in enumerate(dag.nodes):
            path = f"{prefix}nodes[{i}]"
            if not node.id.strip():
                self.add(f"{path}.id", "must not be empty")
            elif not _NODE_ID.match(node.id):
                self.add(f"{path}.id", "use letters, digits, '_', '-' and ':' only (ids appear "
                         "in templates and node keys)")
            elif node.id in self.ids:
                self.add(f"{path}.id", f"duplicate node id {node.id!r} (also {self.ids[node.id]})")
            else:
                self.ids[node.id] = path
            if node.body is not None:
                self.check_ids(node.body, f"{path}.body.")

    def check_level(self, dag: Dag, prefix: str) -> None:
        if not dag.nodes:
            self.add(f"{prefix}nodes", "at least one node is required")
            return
        kinds = {n.id: n.type for n in dag.nodes}
        edges = self.check_edges(dag.edges, kinds, prefix)
        cycle = find_cycle(list(kinds), edges)
        if cycle:
            self.add(f"{prefix}edges", "cycle: " + " → ".join(cycle))
        graph = Graph.of(Dag(nodes=dag.nodes, edges=edges))
        for i, node in enumerate(dag.nodes):
            self.check_node(node, f"{prefix}nodes[{i}]", graph)

    def check_edges(self, edges: list[Edge], kinds: dict[str, NodeType], prefix: str) -> list[Edge]:
        """Report bad edges; return the ones between two known, distinct nodes, once each."""
        seen: set[tuple[str, str]] = set()
        valid = []
        for i, e in enumerate(edges):
            path = f"{prefix}edges[{i}]"
            self.check_edge_type(e, kinds, path)
            if not self.check_ends(e, kinds, path):
                continue
            if (e.from_, e.to) in seen:
                self.add(path, f"duplicate edge {e.from_} → {e.to}")
                continue
            seen.add((e.from_, e.to))
            valid.append(e)
        return valid

    def check_ends(self, e: Edge, kinds: dict[str, NodeType], path: str) -> bool:
        known = True
        for end, name in ((e.from_, "from"), (e.to, "to")):
            if end not in kinds:
                self.add(f"{path}.{name}", f"unknown node {end!r}")
                known = False
        if known and e.from_ == e.to:
            self.add(path, f"self-loop on {e.from_!r}")
            return False
        return known

    def check_edge_type(self, e: Edge, kinds: dict[str, NodeType], path: str) -> None:
        if e.from_ not in kinds:
            return
        if kinds[e.from_] is NodeType.BRANCH and e.edge_type is EdgeType.NORMAL:
            self.add(f"{path}.edgeType", "an edge out of a branch must be `true` or `false`")
        elif kinds[e.from_] is not NodeType.BRANCH and e.edge_type is not EdgeType.NORMAL:
            self.add(f"{path}.edgeType", f"only edges out of a branch can be `{e.edge_type}`")

    def check_node(self, node: DagNode, path: str, graph: Graph) -> None:
        match node.type:
            case NodeType.TASK:
                self.check_task(node, path)
            case NodeType.BRANCH:
                self.check_branch(node, path, graph)
            case NodeType.LOOP:
                self.check_loop(node, path)
            case NodeType.SUBWORKFLOW:
                self.check_subworkflow(node, path)

    def check_task(self, node: DagNode, path: str) -> None:
        if bool(node.task_def_id) == bool(node.task_name):
            self.add(f"{path}.taskDefId", "a task node needs exactly one of taskDefId, taskName")
        elif node.task_def_id and node.task_def_id not in self.task_defs:
            self.add(f"{path}.taskDefId", f"unknown task definition {node.task_def_id!r}")
        elif node.task_name and node.task_name not in self.task_names and not node.executor:
            self.add(f"{path}.taskName", f"unknown task {node.task_name!r} (give an executor "
                     "to run it inline, or define it)")
        if node.executor is not None and node.executor not in _EXECUTORS:
            self.add(f"{path}.executor", f"unknown executor {node.executor!r}")
        limits = (
            ("timeoutSec", node.timeout_sec),
            ("maxRetries", node.max_retries),
            ("retryBackoffSec", node.retry_backoff_sec),
        )
        for name, value in limits:
            if value is not None and value < 0:
                self.add(f"{path}.{name}", "must be >= 0")

    def check_branch(self, node: DagNode, path: str, graph: Graph) -> None:
        cond = node.condition
        if cond is None:
            self.add(f"{path}.condition", "a branch node needs a condition")
        else:
            self.check_condition(cond, f"{path}.condition")
            upstream = {e.from_ for e in graph.upstream[node.id]}
            if cond.source is not None and cond.source not in upstream:
                msg = f"{cond.source!r} is not a direct upstream node of this branch"
                self.add(f"{path}.condition.source", msg)
            elif cond.source is None and len(upstream) != 1:
                msg = f"required: the branch has {len(upstream)} upstream nodes, not exactly 1"
                self.add(f"{path}.condition.source", msg)
        out = {e.edge_type for e in graph.downstream[node.id]}
        for kind in (EdgeType.TRUE, EdgeType.FALSE):
            if kind not in out:
                self.add(path, f"a branch needs at least one outgoing `{kind}` edge")

    def check_condition(self, cond: Condition, path: str) -> None:
        if not cond.field.strip():
            self.add(f"{path}.field", "must not be empty")

    def check_loop(self, node: DagNode, path: str) -> None:
        loop = node.loop
        if loop is None:
            self.add(f"{path}.loop", "a loop node needs a loop spec")
        elif loop.mode is LoopMode.COUNT:
            self.check_iterations(loop.count, f"{path}.loop.count")
        else:
            self.check_iterations(loop.max_iterations, f"{path}.loop.maxIterations")
            self.check_loop_condition(loop.condition, f"{path}.loop.condition")
        if loop is not None and loop.var is not None:
            if not loop.var.isidentifier() or loop.var == "index":
                self.add(f"{path}.loop.var", "must be an identifier other than `index`")
        if node.body is None:
            self.add(f"{path}.body", "a loop node needs a body {nodes, edges}")
        else:
            self.check_level(node.body, f"{path}.body.")

    def check_iterations(self, value: int | None, path: str) -> None:
        if value is None or not 1 <= value <= MAX_LOOP_ITERATIONS:
            self.add(path, f"must be between 1 and {MAX_LOOP_ITERATIONS}")

    def check_loop_condition(self, cond: Condition | None, path: str) -> None:
        if cond is None:
            self.add(path, "required when mode is `condition`")
            return
        self.check_condition(cond, path)
        if cond.source is not None and cond.source not in self.ids:
            self.add(f"{path}.source", f"unknown node {cond.source!r}")

    def check_subworkflow(self, node: DagNode, path: str) -> None:
        target, where = node.workflow_id, f"{path}.workflowId"
        if not target:
            self.add(where, "a subworkflow node needs workflowId")
        elif self.self_id is not None and (chain := self.call_chain(target)):
            self.add(where, "subworkflow recursion: " + " → ".join([self.self_id, *chain]))
        elif target not in self.workflows:
            self.add(where, f"unknown workflow {target!r}")

    def call_chain(self, start: str) -> list[str] | None:
        """The call path start -> ... -> self_id through `workflows`, or None (BFS)."""
        parent: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            current = queue.popleft()
            if current == self.self_id:
                chain = []
                while current is not None:
                    chain.append(current)
                    current = parent[current]
                return chain[::-1]
            for callee in self.workflows.get(current, ()):
                if callee not in parent:
                    parent[callee] = current
                    queue.append(callee)
        return None
