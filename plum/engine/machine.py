"""The workflow run state machine: `handle(event, now) -> commands`. Pure: no awaits, no
clock reads, no I/O, no logging. The orchestrator stores the `NodeChanged`/`RunChanged`
commands, then carries out the others (start or cancel tasks and child runs).

Node keys: a top-level node's key is its id; a loop body node of iteration i has the key
`<loop key>#<i>/<id>`, so every iteration's node runs are kept apart (nested loops nest
keys). The machine's whole state is its node records plus the run's state, so replaying
the stored `NodeChanged` records rebuilds it (`RunMachine.restore`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from plum.engine.dag import Condition, DagNode, EdgeType, Graph, LoopMode, NodeType, WorkflowSpec
from plum.engine.model import Model
from plum.engine.rules import (
    FAILED_LIKE,
    NODE_TERMINAL,
    Decision,
    NodeState,
    Tally,
    decide_tally,
)
from plum.engine.templates import MISSING, TemplateError, lookup, render


class RunState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


RUN_TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED})


class NodeRecord(Model, frozen=True):  # every field on the wire: a Pending node has a state
    node_key: str
    node_id: str
    type: NodeType
    state: NodeState = NodeState.PENDING
    scope: str = ""
    iteration: int | None = None
    task_id: str | None = None
    child_run_id: str | None = None
    attempt: int = 0
    input: Any = None
    result: Any = None
    error: str | None = None
    decision: bool | None = None
    iterations: int = 0
    started_at: float | None = None
    finished_at: float | None = None


# -- events
@dataclass(frozen=True, slots=True)
class Start:
    pass


@dataclass(frozen=True, slots=True)
class TaskDone:
    key: str
    state: NodeState
    result: Any = None
    error: str | None = None
    attempt: int = 1
    task_id: str | None = None  # when given, it must be the node's current task


@dataclass(frozen=True, slots=True)
class ChildDone:
    key: str
    state: RunState
    result: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str = "canceled"


@dataclass(frozen=True, slots=True)
class RetryFailed:
    pass


Event = Start | TaskDone | ChildDone | Cancel | RetryFailed


# -- commands
@dataclass(frozen=True, slots=True)
class StartTask:
    key: str
    node: DagNode
    payload: Any


@dataclass(frozen=True, slots=True)
class CancelTask:
    key: str
    task_id: str


@dataclass(frozen=True, slots=True)
class StartChild:
    key: str
    workflow_id: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CancelChild:
    key: str
    child_run_id: str


@dataclass(frozen=True, slots=True)
class NodeChanged:
    record: NodeRecord


@dataclass(frozen=True, slots=True)
class NodesDropped:
    """These records belong to loop iterations that a retry discarded."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunChanged:
    state: RunState
    result: Any = None
    error: str | None = None


Command = (StartTask | CancelTask | StartChild | CancelChild | NodeChanged | NodesDropped
           | RunChanged)


@dataclass(slots=True)
class Scope:
    """One DAG level: the top level, or one iteration of a loop's body."""

    prefix: str
    graph: Graph
    loop: dict[str, Any]
    loop_key: str | None = None
    outer: Scope | None = None
    remaining: int = 0


class _NodesView(Mapping):
    """`${nodes.<id>...}` as seen from a scope: its own iteration first, then outwards."""

    def __init__(self, machine: RunMachine, scope: Scope):
        self._machine = machine
        self._scope = scope

    def __getitem__(self, node_id: str) -> dict[str, Any]:
        scope: Scope | None = self._scope
        while scope is not None:
            record = self._machine.nodes.get(scope.prefix + node_id)
            if record is not None and node_id in scope.graph.nodes:
                return {"result": record.result, "state": record.state.value,
                        "error": record.error}
            scope = scope.outer
        raise KeyError(node_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._scope.graph.nodes)

    def __len__(self) -> int:
        return len(self._scope.graph.nodes)


_OPS = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
    "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b,
}


