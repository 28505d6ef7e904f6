"""The small vocabulary every handler uses: route tables with their models, body parsing
into models (400 for malformed JSON, 422 naming the field), JSON and list responses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from plum.errors import BadRequest, Invalid
from plum.store.base import Page

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class QueryParam:
    name: str
    description: str
    type: str = "string"
    required: bool = False


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: Any = None
    response: Any = None
    status: int = 200
    query: tuple[QueryParam, ...] = ()
    content_type: str = "application/json"


@dataclass
class RouteTable:
    """Routes of one API module, with the models the OpenAPI document is generated from."""

    tag: str
    specs: list[RouteSpec] = field(default_factory=list)

    def route(
        self, method: str, path: str, *, summary: str, **kwargs
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.specs.append(RouteSpec(method, path, handler, summary, self.tag, **kwargs))
            return handler

        return register

    def add_to(self, app: web.Application) -> None:
        for spec in self.specs:
            app.router.add_route(spec.method, spec.path, spec.handler)


_decoders: dict[Any, msgspec.json.Decoder] = {}


def decode_body(raw: bytes, model: type[T]) -> T:
    decoder = _decoders.get(model)
    if decoder is None:
        decoder = _decoders[model] = msgspec.json.Decoder(model)
    if not raw.strip():
        raw = b"{}"
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc)
        raise Invalid(f"{path}: {message}" if path else message, field=path) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None


async def parse_body(request: web.Request, model: type[T]) -> T:
    """The body is read as JSON whatever its Content-Type says (curl's default is a form)."""
    return decode_body(await request.read(), model)


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """msgspec says "Expected `int`, got `str` - at `$.nodes[2].timeoutSec`": return the
    message and the field path `nodes[2].timeoutSec` (a missing field is named itself)."""
    text = str(exc)
    message, sep, where = text.partition(" - at `$")
    path = where.rstrip("`").lstrip(".") if sep else ""
    if message.startswith("Object missing required field `"):
        missing = message.split("`")[1]
        path = f"{path}.{missing}" if path else missing
    return message, path or None


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(data),
        content_type="application/json",
        headers=headers,
    )


def list_response(page: Page) -> web.Response:
    return json_response(page.items, headers={"X-Total-Count": str(page.total)})


def no_content() -> web.Response:
    return web.Response(status=204)


def query_int(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {raw!r}", field=name) from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name}: must be between {lo} and {hi}", field=name)
    return value


def query_flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter: true/1 or false/0 (absent: false); anything else is 400."""
    raw = request.query.get(name, "").lower()
    if raw not in ("", "true", "false", "1", "0"):
        raise BadRequest(f"{name}: expected true or false, got {raw!r}", field=name)
    return raw in ("true", "1")


def paging(request: web.Request) -> tuple[int, int]:
    limit = query_int(request, "limit", DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT)
    offset = query_int(request, "offset", 0, lo=0, hi=2**62)
    return limit, offset


PAGING = (
    QueryParam("limit", f"page size, default {DEFAULT_LIMIT}, at most {MAX_LIMIT}", "integer"),
    QueryParam("offset", "items to skip", "integer"),
)
