"""Workflows, their runs, and the original Plum's `/v1/dag/...` aliases."""

from __future__ import annotations

import msgspec
from aiohttp import web

from plum.api.context import services
from plum.api.http import (
    PAGING,
    QueryParam,
    RouteTable,
    decode_body,
    json_response,
    list_response,
    no_content,
    paging,
    parse_body,
    query_flag,
)
from plum.engine.machine import WorkflowRun
from plum.errors import BadRequest
from plum.store.base import Page
from plum.workflows import (
    DagRunBody,
    DagRunStatus,
    RunBody,
    RunDetail,
    WorkflowInput,
    WorkflowView,
)

routes = RouteTable("workflows")


async def _raw_body(request: web.Request):
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"null")
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None


def _views(page: Page) -> web.Response:
    return list_response(Page([WorkflowView.of(w) for w in page.items], page.total))



@routes.route("GET", "/v1/workflows", summary="List workflows", response=list[WorkflowView],
              query=PAGING)
async def list_workflows(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    return _views(await services(request).workflows.list(limit=limit, offset=offset))


@routes.route("POST", "/v1/workflows", summary="Create a workflow (DAG, steps, or the "
              "original form)", body=WorkflowInput, response=WorkflowView, status=201)
async def create_workflow(request: web.Request) -> web.Response:
    workflow = await services(request).workflows.create(await _raw_body(request))
    return json_response(WorkflowView.of(workflow), status=201)


@routes.route("GET", "/v1/workflows/{workflowId}", summary="One workflow (current version)",
              response=WorkflowView)
async def get_workflow(request: web.Request) -> web.Response:
    workflow = await services(request).workflows.get(request.match_info["workflowId"])
    return json_response(WorkflowView.of(workflow))


@routes.route("PUT", "/v1/workflows/{workflowId}", summary="Store a new version",
              body=WorkflowInput, response=WorkflowView)
async def update_workflow(request: web.Request) -> web.Response:
    workflow = await services(request).workflows.update(request.match_info["workflowId"],
                                                        await _raw_body(request))
    return json_response(WorkflowView.of(workflow))


@routes.route("DELETE", "/v1/workflows/{workflowId}", summary="Delete a workflow", status=204,
              query=(QueryParam("force", "delete even while runs are active"),))
async def delete_workflow(request: web.Request) -> web.Response:
    await services(request).workflows.delete(request.match_info["workflowId"],
                                             force=query_flag(request, "force"))
    return no_content()


@routes.route("POST", "/v1/workflows/{workflowId}", summary="?action=run: start a run",
              body=RunBody, response=WorkflowRun, status=201,
              query=(QueryParam("action", "run", required=True),))
async def run_workflow(request: web.Request) -> web.Response:
    if request.query.get("action") != "run":
        raise BadRequest("action: expected action=run", field="action")
    body = await parse_body(request, RunBody)
    run = await services(request).workflows.run(request.match_info["workflowId"], body.params)
    return json_response(run, status=201)


@routes.route("GET", "/v1/workflow-runs", summary="List workflow runs, newest first",
              response=list[WorkflowRun], query=(*PAGING, QueryParam("workflowId", "filter")))
async def list_runs(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    page = await services(request).workflows.list_runs(
        workflow_id=request.query.get("workflowId") or None, limit=limit, offset=offset)
    return list_response(page)


@routes.route("GET", "/v1/workflow-runs/{runId}", summary="A run with every node's state",
              response=RunDetail)
async def get_run(request: web.Request) -> web.Response:
    return json_response(await services(request).workflows.get_run(request.match_info["runId"]))


@routes.route("POST", "/v1/workflow-runs/{runId}", summary="?action=cancel|retry",
              response=WorkflowRun, query=(QueryParam("action", "cancel | retry", required=True),))
async def run_action(request: web.Request) -> web.Response:
    workflows = services(request).workflows
    run_id = request.match_info["runId"]
    match request.query.get("action"):
        case "cancel":
            return json_response(await workflows.cancel_run(run_id))
        case "retry":
            return json_response(await workflows.retry_run(run_id))
    raise BadRequest("action: expected cancel or retry", field="action")


@routes.route("DELETE", "/v1/workflow-runs/{runId}", summary="Delete a run (canceled first)",
              status=204)
async def delete_run(request: web.Request) -> web.Response:
    await services(request).workflows.delete_run(request.match_info["runId"])
    return no_content()


# -- the original Plum's routes
@routes.route("GET", "/v1/dag/workflows", summary="List workflows (original route)",
              response=list[WorkflowView], query=PAGING)
async def dag_list(request: web.Request) -> web.Response:
    return await list_workflows(request)


@routes.route("POST", "/v1/dag/workflows", summary="Create a workflow (original route)",
              body=WorkflowInput, response=WorkflowView, status=201)
async def dag_create(request: web.Request) -> web.Response:
    return await create_workflow(request)


@routes.route("GET", "/v1/dag/workflows/{workflowId}", summary="One workflow (original route)",
              response=WorkflowView)
async def dag_get(request: web.Request) -> web.Response:
    return await get_workflow(request)


@routes.route("DELETE", "/v1/dag/workflows/{workflowId}", summary="Delete (original route)",
              status=204)
async def dag_delete(request: web.Request) -> web.Response:
    return await delete_workflow(request)


@routes.route("POST", "/v1/dag/workflows/{workflowId}/run", summary="Run (original route; "
              "taskPayload becomes the run's params)", body=DagRunBody, response=WorkflowRun,
              status=201)
async def dag_run(request: web.Request) -> web.Response:
    body = decode_body(await request.read(), DagRunBody)
    run = await services(request).workflows.run(request.match_info["workflowId"],
                                                body.task_payload)
    return json_response(run, status=201)


@routes.route("GET", "/v1/dag/runs/{runId}/status", summary="Run state and node states "
              "(original route)", response=DagRunStatus)
async def dag_status(request: web.Request) -> web.Response:
    status = await services(request).workflows.dag_status(request.match_info["runId"])
    return json_response(status)
