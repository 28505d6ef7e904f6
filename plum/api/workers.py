"""Worker routes: gRPC stream workers under `/v1/embedded-workers` (they also register on
the stream itself) and HTTP workers under `/v1/workers`. Both are views of one registry."""

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
from plum.workers.model import (
    HttpWorkerRegistration,
    Transport,
    Worker,
    WorkerRef,
    WorkerRegistration,
)

routes = RouteTable("workers")

_PREFIX = {Transport.GRPC: "/v1/embedded-workers", Transport.HTTP: "/v1/workers"}
_WHAT = {Transport.GRPC: "gRPC stream worker", Transport.HTTP: "HTTP worker"}


@routes.route(
    "POST", "/v1/embedded-workers/register",
    summary="Register a gRPC stream worker (it receives tasks once its TaskStream is open)",
    body=WorkerRegistration, response=Worker,
)
async def register_embedded(request: web.Request) -> web.Response:
    registration = await parse_body(request, WorkerRegistration)
    return json_response(await services(request).workers.register(registration))


@routes.route(
    "POST", "/v1/workers/register",
    summary="Register an HTTP worker: the controller POSTs {taskId, name, payload} to its url",
    body=HttpWorkerRegistration, response=Worker,
)
async def register_http(request: web.Request) -> web.Response:
    registration = await parse_body(request, HttpWorkerRegistration)
    return json_response(await services(request).workers.register_http(registration))


def _add_shared_routes(transport: Transport) -> None:
    prefix, what = _PREFIX[transport], _WHAT[transport]

    @routes.route("POST", f"{prefix}/heartbeat", summary=f"Refresh a {what}",
                  body=WorkerRef, response=Worker)
    async def heartbeat(request: web.Request) -> web.Response:
        ref = await parse_body(request, WorkerRef)
        return json_response(await services(request).workers.heartbeat(ref.worker_id, transport))

    @routes.route("GET", prefix, summary=f"List {what}s, newest registration first",
                  response=list[Worker], query=PAGING)
    async def list_workers(request: web.Request) -> web.Response:
        limit, offset = paging(request)
        page = services(request).workers.list(transport=transport, limit=limit, offset=offset)
        return list_response(page)

    @routes.route("GET", f"{prefix}/{{workerId}}", summary=f"One {what}", response=Worker)
    async def get_worker(request: web.Request) -> web.Response:
        worker_id = request.match_info["workerId"]
        return json_response(services(request).workers.get(worker_id, transport))

    @routes.route("DELETE", f"{prefix}/{{workerId}}", status=204,
                  summary=f"Remove a {what}; its unanswered tasks fail")
    async def delete_worker(request: web.Request) -> web.Response:
        await services(request).workers.remove(request.match_info["workerId"], transport)
        return no_content()


for _transport in Transport:
    _add_shared_routes(_transport)
