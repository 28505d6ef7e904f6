"""Deployments, and the original Plum's HTTP agent routes (assignments, instance status).

The SSE form for HTTP agents, `GET /v1/stream?nodeId=`, lives with the other streams in
`plum.api.stream`.
"""

from __future__ import annotations

from aiohttp import web

from plum.agent.protocol import Assignment, InstanceStatus
from plum.api.context import services
from plum.api.http import (
    PAGING,
    QueryParam,
    RouteTable,
    json_response,
    list_response,
    no_content,
    paging,
    parse_body,
    query_int,
)
from plum.deployments import (
    DeploymentDetail,
    DeploymentPatch,
    DesiredBody,
    InstanceLogView,
    NewDeployment,
    ScaleBody,
)
from plum.engine.deployments import Deployment, Instance
from plum.errors import BadRequest
from plum.store.base import Page

routes = RouteTable("deployments")

ACTION = (QueryParam("action", "start | stop | scale", required=True),)


@routes.route("GET", "/v1/deployments", summary="List deployments, newest first",
              response=list[Deployment], query=PAGING)
async def list_deployments(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    page = await services(request).deployments.list(limit=limit, offset=offset)
    return list_response(page)


@routes.route("POST", "/v1/deployments", summary="Create a deployment (Stopped)",
              body=NewDeployment, response=DeploymentDetail, status=201)
async def create_deployment(request: web.Request) -> web.Response:
    body = await parse_body(request, NewDeployment)
    return json_response(await services(request).deployments.create(body), status=201)


@routes.route("GET", "/v1/deployments/{deploymentId}", summary="One deployment with its "
              "instances", response=DeploymentDetail)
async def get_deployment(request: web.Request) -> web.Response:
    deployment_id = request.match_info["deploymentId"]
    return json_response(await services(request).deployments.get(deployment_id))


@routes.route("PATCH", "/v1/deployments/{deploymentId}", summary="Rename, relabel, or change "
              "the node selector", body=DeploymentPatch, response=DeploymentDetail)
async def patch_deployment(request: web.Request) -> web.Response:
    body = await parse_body(request, DeploymentPatch)
    deployment_id = request.match_info["deploymentId"]
    return json_response(await services(request).deployments.patch(deployment_id, body))


@routes.route("DELETE", "/v1/deployments/{deploymentId}", status=204,
              summary="Delete a deployment; its instances are removed from their nodes")
async def delete_deployment(request: web.Request) -> web.Response:
    await services(request).deployments.delete(request.match_info["deploymentId"])
    return no_content()


@routes.route("POST", "/v1/deployments/{deploymentId}", summary="?action=start|stop|scale "
              "(scale body: {replicas: {nodeId: count}, entry?})", body=ScaleBody,
              response=DeploymentDetail, query=ACTION)
async def deployment_action(request: web.Request) -> web.Response:
    deployments = services(request).deployments
    deployment_id = request.match_info["deploymentId"]
    match request.query.get("action"):
        case "start":
            return json_response(await deployments.start(deployment_id))
        case "stop":
            return json_response(await deployments.stop(deployment_id))
        case "scale":
            body = await parse_body(request, ScaleBody)
            return json_response(await deployments.scale(deployment_id, body))
    raise BadRequest("action: expected start, stop or scale", field="action")


# -- the original HTTP agent protocol
@routes.route("GET", "/v1/assignments", summary="A node's assignments (HTTP agents)",
              response=list[Assignment],
              query=(QueryParam("nodeId", "the node", required=True),))
async def list_assignments(request: web.Request) -> web.Response:
    node_id = request.query.get("nodeId", "")
    if not node_id:
        raise BadRequest("nodeId: required query parameter", field="nodeId")
    items = await services(request).deployments.assignments_for(node_id)
    return list_response(Page(items, len(items)))


@routes.route("PATCH", "/v1/assignments/{instanceId}", summary="Set one instance's desired "
              "state", body=DesiredBody, response=Instance)
async def patch_assignment(request: web.Request) -> web.Response:
    body = await parse_body(request, DesiredBody)
    instance = await services(request).deployments.set_desired(
        request.match_info["instanceId"], body.desired
    )
    return json_response(instance)


@routes.route("DELETE", "/v1/assignments/{instanceId}", status=204,
              summary="Remove one instance (its deployment keeps one replica less)")
async def delete_assignment(request: web.Request) -> web.Response:
    await services(request).deployments.remove_instance(request.match_info["instanceId"])
    return no_content()


@routes.route("GET", "/v1/instances/{instanceId}/logs", summary="The end of an instance's "
              "log, from the agent of its node", response=InstanceLogView,
              query=(QueryParam("tailBytes", "how much of the end, default 65536, at most 1 MiB",
                                "integer"),))
async def instance_logs(request: web.Request) -> web.Response:
    tail = query_int(request, "tailBytes", 64 * 1024, lo=1, hi=1024 * 1024)
    view = await services(request).deployments.instance_log(request.match_info["instanceId"],
                                                            tail_bytes=tail)
    return json_response(view)


@routes.route("POST", "/v1/instances/status", summary="An agent's report on an instance",
              body=InstanceStatus, response=Instance)
async def instance_status(request: web.Request) -> web.Response:
    status = await parse_body(request, InstanceStatus)
    return json_response(await services(request).deployments.report(status))
