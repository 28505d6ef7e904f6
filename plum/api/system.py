"""Health, metrics and the controller's summary."""

from __future__ import annotations

from aiohttp import web

from plum.api.context import services
from plum.api.http import RouteTable, json_response
from plum.config import Role
from plum.engine.model import Model

routes = RouteTable("system")


class SystemInfo(Model, frozen=True):
    version: str
    role: Role
    started_at: float
    now: float
    node_count: int
    healthy_node_count: int


@routes.route(
    "GET", "/healthz", summary="Liveness: answers `ok`", response=str, content_type="text/plain"
)
async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@routes.route(
    "GET",
    "/v1/system/info",
    summary="Controller version, role, start time, node counts",
    response=SystemInfo,
)
async def system_info(request: web.Request) -> web.Response:
    svc = services(request)
    counts = svc.nodes.counts()
    return json_response(
        SystemInfo(
            version=svc.version,
            role=svc.config.server.role,
            started_at=round(svc.started_at, 3),
            now=round(svc.clock.now(), 3),
            node_count=counts.total,
            healthy_node_count=counts.healthy,
        )
    )


@routes.route(
    "GET", "/metrics", summary="Prometheus metrics", response=str, content_type="text/plain"
)
async def metrics(request: web.Request) -> web.Response:
    svc = services(request)
    counts = svc.nodes.counts()
    store_stats = getattr(svc.store, "stats", {})
    lines = [
        "# HELP plum_up 1 while the controller serves.",
        "# TYPE plum_up gauge",
        "plum_up 1",
        "# HELP plum_uptime_seconds Seconds since the controller started.",
        "# TYPE plum_uptime_seconds gauge",
        f"plum_uptime_seconds {svc.clock.now() - svc.started_at:.3f}",
        "# HELP plum_nodes Nodes known to the controller, by health.",
        "# TYPE plum_nodes gauge",
        f'plum_nodes{{health="Healthy"}} {counts.healthy}',
        f'plum_nodes{{health="Unhealthy"}} {counts.total - counts.healthy}',
        "# HELP plum_bus_events_total Events published on the bus.",
        "# TYPE plum_bus_events_total counter",
        f"plum_bus_events_total {svc.bus.published}",
        "# HELP plum_bus_resyncs_total Subscribers that fell behind and were told to resync.",
        "# TYPE plum_bus_resyncs_total counter",
        f"plum_bus_resyncs_total {svc.bus.resyncs}",
    ]
    for key, value in store_stats.items():
        lines += [f"# TYPE plum_store_{key}_total counter", f"plum_store_{key}_total {value}"]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
