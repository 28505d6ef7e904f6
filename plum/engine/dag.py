"""Workflow definitions: the model, the accepted input forms, and validation.

Every form the API accepts — the DAG form of API.md, sequential `steps`, and the original
Plum's form (nodes keyed by id, `payloadJson` strings, `condition.sourceTask`,
`loopCondition`) — is normalised to one `Dag`. Validation reports every problem with the
node it belongs to (`nodes[3].taskDefId`, `edges[1].to`), never just the first.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
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
DEFAULT_MAX_ITERATIONS = 100  # for the original's `loopCondition` without a maximum
MAX_LOOP_ITERATIONS = 10_000
TASK_DEF_ALIASES = ("taskDefinitionId", "definitionId", "defId")
_ENUM_FIELDS = ("type", "triggerRule")
_BLANK_IS_ABSENT = ("type", "triggerRule", "taskDefId", "taskName", "workflowId", "payloadJson")


class _Header(Model, frozen=True):
    name: str
    description: str | None = None
    params: dict[str, Any] | None = None


class _Step(Model, frozen=True):
    name: str
    executor: str | None = None  # without a definition: the step runs inline with it
    definition_id: str | None = None
    payload: Any = None
    timeout_sec: float | None = None
    max_retries: int | None = None
    ord: int | None = None


def normalize(body: Any) -> WorkflowSpec:
    """Read a decoded JSON body in any accepted form; shape errors -> InvalidWorkflow.

    Sequential `steps` become a chain `step1 -> step2 -> ...` (ids by position after
    sorting by `ord`; steps without `ord` follow the ordered ones in input order), with
    `taskDefId` from `definitionId`, else `taskName` = the step's name run inline by the
    step's `executor` (a definition, when given, decides the executor itself). The
    original's `loopCondition` becomes a condition-mode loop with `maxIterations` (or
    `loopMaxIterations`), default 100.
    """
    if not isinstance(body, dict):
        raise InvalidWorkflow([Problem("$", "a workflow must be a JSON object")])
    problems: list[Problem] = []
    header_fields = {k: body[k] for k in ("name", "description", "params") if k in body}
    header = _convert(header_fields, _Header, "", problems)
    dag = _dag_of(body, problems)
    if problems or header is None or dag is None:
        raise InvalidWorkflow(problems)
    return WorkflowSpec(
        name=header.name,
        dag=dag,
        description=header.description or "",
        params=header.params or {},
    )


def _dag_of(body: dict, problems: list[Problem]) -> Dag | None:
    nodes, steps = body.get("nodes"), body.get("steps")
    if nodes is not None:
        if steps:
            problems.append(Problem("steps", "give either `steps` or `nodes`, not both"))
        return _dag(body, "", problems)
    if steps is not None:
        return _chain(steps, problems)
    problems.append(Problem("nodes", "a workflow needs `nodes` (a DAG) or `steps` (a sequence)"))
    return None


def _dag(raw: dict, prefix: str, problems: list[Problem]) -> Dag:
    items = _node_items(raw, prefix, problems)
    nodes = [_node(item, key, path, problems) for path, key, item in items]
    edges_raw = raw.get("edges")
    edges_raw = [] if edges_raw is None else edges_raw
    if not isinstance(edges_raw, list):
        problems.append(Problem(f"{prefix}edges", "expected an array of edges"))
        edges_raw = []
    edges = [_edge(item, f"{prefix}edges[{i}]", problems) for i, item in enumerate(edges_raw)]
    return Dag(nodes=[n for n in nodes if n], edges=[e for e in edges if e])


def _node_items(raw: dict, prefix: str, problems: list[Problem]) -> list[tuple[str, Any, Any]]:
    """(field path, key or None, node) for nodes given as a list or as an object keyed by id."""
    nodes = raw.get("nodes")
    if nodes is None:
        return []
    if isinstance(nodes, list):
        return [(f"{prefix}nodes[{i}]", None, item) for i, item in enumerate(nodes)]
    if isinstance(nodes, dict):
        return [(f"{prefix}nodes.{key}", key, item) for key, item in nodes.items()]
    problems.append(Problem(f"{prefix}nodes", "expected an array or an object keyed by node id"))
    return []


def _node(item: Any, key: str | None, path: str, problems: list[Problem]) -> DagNode | None:
    if not isinstance(item, dict):
        problems.append(Problem(path, "expected an object"))
        return None
    raw = _canonical_node(item, key, path, problems)
    body = raw.pop("body", None)
    node = _convert(raw, DagNode, path, problems)
    if body is None:
        return node
    if not isinstance(body, dict):
        problems.append(Problem(f"{path}.body", "expected an object {nodes, edges}"))
        return None
    dag = _dag(body, f"{path}.body.", problems)
    return msgspec.structs.replace(node, body=dag) if node is not None else None


def _canonical_node(item: dict, key: str | None, path: str, problems: list[Problem]) -> dict:
    """The original's spellings -> the DAG form's (still a dict: msgspec checks the shape)."""
    raw = {k: v for k, v in item.items() if not (k in _BLANK_IS_ABSENT and v in ("", None))}
    if key is not None:
        raw.setdefault("id", key)
    for name in _ENUM_FIELDS:
        _lower(raw, name)
    _alias(raw, "taskDefId", TASK_DEF_ALIASES)
    _decode_payload(raw, path, problems)
    if isinstance(raw.get("condition"), dict):
        raw["condition"] = _condition(raw["condition"])
    _loop(raw, path, problems)
    return raw


def _decode_payload(raw: dict, path: str, problems: list[Problem]) -> None:
    text = raw.pop("payloadJson", None)
    if text is None or "payload" in raw:
        return
    if not isinstance(text, str):
        raw["payload"] = text
        return
    try:
        raw["payload"] = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        problems.append(Problem(f"{path}.payloadJson", f"not valid JSON: {exc}"))


def _condition(raw: dict) -> dict:
    out = dict(raw)
    source = out.pop("sourceTask", None)
    if out.get("source") is None and source is not None:
        out["source"] = source
    return out


def _loop(raw: dict, path: str, problems: list[Problem]) -> None:
    cond = raw.pop("loopCondition", None)
    if "loop" in raw:
        if isinstance(raw["loop"], dict):
            loop = raw["loop"] = dict(raw["loop"])
            _lower(loop, "mode")
            if isinstance(loop.get("condition"), dict):
                loop["condition"] = _condition(loop["condition"])
    elif cond is not None:
        if not isinstance(cond, dict):
            problems.append(Problem(f"{path}.loopCondition", "expected an object"))
            return
        limit = raw.get("maxIterations", raw.get("loopMaxIterations", DEFAULT_MAX_ITERATIONS))
        raw["loop"] = {"mode": "condition", "condition": _condition(cond), "maxIterations": limit}


def _edge(item: Any, path: str, problems: list[Problem]) -> Edge | None:
    if not isinstance(item, dict):
        problems.append(Problem(path, "expected an object {from, to, edgeType?}"))
        return None
    raw = {k: v for k, v in item.items() if not (k in ("type", "edgeType") and v in ("", None))}
    _alias(raw, "from", ("source",))
    _alias(raw, "to", ("target",))
    _alias(raw, "edgeType", ("type",))
    _lower(raw, "edgeType")
    return _convert(raw, Edge, path, problems)


def _chain(raw: Any, problems: list[Problem]) -> Dag | None:
    if not isinstance(raw, list):
        problems.append(Problem("steps", "expected an array of steps"))
        return None
    steps = [_convert(item, _Step, f"steps[{i}]", problems) for i, item in enumerate(raw)]
    ordered = sorted((s for s in steps if s), key=lambda s: (s.ord is None, s.ord or 0))
    nodes = [_step_node(step, f"step{n}") for n, step in enumerate(ordered, 1)]
    edges = [Edge(from_=a.id, to=b.id) for a, b in pairwise(nodes)]
    return Dag(nodes=nodes, edges=edges)


def _step_node(step: _Step, node_id: str) -> DagNode:
    return DagNode(
        id=node_id,
        name=step.name,
        task_def_id=step.definition_id or None,
        task_name=None if step.definition_id else step.name,
        executor=None if step.definition_id else step.executor,
        payload=step.payload,
        timeout_sec=step.timeout_sec,
        max_retries=step.max_retries,
    )


def _lower(raw: dict, name: str) -> None:
    if isinstance(raw.get(name), str):
        raw[name] = raw[name].lower()


def _alias(raw: dict, name: str, aliases: tuple[str, ...]) -> None:
    for alias in aliases:
        value = raw.pop(alias, None)
        if name not in raw and value not in ("", None):
            raw[name] = value


def _convert(raw: Any, model: type, prefix: str, problems: list[Problem]) -> Any:
    try:
        return msgspec.convert(raw, model)
    except msgspec.ValidationError as exc:
        problems.append(_shape_problem(exc, prefix))
        return None


def _shape_problem(exc: msgspec.ValidationError, prefix: str) -> Problem:
    """Like `plum.api.http.split_validation_error`, with the path under `prefix`."""
    message, sep, where = str(exc).partition(" - at `$")
    path = where.rstrip("`").lstrip(".") if sep else ""
    if message.startswith("Object missing required field `"):
        path = _join(path, message.split("`")[1])
    return Problem(_join(prefix, path) or "$", message)


def _join(prefix: str, path: str) -> str:
    if not prefix or not path:
        return prefix or path
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


# -- validate: every problem of a normalised spec, named by node index
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
