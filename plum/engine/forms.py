"""The input forms a workflow definition may come in, normalised to one `WorkflowSpec`.

Accepted: the DAG form of API.md, sequential `steps`, and the original Plum's form (nodes
keyed by id, `payloadJson` strings, `condition.sourceTask`, `loopCondition`). Shape errors
are collected with their field paths and raised together as `InvalidWorkflow`.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import msgspec

from plum.engine.dag import (
    Dag,
    DagNode,
    Edge,
    InvalidWorkflow,
    Problem,
    WorkflowSpec,
)
from plum.engine.model import Model

DEFAULT_MAX_ITERATIONS = 100  # for the original's `loopCondition` without a maximum
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
