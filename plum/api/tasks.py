"""Task definitions and task runs, with the original Plum's action forms and aliases."""

from __future__ import annotations

import msgspec
from aiohttp import web

from plum.api.context import SERVICES, services
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
from plum.api.stream import open_sse, sse_frame, stream_topics
from plum.engine.tasks import TERMINAL, TaskDef, TaskFilter, TaskRun, TaskState
from plum.errors import BadRequest
from plum.tasklogs import CLOSED
from plum.taskservice import NewTask, NewTaskDef, RunTaskDef, TaskDetail, TaskLogView

routes = RouteTable("tasks")

ACTION = (QueryParam("action", "start | cancel | rerun", required=True),)



# -- task definitions
@routes.route("GET", "/v1/task-defs", summary="List task definitions", response=list[TaskDef],
              query=PAGING)
async def list_defs(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    return list_response(await services(request).tasks.list_defs(limit=limit, offset=offset))


@routes.route("POST", "/v1/task-defs", summary="Create a task definition", body=NewTaskDef,
              response=TaskDef, status=201)
async def create_def(request: web.Request) -> web.Response:
    body = await parse_body(request, NewTaskDef)
    return json_response(await services(request).tasks.create_def(body), status=201)


@routes.route("GET", "/v1/task-defs/{defId}", summary="One task definition", response=TaskDef)
async def get_def(request: web.Request) -> web.Response:
    return json_response(await services(request).tasks.get_def(request.match_info["defId"]))


@routes.route("DELETE", "/v1/task-defs/{defId}", summary="Delete a task definition",
              status=204, query=(QueryParam("force", "delete even while runs reference it"),))
async def delete_def(request: web.Request) -> web.Response:
    await services(request).tasks.delete_def(request.match_info["defId"],
                                             force=query_flag(request, "force"))
    return no_content()


@routes.route("POST", "/v1/task-defs/{defId}", summary="?action=run: run the definition now",
              body=RunTaskDef, response=TaskRun, status=201,
              query=(QueryParam("action", "run", required=True),))
async def run_def(request: web.Request) -> web.Response:
    if request.query.get("action") != "run":
        raise BadRequest("action: expected action=run", field="action")
    body = await parse_body(request, RunTaskDef)
    task = await services(request).tasks.run_def(request.match_info["defId"], body)
    return json_response(task, status=201)


# -- task runs
@routes.route("GET", "/v1/tasks/stream", summary="Task changes as SSE (original clients)",
              content_type="text/event-stream")
async def tasks_stream(request: web.Request) -> web.StreamResponse:
    return await stream_topics(request, frozenset({"tasks"}))


@routes.route("GET", "/v1/tasks", summary="List task runs, newest first", response=list[TaskRun],
              query=(*PAGING, QueryParam("state", "filter by state"),
                     QueryParam("name", "filter by name"), QueryParam("defId", "filter"),
                     QueryParam("workflowRunId", "filter")))
async def list_tasks(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    state = request.query.get("state") or None
    if state is not None and state not in TaskState.__members__.values():
        raise BadRequest(f"state: unknown task state {state!r}", field="state")
    flt = TaskFilter(
        state=TaskState(state) if state else None,
        name=request.query.get("name") or None,
        def_id=request.query.get("defId") or None,
        workflow_run_id=request.query.get("workflowRunId") or None,
    )
    page = await services(request).tasks.list_tasks(flt, limit=limit, offset=offset)
    return list_response(page)


@routes.route("POST", "/v1/tasks", summary="Create a task run (Queued unless autoStart)",
              body=NewTask, response=TaskRun, status=201)
async def create_task(request: web.Request) -> web.Response:
    body = await parse_body(request, NewTask)
    return json_response(await services(request).tasks.create_task(body), status=201)


async def _act(request: web.Request, task_id: str, action: str | None) -> web.Response:
    tasks = services(request).tasks
    match action:
        case "start":
            return json_response(await tasks.start_task(task_id))
        case "cancel":
            return json_response(await tasks.cancel_task(task_id))
        case "rerun":
            return json_response(await tasks.rerun_task(task_id), status=201)
    raise BadRequest("action: expected start, cancel or rerun", field="action")


for _action in ("start", "cancel", "rerun"):
    async def _alias(request: web.Request, action: str = _action) -> web.Response:
        return await _act(request, request.match_info["taskId"], action)

    _alias.__name__ = f"{_action}_task_alias"
    routes.route("POST", f"/v1/tasks/{_action}/{{taskId}}", summary=f"{_action} (original form)",
                 response=TaskRun)(_alias)


@routes.route("GET", "/v1/tasks/{taskId}", summary="One task run with its attempts",
              response=TaskDetail)
async def get_task(request: web.Request) -> web.Response:
    return json_response(await services(request).tasks.get_task(request.match_info["taskId"]))


@routes.route("POST", "/v1/tasks/{taskId}", summary="?action=start|cancel|rerun",
              response=TaskRun, query=ACTION)
async def task_action(request: web.Request) -> web.Response:
    return await _act(request, request.match_info["taskId"], request.query.get("action"))


@routes.route("DELETE", "/v1/tasks/{taskId}", summary="Delete (a running task is canceled first)",
              status=204)
async def delete_task(request: web.Request) -> web.Response:
    await services(request).tasks.delete_task(request.match_info["taskId"])
    return no_content()


@routes.route("GET", "/v1/tasks/{taskId}/logs", summary="Captured output; follow=true streams SSE",
              response=TaskLogView,
              query=(QueryParam("follow", "stream lines as SSE while the task runs"),))
async def task_logs(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["taskId"]
    svc = services(request)
    view = await svc.tasks.task_logs(task_id)
    if not query_flag(request, "follow"):
        return json_response(view)
    return await _follow(request, task_id, view)


async def _follow(request: web.Request, task_id: str, view: TaskLogView) -> web.StreamResponse:
    logs = services(request).engine.logs
    encode = msgspec.json.encode
    if view.state in TERMINAL:
        response = await open_sse(request)
        for line in view.lines:
            await response.write(sse_frame("log", encode(line)))
        await response.write(sse_frame("end", encode({"state": view.state})))
        return response
    lines, queue = logs.follow(task_id)
    try:
        response = await open_sse(request)
        try:
            for line in lines:
                await response.write(sse_frame("log", encode(line)))
            while (item := await queue.get()) is not CLOSED:
                await response.write(sse_frame("log", encode(item)))
            final = await services(request).tasks.get_task(task_id)
            await response.write(sse_frame("end", encode({"state": final.state})))
        except ConnectionResetError:
            pass  # the client left
        return response
    finally:
        logs.unfollow(task_id, queue)


async def end_log_followers(app: web.Application) -> None:
    """On shutdown: followed logs end (with the task's state then), so the server stops
    promptly even while tasks run on (on agents, which outlive a controller restart)."""
    app[SERVICES].engine.logs.end_followers()
