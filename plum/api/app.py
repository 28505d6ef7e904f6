"""The aiohttp application: middlewares, every route table, OpenAPI, the dashboard."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from plum.api import (
    agents,
    apps,
    deployments,
    discovery,
    nodes,
    schedules,
    stream,
    system,
    tasks,
    workers,
    workflows,
)
from plum.api.auth import auth_middleware
from plum.api.context import SERVICES, Services
from plum.api.errors import MAX_BODY_BYTES, error_middleware
from plum.api.http import RouteTable, json_response
from plum.api.openapi import build_openapi
from plum.api.web import DIST, dashboard_handler

TABLES: tuple[RouteTable, ...] = (
    system.routes, nodes.routes, stream.routes, tasks.routes, workflows.routes,
    discovery.routes, schedules.routes, agents.routes, workers.routes, apps.routes,
    deployments.routes,
)


def build_app(svc: Services, *, dist: Path = DIST) -> web.Application:
    middlewares = [error_middleware]
    if svc.config.server.auth_tokens:
        middlewares.append(auth_middleware(svc.config.server.auth_tokens))
    app = web.Application(middlewares=middlewares, client_max_size=svc.config.max_body_bytes)
    app[SERVICES] = svc
    app[MAX_BODY_BYTES] = svc.config.max_body_bytes
    app[stream.STREAMS] = stream.OpenStreams()
    app.on_shutdown.append(stream.end_streams)
    app.on_shutdown.append(agents.stop_hub)
    app.on_shutdown.append(tasks.end_log_followers)

    specs = [spec for table in TABLES for spec in table.specs]
    document = build_openapi(specs)

    async def openapi(request: web.Request) -> web.Response:
        return json_response(document)

    for table in TABLES:
        table.add_to(app)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_route("*", "/v1/{tail:.*}", _unknown_api_route)
    app.router.add_get("/{tail:.*}", dashboard_handler(dist))
    return app


async def _unknown_api_route(request: web.Request) -> web.Response:
    raise web.HTTPNotFound()
