"""Workflows and their runs through the REST API, in-process, on a fake clock.

The in-process controller runs only the core (no agent), so every task here is a builtin;
real executors (service, os_process) and `kill -9` are in tests/integration/test_workflows.py.
Every wait is on the bus, with the future created before the action that resolves it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from plum.bus import RunNodeChanged, RunUpdated, TaskChanged
from plum.executors.builtin import builtin_def_id
from tests.api.test_skeleton import assert_error
from tests.support.sse import EventStream

pytestmark = pytest.mark.timeout(30)

SAFETY = 10.0  # never reached when all is well
ECHO = builtin_def_id("builtin.echo")
DELAY = builtin_def_id("builtin.delay")
FAIL = builtin_def_id("builtin.fail")
UNKNOWN_DEF = "f" * 32
RUN_TERMINAL = {"Succeeded", "Failed", "Canceled"}


@pytest.fixture
async def plum(api_services):
    """(client, services); active runs are canceled afterwards, so that stopping the engine
    does not wait its drain grace for a fake-clock delay that never ends."""
    client, svc = api_services
    yield client, svc
    for run in await get_json(client, "/v1/workflow-runs", limit=1000):
        if run["state"] not in RUN_TERMINAL:
            await client.post(f"/v1/workflow-runs/{run['runId']}?action=cancel")


# --- helpers -------------------------------------------------------------------------------


def task(node_id: str, def_id: str = ECHO, **extra) -> dict:
    return {"id": node_id, "type": "task", "taskDefId": def_id, **extra}


def edge(src: str, dst: str, edge_type: str | None = None) -> dict:
    return {"from": src, "to": dst, **({"edgeType": edge_type} if edge_type else {})}


def dag(name: str, nodes: list[dict], edges: list[dict] = (), **extra) -> dict:
    return {"name": name, "nodes": nodes, "edges": list(edges), **extra}


async def get_json(client, path: str, status: int = 200, **query):
    response = await client.get(path, params=query)
    assert response.status == status, await response.text()
    return await response.json()


async def create_wf(client, body: dict, path: str = "/v1/workflows") -> dict:
    response = await client.post(path, json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def rejected(client, body: dict, method: str = "POST", path: str = "/v1/workflows"):
    response = await client.request(method, path, json=body)
    assert response.status == 422, await response.text()
    return (await response.json())["error"]


async def workflow_count(client) -> int:
    response = await client.get("/v1/workflows", params={"limit": 1})
    return int(response.headers["X-Total-Count"])


async def start(client, workflow_id: str, params: dict | None = None) -> dict:
    response = await client.post(f"/v1/workflows/{workflow_id}?action=run",
                                 json={"params": params or {}})
    assert response.status == 201, await response.text()
    return await response.json()


async def get_run(client, run_id: str) -> dict:
    return await get_json(client, f"/v1/workflow-runs/{run_id}")


def nodes_of(detail: dict) -> dict[str, dict]:
    return {n["nodeKey"]: n for n in detail["nodes"]}


def run_ends(bus, workflow_id: str | None = None, run_id: str | None = None) -> asyncio.Future:
    """The next terminal `RunUpdated` of that workflow (or run)."""

    def match(event) -> bool:
        return (isinstance(event, RunUpdated) and event.run.state in RUN_TERMINAL
                and workflow_id in (None, event.run.workflow_id)
                and run_id in (None, event.run.run_id))

    return bus.wait_for(match)


def node_reaches(bus, key: str, state: str) -> asyncio.Future:
    return bus.wait_for(lambda e: isinstance(e, RunNodeChanged) and e.node.node_key == key
                        and e.node.state == state)


def task_reaches(bus, state: str, **want) -> asyncio.Future:
    return bus.wait_for(lambda e: isinstance(e, TaskChanged) and e.task.state == state
                        and all(getattr(e.task, k) == v for k, v in want.items()))


async def settle(future: asyncio.Future):
    return await asyncio.wait_for(future, SAFETY)


async def run_to_end(client, svc, workflow_id: str, params: dict | None = None) -> dict:
    """Run the workflow and return the run detail once the run has ended."""
    ended = run_ends(svc.bus, workflow_id)
    run = await start(client, workflow_id, params)
    await settle(ended)
    return await get_run(client, run["runId"])


# --- definitions -----------------------------------------------------------------------------


async def test_create_dag_get_and_list_newest_first(plum):
    client, _ = plum
    body = dag("first", [task("a", payload={"x": 1}, ui={"x": 10, "y": 20}),
                         task("b", triggerRule="all_done")], [edge("a", "b")],
               description="two echoes", params={"x": 0})
    created = await create_wf(client, body)
    assert len(created["workflowId"]) == 32
    assert (created["name"], created["version"], created["description"]) == (
        "first", 1, "two echoes")
    assert created["params"] == {"x": 0}
    assert [n["id"] for n in created["nodes"]] == ["a", "b"]
    assert created["nodes"][0]["payload"] == {"x": 1}
    assert created["nodes"][0]["ui"] == {"x": 10, "y": 20}
    assert created["nodes"][1]["triggerRule"] == "all_done"
    assert created["edges"] == [{"from": "a", "to": "b"}]
    fetched = await get_json(client, f"/v1/workflows/{created['workflowId']}")
    assert fetched == created

    second = await create_wf(client, dag("second", [task("only")]))
    response = await client.get("/v1/workflows")
    assert response.headers["X-Total-Count"] == "2"
    assert [w["workflowId"] for w in await response.json()] == [
        second["workflowId"], created["workflowId"]]
    page = await get_json(client, "/v1/workflows", limit=1, offset=1)
    assert [w["workflowId"] for w in page] == [created["workflowId"]]
    await get_json(client, f"/v1/workflows/{'0' * 32}", status=404)


async def test_duplicate_workflow_name_is_409(plum):
    client, _ = plum
    await create_wf(client, dag("same", [task("a")]))
    response = await client.post("/v1/workflows", json=dag("same", [task("b")]))
    assert response.status == 409
    assert_error(await response.json(), "conflict", "name")
    assert await workflow_count(client) == 1


async def test_sequential_steps_run_in_ord_order(plum):
    client, svc = plum
    body = {"name": "seq", "steps": [
        {"name": "second", "definitionId": ECHO, "ord": 2,
         "payload": {"n": "${nodes.step1.result.echo.n}"}},
        {"name": "first", "definitionId": ECHO, "ord": 1, "payload": {"n": 1}},
        {"name": "builtin.echo", "executor": "embedded", "payload": {"inline": True}},
    ]}
    created = await create_wf(client, body)
    assert [(n["id"], n["name"]) for n in created["nodes"]] == [
        ("step1", "first"), ("step2", "second"), ("step3", "builtin.echo")]
    assert created["nodes"][2]["taskName"] == "builtin.echo"
    assert created["nodes"][2]["executor"] == "embedded"
    assert created["edges"] == [edge("step1", "step2"), edge("step2", "step3")]

    detail = await run_to_end(client, svc, created["workflowId"])
    assert detail["state"] == "Succeeded", detail
    nodes = nodes_of(detail)
    assert nodes["step2"]["result"] == {"echo": {"n": 1}}
    assert nodes["step3"]["result"] == {"echo": {"inline": True}}
    inline = await get_json(client, f"/v1/tasks/{nodes['step3']['taskId']}")
    assert (inline["name"], inline["executor"], inline["defId"]) == (
        "builtin.echo", "embedded", ECHO)
    assert inline["workflowRunId"] == detail["runId"]
    assert inline["dagNodeId"] == "step3"


async def test_inline_step_without_a_worker_waits_then_times_out(plum, clock):
    client, svc = plum
    created = await create_wf(client, {"name": "nobody", "steps": [
        {"name": "custom.thing", "executor": "embedded", "payload": {}, "timeoutSec": 5}]})
    ended = run_ends(svc.bus, created["workflowId"])
    waiting = task_reaches(svc.bus, "Pending", name="custom.thing",
                           reason="waiting for a worker serving 'custom.thing'")
    await start(client, created["workflowId"])
    await settle(waiting)
    clock.advance(5)
    await settle(ended)
    detail = await get_run(client, (await ended).run.run_id)
    assert detail["state"] == "Failed"
    node = nodes_of(detail)["step1"]
    assert node["state"] == "Timeout"
    assert "timed out after 5s" in node["error"]

    # without an executor, a name nothing defines is refused up front
    error = await rejected(client, {"name": "undefined", "steps": [{"name": "custom.thing"}]})
    assert error["field"] == "nodes[0].taskName"


async def test_original_keyed_form_is_normalised(plum):
    client, svc = plum
    body = {
        "name": "original",
        "nodes": {
            "first": {"type": "TASK", "taskDefinitionId": ECHO,
                      "payloadJson": '{"score": "${params.score}"}'},
            "gate": {"type": "BRANCH", "condition": {
                "sourceTask": "first", "field": "echo.score", "operator": ">=", "value": 50}},
            "pass": {"type": "TASK", "taskDefId": ECHO, "payloadJson": '{"verdict": "pass"}'},
            "fail": {"type": "TASK", "taskDefId": ECHO, "payloadJson": '{"verdict": "fail"}',
                     "triggerRule": ""},
            "again": {"type": "LOOP", "triggerRule": "ONE_SUCCESS", "maxIterations": 5,
                      "loopCondition": {"sourceTask": "count", "field": "echo.i",
                                        "operator": "<", "value": 1},
                      "body": {"nodes": {"count": {"taskDefId": ECHO,
                                                   "payloadJson": '{"i": "${loop.index}"}'}}}},
        },
        "edges": [
            {"source": "first", "target": "gate"},
            {"from": "gate", "to": "pass", "type": "TRUE"},
            {"from": "gate", "to": "fail", "type": "false"},
            {"from": "pass", "to": "again", "type": ""},
            {"from": "fail", "to": "again"},
        ],
    }
    created = await create_wf(client, body)
    nodes = {n["id"]: n for n in created["nodes"]}
    assert list(nodes) == ["first", "gate", "pass", "fail", "again"]
    assert nodes["first"]["payload"] == {"score": "${params.score}"}
    assert nodes["gate"]["type"] == "branch"
    assert nodes["gate"]["condition"] == {"source": "first", "field": "echo.score",
                                          "operator": ">=", "value": 50}
    assert nodes["again"]["loop"] == {
        "mode": "condition", "maxIterations": 5,
        "condition": {"source": "count", "field": "echo.i", "operator": "<", "value": 1}}
    assert nodes["again"]["body"]["nodes"][0]["payload"] == {"i": "${loop.index}"}
    assert created["edges"][1] == edge("gate", "pass", "true")
    assert created["edges"][3] == edge("pass", "again")

    detail = await run_to_end(client, svc, created["workflowId"], {"score": 70})
    assert detail["state"] == "Succeeded", detail
    states = {k: n["state"] for k, n in nodes_of(detail).items()}
    assert states == {"first": "Succeeded", "gate": "Succeeded", "pass": "Succeeded",
                      "fail": "Skipped", "again": "Succeeded", "again#0/count": "Succeeded",
                      "again#1/count": "Succeeded"}
    assert nodes_of(detail)["again"]["result"] == {
        "iterations": 2, "results": [{"count": {"echo": {"i": 0}}},
                                     {"count": {"echo": {"i": 1}}}]}


async def test_put_makes_version_2_and_a_running_run_keeps_version_1(plum, clock):
    client, svc = plum
    created = await create_wf(client, dag("versions", [task("wait", DELAY,
                                                            payload={"seconds": 5})]))
    workflow_id = created["workflowId"]
    waiting = node_reaches(svc.bus, "wait", "Running")
    old = await start(client, workflow_id)
    await settle(waiting)
    assert old["version"] == 1

    response = await client.put(f"/v1/workflows/{workflow_id}",
                                json=dag("versions", [task("quick", payload={"v": 2})]))
    assert response.status == 200, await response.text()
    updated = await response.json()
    assert (updated["workflowId"], updated["version"]) == (workflow_id, 2)
    assert updated["createdAt"] == created["createdAt"]
    current = await get_json(client, f"/v1/workflows/{workflow_id}")
    assert (current["version"], [n["id"] for n in current["nodes"]]) == (2, ["quick"])

    # the old run goes on with version 1's nodes, to the end
    old_ended = run_ends(svc.bus, run_id=old["runId"])
    clock.advance(5)
    await settle(old_ended)
    detail = await get_run(client, old["runId"])
    assert (detail["state"], detail["version"]) == ("Succeeded", 1)
    assert list(nodes_of(detail)) == ["wait"]
    assert nodes_of(detail)["wait"]["result"] == {"seconds": 5}

    new = await run_to_end(client, svc, workflow_id)
    assert (new["state"], new["version"]) == ("Succeeded", 2)
    assert nodes_of(new)["quick"]["result"] == {"echo": {"v": 2}}
    runs = await get_json(client, "/v1/workflow-runs", workflowId=workflow_id)
    assert [(r["runId"], r["version"]) for r in runs] == [(new["runId"], 2), (old["runId"], 1)]

    missing = await client.put(f"/v1/workflows/{'0' * 32}", json=dag("x", [task("a")]))
    assert missing.status == 404


async def test_delete_is_409_while_a_run_is_active_unless_forced(plum):
    client, svc = plum
    idle = await create_wf(client, dag("idle", [task("a")]))
    assert (await run_to_end(client, svc, idle["workflowId"]))["state"] == "Succeeded"
    assert (await client.delete(f"/v1/workflows/{idle['workflowId']}")).status == 204
    await get_json(client, f"/v1/workflows/{idle['workflowId']}", status=404)

    busy = await create_wf(client, dag("busy", [task("wait", DELAY, payload={"seconds": 100})]))
    path = f"/v1/workflows/{busy['workflowId']}"
    running = node_reaches(svc.bus, "wait", "Running")
    run = await start(client, busy["workflowId"])
    await settle(running)
    response = await client.delete(path)
    assert response.status == 409
    body = await response.json()
    assert_error(body, "conflict")
    assert body["error"]["activeRuns"] == 1
    assert (await get_json(client, path))["version"] == 1

    assert (await client.delete(f"{path}?force=true")).status == 204
    await get_json(client, path, status=404)
    assert await workflow_count(client) == 0
    # the run outlives its workflow and can still be canceled
    response = await client.post(f"/v1/workflow-runs/{run['runId']}?action=cancel")
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "Canceled"
    assert (await client.delete(path)).status == 404


async def test_dag_aliases(plum):
    client, svc = plum
    body = dag("alias", [task("a", payload={"who": "${params.who}"}),
                         task("b", payload={"got": "${nodes.a.result.echo.who}"})],
               [edge("a", "b")])
    created = await create_wf(client, body, path="/v1/dag/workflows")
    workflow_id = created["workflowId"]
    assert await get_json(client, f"/v1/dag/workflows/{workflow_id}") == created
    listed = await client.get("/v1/dag/workflows")
    assert listed.headers["X-Total-Count"] == "1"
    assert [w["workflowId"] for w in await listed.json()] == [workflow_id]

    ended = run_ends(svc.bus, workflow_id)
    response = await client.post(f"/v1/dag/workflows/{workflow_id}/run",
                                 json={"taskPayload": {"who": "plum"}})
    assert response.status == 201, await response.text()
    run = await response.json()
    assert run["params"] == {"who": "plum"}
    await settle(ended)
    status = await get_json(client, f"/v1/dag/runs/{run['runId']}/status")
    assert status == {"runId": run["runId"], "state": "Succeeded",
                      "nodes": {"a": "Succeeded", "b": "Succeeded"}}
    detail = await get_run(client, run["runId"])
    assert nodes_of(detail)["b"]["result"] == {"echo": {"got": "plum"}}

    # a run body is optional
    ended = run_ends(svc.bus, workflow_id)
    response = await client.post(f"/v1/dag/workflows/{workflow_id}/run")
    assert response.status == 201, await response.text()
    assert (await settle(ended)).run.state == "Failed"  # ${params.who} names nothing

    assert (await client.delete(f"/v1/dag/workflows/{workflow_id}")).status == 204
    await get_json(client, f"/v1/dag/workflows/{workflow_id}", status=404)
    await get_json(client, f"/v1/dag/runs/{'0' * 32}/status", status=404)


# --- validation ------------------------------------------------------------------------------

INVALID = {
    "cycle": (
        dag("w", [task("a"), task("b"), task("c")],
            [edge("a", "b"), edge("b", "c"), edge("c", "b")]),
        {"edges": "cycle: b → c → b"},
    ),
    "dangling edge": (
        dag("w", [task("a")], [edge("a", "ghost")]),
        {"edges[0].to": "unknown node 'ghost'"},
    ),
    "unknown task definition": (
        dag("w", [task("a"), task("b", UNKNOWN_DEF)], [edge("a", "b")]),
        {"nodes[1].taskDefId": "unknown task definition"},
    ),
    "branch without a false edge": (
        dag("w", [task("a"), {"id": "if", "type": "branch",
                              "condition": {"field": "echo.x", "operator": "==", "value": 1}},
                  task("yes")],
            [edge("a", "if"), edge("if", "yes", "true")]),
        {"nodes[1]": "outgoing `false` edge"},
    ),
    "branch with plain edges": (
        dag("w", [task("a"), {"id": "if", "type": "branch",
                              "condition": {"field": "echo.x", "operator": "==", "value": 1}},
                  task("yes")],
            [edge("a", "if"), edge("if", "yes")]),
        {"edges[1].edgeType": "must be `true` or `false`",
         "nodes[1]": ("outgoing `true` edge", "outgoing `false` edge")},
    ),
    "loop without body": (
        dag("w", [{"id": "l", "type": "loop", "loop": {"mode": "count", "count": 2}}]),
        {"nodes[0].body": "needs a body"},
    ),
    "loop without bound": (
        dag("w", [{"id": "l", "type": "loop", "loop": {"mode": "count"},
                   "body": {"nodes": [task("x")]}}]),
        {"nodes[0].loop.count": "between 1 and"},
    ),
    "condition loop without maxIterations or condition": (
        dag("w", [{"id": "l", "type": "loop", "loop": {"mode": "condition"},
                   "body": {"nodes": [task("x")]}}]),
        {"nodes[0].loop.maxIterations": "between 1 and",
         "nodes[0].loop.condition": "required"},
    ),
    "duplicate ids": (
        dag("w", [task("a"), task("a"),
                  {"id": "l", "type": "loop", "loop": {"count": 1},
                   "body": {"nodes": [task("l")]}}],
            [edge("a", "l")]),
        {"nodes[1].id": "duplicate node id 'a'", "nodes[2].body.nodes[0].id": "duplicate"},
    ),
    "unknown subworkflow": (
        dag("w", [{"id": "s", "type": "subworkflow", "workflowId": UNKNOWN_DEF}]),
        {"nodes[0].workflowId": "unknown workflow"},
    ),
    "several problems at once": (
        dag("w", [task("a", UNKNOWN_DEF), task("b"), task("b")],
            [edge("a", "b"), edge("b", "nowhere")]),
        {"nodes[0].taskDefId": "unknown task definition",
         "nodes[2].id": "duplicate node id 'b'",
         "edges[1].to": "unknown node 'nowhere'"},
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_graphs_are_422_naming_every_problem(plum, case):
    client, _ = plum
    await create_wf(client, dag("kept", [task("a")]))
    body, expected = INVALID[case]
    response = await client.post("/v1/workflows", json=body)
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "invalid"
    problems = [(p["field"], p["message"]) for p in error["problems"]]
    wanted = [(field, text) for field, texts in expected.items()
              for text in (texts if isinstance(texts, tuple) else (texts,))]
    assert len(problems) == len(wanted), problems
    for field, text in wanted:
        assert any(f == field and text in m for f, m in problems), (field, text, problems)
    assert error["field"] == error["problems"][0]["field"]
    assert error["field"] in expected
    assert await workflow_count(client) == 1  # nothing stored


async def test_invalid_put_keeps_the_current_version(plum):
    client, _ = plum
    created = await create_wf(client, dag("keep", [task("a")]))
    path = f"/v1/workflows/{created['workflowId']}"
    error = await rejected(client, dag("keep", [task("a"), task("b")], [edge("b", "a"),
                                                                      edge("a", "b")]),
                           method="PUT", path=path)
    assert error["field"] == "edges"
    current = await get_json(client, path)
    assert (current["version"], current["nodes"]) == (1, created["nodes"])


async def test_malformed_bodies(plum):
    client, _ = plum
    response = await client.post("/v1/workflows", data=b"{nope")
    assert response.status == 400
    assert_error(await response.json(), "invalid")
    error = await rejected(client, {"name": "empty"})
    assert error["field"] == "nodes"
    error = await rejected(client, dag("bad-type", [{"id": "a", "type": "teleport"}]))
    assert error["field"].startswith("nodes[0]")
    error = await rejected(client, dag("", [task("a")]))
    assert error["field"] == "name"
    assert await workflow_count(client) == 0


async def test_subworkflow_recursion_is_refused(plum):
    client, _ = plum
    b = await create_wf(client, dag("B", [task("leaf")]))
    a = await create_wf(client, dag("A", [{"id": "callB", "type": "subworkflow",
                                           "workflowId": b["workflowId"]}]))
    calls_a = dag("B", [{"id": "callA", "type": "subworkflow", "workflowId": a["workflowId"]}])
    error = await rejected(client, calls_a, method="PUT", path=f"/v1/workflows/{b['workflowId']}")
    assert error["field"] == "nodes[0].workflowId"
    assert error["message"].endswith(
        f"subworkflow recursion: {b['workflowId']} → {a['workflowId']} → {b['workflowId']}")
    assert (await get_json(client, f"/v1/workflows/{b['workflowId']}"))["version"] == 1

    calls_self = dag("A", [{"id": "me", "type": "subworkflow", "workflowId": a["workflowId"]}])
    error = await rejected(client, calls_self, method="PUT",
                           path=f"/v1/workflows/{a['workflowId']}")
    assert error["field"] == "nodes[0].workflowId"
    assert "recursion" in error["message"]
    assert await workflow_count(client) == 2


# --- runs ------------------------------------------------------------------------------------


async def test_chain_with_templates_succeeds_with_every_node_recorded(plum):
    client, svc = plum
    body = dag("chain", [
        task("a", payload={"x": "${params.x}", "fixed": [1, 2]}),
        task("b", payload={"fromA": "${nodes.a.result.echo.x}", "text": "x is ${params.x}",
                           "list": "${nodes.a.result.echo.fixed}"}),
        task("c", payload={"both": ["${nodes.a.result.echo.x}", "${nodes.b.result.echo.text}"]}),
    ], [edge("a", "b"), edge("b", "c")], params={"x": "default"})
    created = await create_wf(client, body)
    other = await create_wf(client, dag("other", [task("z")]))
    detail = await run_to_end(client, svc, created["workflowId"], {"x": 42})
    assert detail["state"] == "Succeeded", detail
    assert (detail["workflowId"], detail["workflowName"], detail["version"]) == (
        created["workflowId"], "chain", 1)
    assert detail["params"] == {"x": 42}
    assert detail["trigger"] == "manual"
    assert detail["startedAt"] is not None and detail["finishedAt"] is not None
    nodes = nodes_of(detail)
    assert list(nodes) == ["a", "b", "c"]
    assert nodes["a"]["input"] == {"x": 42, "fixed": [1, 2]}
    assert nodes["b"]["input"] == {"fromA": 42, "text": "x is 42", "list": [1, 2]}
    assert nodes["c"]["result"] == {"echo": {"both": [42, "x is 42"]}}
    assert detail["result"] == {"c": nodes["c"]["result"]}
    for key, node in nodes.items():
        assert node["state"] == "Succeeded", key
        assert node["type"] == "task"
        assert node["attempt"] == 1
        assert node["input"] is not None and node["result"] == {"echo": node["input"]}
        assert node["startedAt"] <= node["finishedAt"]
        assert len(node["taskId"]) == 32
    tasks = await get_json(client, "/v1/tasks", workflowRunId=detail["runId"])
    assert {t["taskId"] for t in tasks} == {n["taskId"] for n in nodes.values()}

    defaults = await run_to_end(client, svc, created["workflowId"])
    assert nodes_of(defaults)["a"]["input"]["x"] == "default"
    await run_to_end(client, svc, other["workflowId"])
    mine = await get_json(client, "/v1/workflow-runs", workflowId=created["workflowId"])
    assert [r["runId"] for r in mine] == [defaults["runId"], detail["runId"]]
    response = await client.get("/v1/workflow-runs")
    assert response.headers["X-Total-Count"] == "3"
    assert len(await response.json()) == 3
    await get_json(client, f"/v1/workflow-runs/{'0' * 32}", status=404)


async def test_detail_of_a_running_run_shows_pending_nodes(plum):
    client, svc = plum
    created = await create_wf(client, dag("pending", [
        task("wait", DELAY, payload={"seconds": 100}), task("after")], [edge("wait", "after")]))
    running = node_reaches(svc.bus, "wait", "Running")
    run = await start(client, created["workflowId"])
    await settle(running)
    detail = await get_run(client, run["runId"])
    assert detail["state"] == "Running"
    nodes = nodes_of(detail)
    assert nodes["wait"]["state"] == "Running"
    assert nodes["wait"]["input"] == {"seconds": 100}
    assert nodes["wait"]["startedAt"] is not None
    assert nodes["after"]["state"] == "Pending"
    assert nodes["after"]["attempt"] == 0
    status = await get_json(client, f"/v1/dag/runs/{run['runId']}/status")
    assert status["nodes"] == {"wait": "Running", "after": "Pending"}


async def test_cancel_stops_the_running_node_and_its_task(plum):
    client, svc = plum
    created = await create_wf(client, dag("cancel", [
        task("a"), task("wait", DELAY, payload={"seconds": 100}), task("after")],
        [edge("a", "wait"), edge("wait", "after")]))
    task_running = task_reaches(svc.bus, "Running", dag_node_id="wait")
    run = await start(client, created["workflowId"])
    delay_task = (await settle(task_running)).task
    assert delay_task.workflow_run_id == run["runId"]

    response = await client.post(f"/v1/workflow-runs/{run['runId']}?action=cancel")
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "Canceled"
    detail = await get_run(client, run["runId"])
    assert detail["state"] == "Canceled"
    assert detail["finishedAt"] is not None
    states = {k: n["state"] for k, n in nodes_of(detail).items()}
    assert states == {"a": "Succeeded", "wait": "Canceled", "after": "Canceled"}
    assert (await get_json(client, f"/v1/tasks/{delay_task.task_id}"))["state"] == "Canceled"

    again = await client.post(f"/v1/workflow-runs/{run['runId']}?action=cancel")
    assert again.status == 409
    assert_error(await again.json(), "invalid_state")
    bad = await client.post(f"/v1/workflow-runs/{run['runId']}?action=explode")
    assert bad.status == 400
    assert_error(await bad.json(), "invalid", "action")


async def test_retry_reruns_only_the_nodes_that_did_not_succeed(plum):
    client, svc = plum
    child = await create_wf(client, dag("child", [
        task("inner", FAIL, payload={"message": "not yet"})]))
    parent = await create_wf(client, dag("parent", [
        task("a", payload={"n": 1}),
        {"id": "sub", "type": "subworkflow", "workflowId": child["workflowId"]},
        task("b", payload={"from": "${nodes.sub.result.inner.echo}"}),
        task("side"),
    ], [edge("a", "sub"), edge("sub", "b")]))
    parent_id = parent["workflowId"]
    first = await run_to_end(client, svc, parent_id)
    assert first["state"] == "Failed"
    assert first["error"] == "b UpstreamFailed"
    nodes = nodes_of(first)
    assert {k: n["state"] for k, n in nodes.items()} == {
        "a": "Succeeded", "sub": "Failed", "b": "UpstreamFailed", "side": "Succeeded"}
    assert "not yet" in nodes["sub"]["error"]

    # still failing: the succeeded nodes keep their task, the failed one runs again
    ended = run_ends(svc.bus, parent_id)
    response = await client.post(f"/v1/workflow-runs/{first['runId']}?action=retry")
    assert response.status == 200, await response.text()
    assert (await settle(ended)).run.state == "Failed"
    second = nodes_of(await get_run(client, first["runId"]))
    assert second["a"]["taskId"] == nodes["a"]["taskId"]
    assert second["side"]["taskId"] == nodes["side"]["taskId"]
    assert second["sub"]["childRunId"] != nodes["sub"]["childRunId"]

    # fixed by a new version of the child: the retry now succeeds
    response = await client.put(f"/v1/workflows/{child['workflowId']}", json=dag("child", [
        task("inner", payload={"fixed": True})]))
    assert response.status == 200, await response.text()
    ended = run_ends(svc.bus, parent_id)
    response = await client.post(f"/v1/workflow-runs/{first['runId']}?action=retry")
    assert response.status == 200, await response.text()
    assert (await settle(ended)).run.state == "Succeeded"
    final = await get_run(client, first["runId"])
    third = nodes_of(final)
    assert {k: n["state"] for k, n in third.items()} == {
        "a": "Succeeded", "sub": "Succeeded", "b": "Succeeded", "side": "Succeeded"}
    assert third["a"]["taskId"] == nodes["a"]["taskId"]
    assert third["b"]["result"] == {"echo": {"from": {"fixed": True}}}
    tasks = await get_json(client, "/v1/tasks", workflowRunId=first["runId"])
    assert Counter(t["dagNodeId"] for t in tasks) == {"a": 1, "side": 1, "b": 1}
    children = await get_json(client, "/v1/workflow-runs", workflowId=child["workflowId"])
    assert [(r["state"], r["version"]) for r in children] == [
        ("Succeeded", 2), ("Failed", 1), ("Failed", 1)]

    response = await client.post(f"/v1/workflow-runs/{first['runId']}?action=retry")
    assert response.status == 409
    assert_error(await response.json(), "invalid_state")


async def test_retry_a_canceled_run(plum, clock):
    client, svc = plum
    created = await create_wf(client, dag("resume", [
        task("a"), task("wait", DELAY, payload={"seconds": 3})], [edge("a", "wait")]))
    running = node_reaches(svc.bus, "wait", "Running")
    run = await start(client, created["workflowId"])
    await settle(running)
    response = await client.post(f"/v1/workflow-runs/{run['runId']}?action=cancel")
    assert (await response.json())["state"] == "Canceled"
    a_task = nodes_of(await get_run(client, run["runId"]))["a"]["taskId"]

    running = task_reaches(svc.bus, "Running", dag_node_id="wait", workflow_run_id=run["runId"])
    response = await client.post(f"/v1/workflow-runs/{run['runId']}?action=retry")
    assert response.status == 200, await response.text()
    await settle(running)
    ended = run_ends(svc.bus, run_id=run["runId"])
    clock.advance(3)
    assert (await settle(ended)).run.state == "Succeeded"
    nodes = nodes_of(await get_run(client, run["runId"]))
    assert nodes["a"]["taskId"] == a_task
    assert nodes["wait"]["result"] == {"seconds": 3}


async def test_delete_run(plum):
    client, svc = plum
    created = await create_wf(client, dag("del", [task("a")]))
    done = await run_to_end(client, svc, created["workflowId"])
    assert (await client.delete(f"/v1/workflow-runs/{done['runId']}")).status == 204
    await get_json(client, f"/v1/workflow-runs/{done['runId']}", status=404)

    busy = await create_wf(client, dag("busy", [task("wait", DELAY, payload={"seconds": 100})]))
    task_running = task_reaches(svc.bus, "Running", dag_node_id="wait")
    run = await start(client, busy["workflowId"])
    delay_task = (await settle(task_running)).task
    assert (await client.delete(f"/v1/workflow-runs/{run['runId']}")).status == 204
    await get_json(client, f"/v1/workflow-runs/{run['runId']}", status=404)
    assert (await get_json(client, f"/v1/tasks/{delay_task.task_id}"))["state"] == "Canceled"
    response = await client.get("/v1/workflow-runs")
    assert response.headers["X-Total-Count"] == "0"
    assert (await client.delete(f"/v1/workflow-runs/{run['runId']}")).status == 404


async def test_stream_has_one_runs_event_per_transition(plum):
    client, _ = plum
    created = await create_wf(client, dag("streamed", [
        task("a", payload={"score": 5}),
        {"id": "if", "type": "branch",
         "condition": {"field": "result.echo.score", "operator": ">", "value": 3}},
        task("yes"), task("no"),
    ], [edge("a", "if"), edge("if", "yes", "true"), edge("if", "no", "false")]))
    async with client.get("/v1/stream?topics=runs") as response:
        events = EventStream(response)
        run = await start(client, created["workflowId"])
        node_events: list[tuple[str, str]] = []
        run_states: list[str] = []
        while not run_states or run_states[-1] not in RUN_TERMINAL:
            event = await events.next(SAFETY)
            assert event.event == "runs"
            data = event.json()
            assert data["runId"] == run["runId"]
            if "node" in data:
                assert data["workflowId"] == created["workflowId"]
                node_events.append((data["node"]["nodeKey"], data["node"]["state"]))
            else:
                run_states.append(data["state"])
    assert run_states == ["Pending", "Running", "Succeeded"]
    assert max(Counter(node_events).values()) == 1, node_events
    by_node: dict[str, list[str]] = {}
    for key, state in node_events:
        by_node.setdefault(key, []).append(state)
    assert by_node == {"a": ["Running", "Succeeded"], "if": ["Running", "Succeeded"],
                       "yes": ["Running", "Succeeded"], "no": ["Skipped"]}


# --- subworkflows ----------------------------------------------------------------------------


async def test_subworkflow_result_is_the_child_runs_result(plum):
    client, svc = plum
    child = await create_wf(client, dag("child", [task("x", payload={"v": "${params.v}"})],
                                        params={"v": "default"}))
    parent = await create_wf(client, dag("parent", [
        task("pre", payload={"v": 7}),
        {"id": "sub", "type": "subworkflow", "workflowId": child["workflowId"],
         "params": {"v": "${nodes.pre.result.echo.v}"}},
    ], [edge("pre", "sub")]))
    detail = await run_to_end(client, svc, parent["workflowId"])
    assert detail["state"] == "Succeeded", detail
    sub = nodes_of(detail)["sub"]
    assert sub["input"] == {"v": 7}
    assert sub["result"] == {"x": {"echo": {"v": 7}}}
    child_run = await get_run(client, sub["childRunId"])
    assert (child_run["parentRunId"], child_run["parentNodeKey"]) == (detail["runId"], "sub")
    assert (child_run["state"], child_run["trigger"]) == ("Succeeded", "subworkflow")
    assert child_run["params"] == {"v": 7}
    assert child_run["result"] == sub["result"]
    runs = await get_json(client, "/v1/workflow-runs", workflowId=child["workflowId"])
    assert [r["runId"] for r in runs] == [child_run["runId"]]


async def test_canceling_the_parent_cancels_the_child(plum):
    client, svc = plum
    child = await create_wf(client, dag("child", [task("hold", DELAY,
                                                        payload={"seconds": 100})]))
    parent = await create_wf(client, dag("parent", [
        {"id": "sub", "type": "subworkflow", "workflowId": child["workflowId"]}]))
    task_running = task_reaches(svc.bus, "Running", dag_node_id="hold")
    run = await start(client, parent["workflowId"])
    hold = (await settle(task_running)).task
    child_run_id = hold.workflow_run_id
    assert child_run_id != run["runId"]
    assert nodes_of(await get_run(client, run["runId"]))["sub"]["childRunId"] == child_run_id

    response = await client.post(f"/v1/workflow-runs/{run['runId']}?action=cancel")
    assert (await response.json())["state"] == "Canceled"
    parent_run = await get_run(client, run["runId"])
    assert nodes_of(parent_run)["sub"]["state"] == "Canceled"
    child_run = await get_run(client, child_run_id)
    assert child_run["state"] == "Canceled"
    assert child_run["parentRunId"] == run["runId"]
    assert nodes_of(child_run)["hold"]["state"] == "Canceled"
    assert (await get_json(client, f"/v1/tasks/{hold.task_id}"))["state"] == "Canceled"
