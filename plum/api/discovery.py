"""Service registration and discovery routes."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from aiohttp import web

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
    query_flag,
)
from plum.discovery.balancer import Strategy
from plum.discovery.model import (
    Endpoint,
    InstanceRef,
    Registration,
    ServiceProtocol,
    ServiceSummary,
)
from plum.discovery.registry import DiscoveryQuery
from plum.errors import BadRequest
from plum.store.base import Page

routes = RouteTable("discovery")

E = TypeVar("E", bound=StrEnum)

_QUERY = (
    QueryParam("service", "service name", required=True),
    QueryParam("version", "only this version"),
    QueryParam("protocol", "only this protocol: http, https or grpc"),
)
_ALL = QueryParam("all", "true: also unhealthy and stale endpoints", "boolean")
_STRATEGY = QueryParam("strategy", "round_robin (default), random or least_inflight")


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise BadRequest(f"{name}: required query parameter", field=name)
    return value


def _enum(request: web.Request, name: str, enum: type[E]) -> E | None:
    raw = request.query.get(name) or None
    if raw is None:
        return None
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise BadRequest(f"{name}: expected one of {allowed}, got {raw!r}", field=name) from None



def _query(request: web.Request) -> DiscoveryQuery:
    return DiscoveryQuery(
        service=_required(request, "service"),
        version=request.query.get("version") or None,
        protocol=_enum(request, "protocol", ServiceProtocol),
        include_all=query_flag(request, "all"),
    )


def _page(items: list, request: web.Request) -> web.Response:
    limit, offset = paging(request)
    return list_response(Page(items[offset : offset + limit], len(items)))


@routes.route(
    "POST",
    "/v1/services/register",
    summary="Register an instance's endpoints (replacing what it registered before)",
    body=Registration,
    response=list[Endpoint],
)
async def register(request: web.Request) -> web.Response:
    registration = await parse_body(request, Registration)
    return json_response(await services(request).discovery.register(registration))


@routes.route(
    "POST",
    "/v1/services/heartbeat",
    summary="Refresh an instance's endpoints",
    body=InstanceRef,
    response=list[Endpoint],
)
async def heartbeat(request: web.Request) -> web.Response:
    ref = await parse_body(request, InstanceRef)
    return json_response(await services(request).discovery.heartbeat(ref.instance_id))


@routes.route(
    "DELETE",
    "/v1/services",
    summary="Deregister an instance's endpoints",
    status=204,
    query=(QueryParam("instanceId", "the instance", required=True),),
)
async def deregister(request: web.Request) -> web.Response:
    await services(request).discovery.deregister(_required(request, "instanceId"))
    return no_content()


@routes.route(
    "GET",
    "/v1/services",
    summary="List endpoints, newest first",
    response=list[Endpoint],
    query=(QueryParam("service", "only this service"), *PAGING),
)
async def list_endpoints(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    page = await services(request).discovery.list_endpoints(
        service=request.query.get("service") or None, limit=limit, offset=offset
    )
    return list_response(page)


@routes.route(
    "GET",
    "/v1/services/list",
    summary="Services with endpoint counts, versions and protocols",
    response=list[ServiceSummary],
    query=PAGING,
)
async def list_services(request: web.Request) -> web.Response:
    return _page(services(request).discovery.summaries(), request)


@routes.route(
    "GET",
    "/v1/discovery",
    summary="A service's healthy, fresh endpoints (all of them with all=true)",
    response=list[Endpoint],
    query=(*_QUERY, _ALL, *PAGING),
)
async def discover(request: web.Request) -> web.Response:
    return _page(services(request).discovery.discover(_query(request)), request)


@routes.route(
    "GET",
    "/v1/discovery/one",
    summary="One endpoint of a service, picked by a load-balancing strategy",
    response=Endpoint,
    query=(*_QUERY, _STRATEGY),
)
async def discover_one(request: web.Request) -> web.Response:
    query = _query(request)
    strategy = _enum(request, "strategy", Strategy) or Strategy.ROUND_ROBIN
    return json_response(services(request).discovery.pick(query, strategy))
