"""Node registry routes (the HTTP heartbeat is the original agents' protocol)."""

from __future__ import annotations

from aiohttp import web

from plum.api.context import services
from plum.api.http import (
    PAGING,
    RouteTable,
    json_response,
    list_response,
    no_content,
    paging,
    parse_body,
)
from plum.engine.model import Node
from plum.nodes import NodeHeartbeat

routes = RouteTable("nodes")


@routes.route(
    "GET", "/v1/nodes", summary="List nodes, newest first", response=list[Node], query=PAGING
)
async def list_nodes(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    return list_response(await services(request).nodes.list(limit=limit, offset=offset))


@routes.route(
    "POST",
    "/v1/nodes/heartbeat",
    summary="Register or refresh a node (HTTP agents)",
    body=NodeHeartbeat,
    response=Node,
)
async def heartbeat(request: web.Request) -> web.Response:
    beat = await parse_body(request, NodeHeartbeat)
    return json_response(await services(request).nodes.heartbeat(beat))


@routes.route("GET", "/v1/nodes/{nodeId}", summary="One node", response=Node)
async def get_node(request: web.Request) -> web.Response:
    return json_response(await services(request).nodes.get(request.match_info["nodeId"]))


@routes.route("DELETE", "/v1/nodes/{nodeId}", summary="Forget a node", status=204)
async def delete_node(request: web.Request) -> web.Response:
    await services(request).nodes.remove(request.match_info["nodeId"])
    return no_content()
