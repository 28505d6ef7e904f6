"""Apps (uploaded zips and container images) and the artifact files agents download."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web

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
from plum.apps import NewImageApp
from plum.engine.deployments import App
from plum.errors import BadRequest

routes = RouteTable("apps")

FILE_FIELD = "file"
_CHUNK = 256 * 1024


@routes.route("GET", "/v1/apps", summary="List apps, newest first", response=list[App],
              query=PAGING)
async def list_apps(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    return list_response(await services(request).apps.list(limit=limit, offset=offset))


@routes.route("POST", "/v1/apps/upload", status=201, response=App,
              summary="Upload an app zip (multipart/form-data, field `file`) with start.sh "
                      "and meta.ini at its root")
async def upload(request: web.Request) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("expected a multipart/form-data body with the zip in field 'file'",
                         field=FILE_FIELD)
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == FILE_FIELD:
                app = await services(request).apps.upload(_chunks(part))
                return json_response(app, status=201)
            await part.release()
    except ValueError as exc:  # aiohttp's word for a malformed multipart body
        raise BadRequest(f"malformed multipart body: {exc}", field=FILE_FIELD) from None
    raise BadRequest("no multipart field 'file' in the body", field=FILE_FIELD)


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


@routes.route("POST", "/v1/apps/create-image", summary="Record an app that runs a container "
              "image", body=NewImageApp, response=App, status=201)
async def create_image(request: web.Request) -> web.Response:
    body = await parse_body(request, NewImageApp)
    return json_response(await services(request).apps.create_image(body), status=201)


@routes.route("GET", "/v1/apps/{artifactId}", summary="One app", response=App)
async def get_app(request: web.Request) -> web.Response:
    return json_response(await services(request).apps.get(request.match_info["artifactId"]))


@routes.route("DELETE", "/v1/apps/{artifactId}", status=204,
              summary="Delete an app (409 while a deployment uses it)")
async def delete_app(request: web.Request) -> web.Response:
    await services(request).apps.delete(request.match_info["artifactId"])
    return no_content()


@routes.route("GET", "/artifacts/{file}", summary="Download an app zip (`<sha256>.zip`)",
              content_type="application/zip")
async def artifact(request: web.Request) -> web.StreamResponse:
    path = services(request).apps.artifact_path(request.match_info["file"])
    return web.FileResponse(path, headers={"Content-Type": "application/zip"})
