"""Errors to HTTP: one table walked by class hierarchy, one JSON shape for every error."""

from __future__ import annotations

import msgspec
from aiohttp import web

from plum.errors import (
    BadRequest,
    Conflict,
    ErrorCode,
    Forbidden,
    Invalid,
    InvalidState,
    NotFound,
    PlumError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from plum.logging import get_logger

log = get_logger(__name__)

MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)

HTTP_STATUS: dict[type[PlumError], int] = {
    BadRequest: 400,
    Invalid: 422,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidState: 409,
    TooLarge: 413,
    Unavailable: 503,
    PlumError: 500,
}

# aiohttp's own HTTP exceptions (routing, size limit) mapped onto our codes.
_AIOHTTP_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID,
    413: ErrorCode.TOO_LARGE,
}


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


def status_for(exc: PlumError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_response(
    status: int, code: str, message: str, field: str | None = None, extra: dict | None = None
) -> web.Response:
    body: dict = {"error": {"code": code, "message": message}}
    if field:
        body["error"]["field"] = field
    if extra:
        body["error"].update(extra)
    return web.Response(
        status=status, body=msgspec.json.encode(body), content_type="application/json"
    )


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PlumError as exc:
        return error_response(status_for(exc), exc.code.value, exc.message, exc.field, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _AIOHTTP_CODES.get(exc.status, ErrorCode.INTERNAL)
        message = _http_message(exc, request)
        response = error_response(exc.status, code.value, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return error_response(500, ErrorCode.INTERNAL.value, "internal error")


def _http_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no route for {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} not allowed on {request.path}"
    if exc.status == 413:
        return f"request body too large (limit {request.app[MAX_BODY_BYTES]} bytes)"
    return exc.reason
