"""Cron schedules that start workflow runs."""

from __future__ import annotations

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
)
from plum.engine.schedules import Schedule
from plum.scheduling import NewSchedule, SchedulePatch

routes = RouteTable("schedules")


@routes.route("GET", "/v1/schedules", summary="List schedules, newest first",
              response=list[Schedule],
              query=(*PAGING, QueryParam("workflowId", "only this workflow's schedules")))
async def list_schedules(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    page = await services(request).schedules.list(
        workflow_id=request.query.get("workflowId") or None, limit=limit, offset=offset)
    return list_response(page)


@routes.route("POST", "/v1/schedules", summary="Create a cron schedule for a workflow",
              body=NewSchedule, response=Schedule, status=201)
async def create_schedule(request: web.Request) -> web.Response:
    body = await parse_body(request, NewSchedule)
    return json_response(await services(request).schedules.create(body), status=201)


@routes.route("GET", "/v1/schedules/{scheduleId}", summary="One schedule", response=Schedule)
async def get_schedule(request: web.Request) -> web.Response:
    return json_response(await services(request).schedules.get(request.match_info["scheduleId"]))


@routes.route("PATCH", "/v1/schedules/{scheduleId}",
              summary="Change a schedule (nextRunAt is recomputed)", body=SchedulePatch,
              response=Schedule)
async def patch_schedule(request: web.Request) -> web.Response:
    body = await parse_body(request, SchedulePatch)
    schedule_id = request.match_info["scheduleId"]
    return json_response(await services(request).schedules.patch(schedule_id, body))


@routes.route("DELETE", "/v1/schedules/{scheduleId}", summary="Delete a schedule", status=204)
async def delete_schedule(request: web.Request) -> web.Response:
    await services(request).schedules.delete(request.match_info["scheduleId"])
    return no_content()