@dataclass
class RunMachine:
    run_id: str
    spec: WorkflowSpec
    params: dict[str, Any]
    state: RunState = RunState.PENDING
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    scopes: dict[str, Scope] = field(default_factory=dict)
    _out: list[Command] = field(default_factory=list)
    _work: deque[tuple[Scope, str]] = field(default_factory=deque)
    _tallies: dict[str, Tally] = field(default_factory=dict)
    _now: float = 0.0
    _bodies: dict[str, Graph] = field(default_factory=dict)

    def __post_init__(self) -> None:
        top = Scope("", Graph.of(self.spec.dag), {})
        self.scopes[""] = top
        if not self.nodes:
            for node_id, node in top.graph.nodes.items():
                self.nodes[node_id] = NodeRecord(node_key=node_id, node_id=node_id,
                                                 type=node.type)
        self._count(top)

    # -- the one entry point
    def handle(self, event: Event, now: float) -> list[Command]:
        self._out, self._now = [], now
        match event:
            case Start():
                if self.state == RunState.PENDING:
                    self._run_changed(RunState.RUNNING)
                    self._evaluate_all(self.scopes[""])
            case TaskDone(key, state, result, error, attempt, task_id):
                record = self.nodes.get(key)
                stale = task_id is not None and record is not None and record.task_id \
                    and record.task_id != task_id
                if self._is_running(record, NodeType.TASK) and not stale:
                    # the attempt rides on the finish: one NodeChanged, not a second Running
                    self.nodes[key] = msgspec.structs.replace(record, attempt=attempt)
                    self._finish(key, state, result=result, error=error)
            case ChildDone(key, state, result, error):
                record = self.nodes.get(key)
                if self._is_running(record, NodeType.SUBWORKFLOW):
                    node_state = NodeState.SUCCEEDED if state == RunState.SUCCEEDED else (
                        NodeState.CANCELED if state == RunState.CANCELED else NodeState.FAILED)
                    self._finish(key, node_state, result=result, error=error)
            case Cancel(reason):
                self._cancel(reason)
            case RetryFailed():
                self._retry_failed()
        self._drain()
        out, self._out = self._out, []
        return out

    def _drain(self) -> None:
        """Evaluate queued nodes until nothing more can be decided in this turn. A worklist,
        not recursion: a 10,000-node chain of instant nodes must not exhaust the stack."""
        while self._work:
            scope, node_id = self._work.popleft()
            self._evaluate(scope, node_id)

    def assign(self, key: str, *, task_id: str | None = None,
               child_run_id: str | None = None) -> NodeRecord:
        """The orchestrator gave the node's task (or child run) its id."""
        changes = {"task_id": task_id} if task_id else {"child_run_id": child_run_id}
        record = msgspec.structs.replace(self.nodes[key], **changes)
        self.nodes[key] = record
        return record

    @property
    def terminal(self) -> bool:
        return self.state in RUN_TERMINAL

    def _is_running(self, record: NodeRecord | None, kind: NodeType) -> bool:
        return (record is not None and record.type == kind and record.state == NodeState.RUNNING
                and self.state == RunState.RUNNING)

    # -- records
    def _set(self, key: str, **changes: Any) -> NodeRecord:
        old = self.nodes[key]
        record = msgspec.structs.replace(old, **changes)
        self.nodes[key] = record
        if record.state in NODE_TERMINAL and old.state not in NODE_TERMINAL:
            self.scopes[record.scope].remaining -= 1
        elif old.state in NODE_TERMINAL and record.state not in NODE_TERMINAL:
            self.scopes[record.scope].remaining += 1
        self._out.append(NodeChanged(record))
        return record

    def _count(self, scope: Scope) -> None:
        scope.remaining = sum(
            1 for node_id in scope.graph.nodes
            if self.nodes[scope.prefix + node_id].state not in NODE_TERMINAL
        )

    def _run_changed(self, state: RunState, result: Any = None, error: str | None = None) -> None:
        self.state = state
        self._out.append(RunChanged(state, result, error))

    # -- evaluation
    def _evaluate_all(self, scope: Scope) -> None:
        self._work.extend((scope, node_id) for node_id in scope.graph.nodes)

    def _evaluate(self, scope: Scope, node_id: str) -> None:
        if self.state != RunState.RUNNING:
            return
        key = scope.prefix + node_id
        if self.nodes[key].state != NodeState.PENDING:
            return
        node = scope.graph.nodes[node_id]
        decision = decide_tally(node.trigger_rule, self._tally(scope, node_id))
        if decision is None:
            return
        if decision == Decision.SKIP:
            self._finish(key, NodeState.SKIPPED)
        elif decision == Decision.UPSTREAM_FAILED:
            self._finish(key, NodeState.UPSTREAM_FAILED)
        else:
            self._activate(scope, node)

    def _tally(self, scope: Scope, node_id: str) -> Tally:
        key = scope.prefix + node_id
        tally = self._tallies.get(key)
        if tally is None:
            edges = scope.graph.upstream[node_id]
            tally = self._tallies[key] = Tally(len(edges))
            for e in edges:
                state = self._edge_state(scope, e.from_, e.edge_type)
                if state in NODE_TERMINAL:
                    tally.add(state, counted=True)
        return tally

    def _edge_state(self, scope: Scope, upstream_id: str, edge_type: EdgeType) -> NodeState:
        up = self.nodes[scope.prefix + upstream_id]
        if up.type == NodeType.BRANCH and up.state == NodeState.SUCCEEDED \
                and edge_type != EdgeType.NORMAL:
            taken = EdgeType.TRUE if up.decision else EdgeType.FALSE
            return NodeState.SUCCEEDED if edge_type == taken else NodeState.SKIPPED
        return up.state

    def _context(self, scope: Scope) -> dict[str, Any]:
        return {"params": self.params, "nodes": _NodesView(self, scope), "loop": scope.loop}

    def _activate(self, scope: Scope, node: DagNode) -> None:
        key = scope.prefix + node.id
        match node.type:
            case NodeType.TASK:
                try:
                    payload = render(node.payload, self._context(scope))
                except TemplateError as exc:
                    self._finish(key, NodeState.FAILED, error=f"template error: {exc}")
                    return
                self._set(key, state=NodeState.RUNNING, input=payload, started_at=self._now)
                self._out.append(StartTask(key, node, payload))
            case NodeType.BRANCH:
                self._branch(scope, node)
            case NodeType.PARALLEL:
                self._set(key, state=NodeState.RUNNING, started_at=self._now)
                self._finish(key, NodeState.SUCCEEDED)
            case NodeType.LOOP:
                self._set(key, state=NodeState.RUNNING, started_at=self._now,
                          result={"iterations": 0, "results": []})
                self._start_iteration(scope, node, 0)
            case NodeType.SUBWORKFLOW:
                try:
                    params = render(node.params or {}, self._context(scope))
                except TemplateError as exc:
                    self._finish(key, NodeState.FAILED, error=f"template error: {exc}")
                    return
                self._set(key, state=NodeState.RUNNING, input=params, started_at=self._now)
                self._out.append(StartChild(key, node.workflow_id or "", params))

    def _condition(self, scope: Scope, cond: Condition, default_source: str | None
                   ) -> tuple[Any, bool]:
        """Evaluate a branch or loop condition; raises ValueError with a readable reason."""
        source = cond.source or default_source
        if source is None:
            raise ValueError("the condition has no source node")
        try:
            record = _NodesView(self, scope)[source]
        except KeyError:
            raise ValueError(f"condition source {source!r} is not a node here") from None
        path = cond.field
        root = record if path.split(".", 1)[0] in record else record["result"]
        value = lookup(root, path)
        if value is MISSING:
            raise ValueError(f"condition field {path!r} is not in {source}'s result")
        try:
            return value, bool(_OPS[cond.operator.value](value, cond.value))
        except TypeError:
            raise ValueError(f"cannot compare {value!r} {cond.operator.value} "
                             f"{cond.value!r}") from None

    def _branch(self, scope: Scope, node: DagNode) -> None:
        key = scope.prefix + node.id
        self._set(key, state=NodeState.RUNNING, started_at=self._now)
        try:
            upstream = scope.graph.upstream[node.id]
            value, outcome = self._condition(scope, node.condition,  # type: ignore[arg-type]
                                             upstream[0].from_ if len(upstream) == 1 else None)
        except ValueError as exc:
            self._finish(key, NodeState.FAILED, error=str(exc))
            return
        self._set(key, decision=outcome)
        self._finish(key, NodeState.SUCCEEDED, result={"value": value, "result": outcome})

    # -- loops
    def _body(self, node: DagNode) -> Graph:
        graph = self._bodies.get(node.id)
        if graph is None:
            graph = self._bodies[node.id] = Graph.of(node.body)  # type: ignore[arg-type]
        return graph

    def _iteration_scope(self, outer: Scope, node: DagNode, index: int) -> Scope:
        key = outer.prefix + node.id
        spec = node.loop
        loop_ctx = {"index": index}
        if spec is not None and spec.var:
            loop_ctx[spec.var] = index
        scope = Scope(f"{key}#{index}/", self._body(node), loop_ctx, key, outer)
        self.scopes[scope.prefix] = scope
        return scope

    def _start_iteration(self, outer: Scope, node: DagNode, index: int) -> None:
        key = outer.prefix + node.id
        spec = node.loop
        if spec is not None and spec.mode == LoopMode.COUNT and index >= (spec.count or 0):
            self._finish(key, NodeState.SUCCEEDED, result=self.nodes[key].result)
            return
        scope = self._iteration_scope(outer, node, index)
        for body_id, body_node in scope.graph.nodes.items():
            body_key = scope.prefix + body_id
            self.nodes[body_key] = NodeRecord(node_key=body_key, node_id=body_id,
                                              type=body_node.type, scope=scope.prefix,
                                              iteration=index)
            self._out.append(NodeChanged(self.nodes[body_key]))
        scope.remaining = len(scope.graph.nodes)
        self._set(key, iterations=index + 1)
        self._evaluate_all(scope)

    def _iteration_done(self, scope: Scope) -> None:
        loop_key = scope.loop_key
        assert loop_key is not None and scope.outer is not None
        loop = self.nodes[loop_key]
        node = scope.outer.graph.nodes[loop.node_id]
        index = scope.loop["index"]
        leaves = [self.nodes[scope.prefix + leaf] for leaf in scope.graph.leaves()]
        results = [*loop.result["results"], {r.node_id: r.result for r in leaves}]
        summary = {"iterations": index + 1, "results": results}
        failed = next((r for r in leaves if r.state in FAILED_LIKE), None)
        if failed is not None:
            reason = f": {failed.error}" if failed.error else ""
            self._finish(loop_key, NodeState.FAILED, result=summary,
                         error=f"iteration {index} failed: {failed.node_id} "
                               f"{failed.state.value}{reason}")
            return
        self._set(loop_key, result=summary)
        spec = node.loop
        if spec is not None and spec.mode == LoopMode.CONDITION:
            if index + 1 >= (spec.max_iterations or 1):
                self._finish(loop_key, NodeState.SUCCEEDED, result=summary)
                return
            try:
                leaves = scope.graph.leaves()
                _, again = self._condition(scope, spec.condition,  # type: ignore[arg-type]
                                           leaves[0] if len(leaves) == 1 else None)
            except ValueError as exc:
                self._finish(loop_key, NodeState.FAILED, result=summary, error=str(exc))
                return
            if not again:
                self._finish(loop_key, NodeState.SUCCEEDED, result=summary)
                return
        self._start_iteration(scope.outer, node, index + 1)

    # -- finishing nodes and the run
    def _finish(self, key: str, state: NodeState, *, result: Any = None,
                error: str | None = None) -> None:
        record = self._set(key, state=state, result=result, error=error, finished_at=self._now)
        scope = self.scopes[record.scope]
        for edge in scope.graph.downstream[record.node_id]:
            tally = self._tallies.get(scope.prefix + edge.to)
            if tally is not None:  # else it is counted from scratch, this end included
                tally.add(self._edge_state(scope, record.node_id, edge.edge_type), counted=True)
            self._work.append((scope, edge.to))
        if scope.remaining == 0 and self.state == RunState.RUNNING:
            if scope.loop_key is None:
                self._run_done()
            elif self.nodes[scope.loop_key].state == NodeState.RUNNING \
                    and scope.prefix == self._current_prefix(scope.loop_key):
                self._iteration_done(scope)

    def _current_prefix(self, loop_key: str) -> str:
        return f"{loop_key}#{self.nodes[loop_key].iterations - 1}/"

    def _run_done(self) -> None:
        top = self.scopes[""]
        leaves = [self.nodes[leaf] for leaf in top.graph.leaves()]
        failed = [r for r in leaves if r.state in FAILED_LIKE]
        result = {r.node_id: r.result for r in leaves}
        if failed:
            first = failed[0]
            self._run_changed(RunState.FAILED, result,
                              f"{first.node_id} {first.state.value}"
                              + (f": {first.error}" if first.error else ""))
        else:
            self._run_changed(RunState.SUCCEEDED, result)

    def _cancel(self, reason: str) -> None:
        if self.terminal:
            return
        for key, record in list(self.nodes.items()):
            if record.state in NODE_TERMINAL:
                continue
            if record.state == NodeState.RUNNING and record.task_id:
                self._out.append(CancelTask(key, record.task_id))
            if record.state == NodeState.RUNNING and record.child_run_id:
                self._out.append(CancelChild(key, record.child_run_id))
            self._set(key, state=NodeState.CANCELED, error=reason, finished_at=self._now)
        self._run_changed(RunState.CANCELED, None, reason)

    def _retry_failed(self) -> None:
        """Re-run what did not succeed; what succeeded keeps its result."""
        if self.state not in (RunState.FAILED, RunState.CANCELED):
            return
        for prefix in sorted((p for p in self.scopes if p), key=lambda p: p.count("/")):
            loop_key = self.scopes[prefix].loop_key
            loop = self.nodes.get(loop_key) if loop_key is not None else None
            if loop is None or loop.state != NodeState.SUCCEEDED:
                self._drop_scope(prefix)
        top = self.scopes[""]
        for node_id in top.graph.nodes:
            record = self.nodes[node_id]
            if record.state != NodeState.SUCCEEDED:
                self._set(node_id, state=NodeState.PENDING, result=None, error=None,
                          task_id=None, child_run_id=None, attempt=0, input=None,
                          decision=None, iterations=0, started_at=None, finished_at=None)
        self._tallies.clear()
        self._run_changed(RunState.RUNNING)
        self._evaluate_all(self.scopes[""])

    def _drop_scope(self, prefix: str) -> None:
        scope = self.scopes.pop(prefix, None)
        if scope is None:
            return
        keys = tuple(prefix + node_id for node_id in scope.graph.nodes)
        for key in keys:
            self.nodes.pop(key, None)
        self._out.append(NodesDropped(keys))

    # -- rebuilding from stored records
    @classmethod
    def restore(cls, run_id: str, spec: WorkflowSpec, params: dict[str, Any], state: RunState,
                records: list[NodeRecord]) -> RunMachine:
        machine = cls(run_id, spec, params, state=state,
                      nodes={r.node_key: r for r in records})
        by_depth = sorted((r for r in records if r.type == NodeType.LOOP),
                          key=lambda r: r.node_key.count("/"))
        for record in by_depth:
            outer = machine.scopes.get(record.scope)
            if outer is None:
                continue
            node = outer.graph.nodes[record.node_id]
            for index in range(record.iterations):
                scope = machine._iteration_scope(outer, node, index)
                if all(scope.prefix + n in machine.nodes for n in scope.graph.nodes):
                    machine._count(scope)
                else:
                    machine.scopes.pop(scope.prefix)
        # The store keeps the records of iterations a retry dropped; they belong to no scope.
        machine.nodes = {k: r for k, r in machine.nodes.items() if r.scope in machine.scopes}
        machine._count(machine.scopes[""])
        return machine


class WorkflowRun(Model, frozen=True):
    run_id: str
    workflow_id: str
    version: int
    state: RunState
    workflow_name: str = ""
    params: dict[str, Any] = {}
    result: Any = None
    error: str | None = None
    trigger: str = "manual"
    parent_run_id: str | None = None
    parent_node_key: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
