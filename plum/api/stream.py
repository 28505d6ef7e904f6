"""Server-Sent Events bridged onto the bus: `GET /v1/stream?topics=nodes,tasks,kv:ns`.

Each event is `id: <seq>`, `event: <topic family>`, `data: <the changed object as JSON>`.
A client that reconnects with `Last-Event-ID` gets what it missed, or a `resync` event
when that is too old to replay (it should then refetch). A slow client never stalls the
bus: it is resynced instead. A comment line keeps idle connections open.
"""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from plum.api.context import services
from plum.api.http import QueryParam, RouteTable
from plum.bus import END, RESYNC, Event, InstanceChanged, InstanceRemoved, Subscription
from plum.errors import BadRequest

routes = RouteTable("stream")

TOPICS = frozenset(
    {"tasks", "runs", "nodes", "deployments", "instances", "workers", "services", "resources",
     "schedules", "kv"}
)
class OpenStreams:
    """The SSE subscriptions being served. On shutdown each one ends, and so does any that
    opens afterwards (a request that raced the shutdown must not hold the server open)."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._closing = False

    def add(self, sub: Subscription) -> None:
        self._subs.add(sub)
        if self._closing:
            sub.end()

    def discard(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def end_all(self) -> None:
        self._closing = True
        for sub in tuple(self._subs):
            sub.end()


STREAMS = web.AppKey("streams", OpenStreams)


def parse_topics(request: web.Request) -> frozenset[str] | None:
    wanted: set[str] = set()
    raw = request.query.get("topics", "")
    for topic in filter(None, (t.strip() for t in raw.split(","))):
        family, sep, namespace = topic.partition(":")
        if family not in TOPICS or (sep and (family != "kv" or not namespace)):
            raise BadRequest(f"topics: unknown topic {topic!r}", field="topics")
        wanted.add(topic)
    if namespace := request.query.get("namespace"):
        wanted.add(f"kv:{namespace}")
    return frozenset(wanted) if wanted else None


def parse_last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(
            f"Last-Event-ID: expected an event id, got {raw!r}", field="Last-Event-ID"
        ) from None


def sse_frame(event: str, data: bytes, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + data + b"\n\n"


async def open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n: connected\n\n")
    return response


@routes.route(
    "GET",
    "/v1/stream",
    summary="Live updates as Server-Sent Events",
    content_type="text/event-stream",
    query=(
        QueryParam(
            "topics",
            "comma-separated: tasks, runs, nodes, deployments, instances, "
            "workers, services, resources, kv, kv:<namespace>; all when absent",
        ),
        QueryParam("namespace", "shorthand for topics=kv:<namespace>"),
        QueryParam("lastEventId", "resume after this event id (same as the Last-Event-ID header)"),
        QueryParam("nodeId", "original agents: `update` events with the node's assignments"),
    ),
)
async def stream(request: web.Request) -> web.StreamResponse:
    if node_id := request.query.get("nodeId"):
        return await stream_assignments(request, node_id)
    return await stream_topics(request, parse_topics(request))


async def stream_topics(request: web.Request, topics: frozenset[str] | None) -> web.StreamResponse:
    svc = services(request)
    since = parse_last_event_id(request)
    with svc.bus.subscribe(topics, since=since) as sub:
        response = await open_sse(request)
        request.app[STREAMS].add(sub)
        try:
            await pump(sub, response, svc.config.server.sse_keepalive_sec)
        finally:
            request.app[STREAMS].discard(sub)
    return response


async def stream_assignments(request: web.Request, node_id: str) -> web.StreamResponse:
    """`update` events whose data is the node's whole assignment list: one at connect, one
    after every change of it (changes that arrive together are sent as one)."""
    svc = services(request)
    encode = msgspec.json.encode
    with svc.bus.subscribe({"instances"}) as sub:
        response = await open_sse(request)
        request.app[STREAMS].add(sub)
        try:
            changed = True
            while True:
                if changed:
                    items = await svc.deployments.assignments_for(node_id)
                    await response.write(sse_frame("update", encode(items)))
                try:
                    item = await asyncio.wait_for(sub.get(), svc.config.server.sse_keepalive_sec)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    changed = False
                    continue
                batch = [item, *(sub.get_nowait() for _ in range(sub.pending()))]
                if END in batch:
                    break
                changed = any(i is RESYNC or _assigns(i.event, node_id) for i in batch)
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            request.app[STREAMS].discard(sub)
    return response


def _assigns(event: Event, node_id: str) -> bool:
    if isinstance(event, InstanceChanged):
        return event.assignment and event.instance.node_id == node_id
    return isinstance(event, InstanceRemoved) and event.node_id == node_id


async def pump(sub: Subscription, response: web.StreamResponse, keepalive: float) -> None:
    """Copy bus envelopes to the client until it leaves or the server shuts down."""
    encode = msgspec.json.encode
    while True:
        try:
            item = await asyncio.wait_for(sub.get(), keepalive)
        except TimeoutError:
            await response.write(b": keep-alive\n\n")
            continue
        if item is END:
            return
        if item is RESYNC:
            frame = sse_frame("resync", b"{}")
        else:
            event = item.event
            frame = sse_frame(event.topic.partition(":")[0], encode(event.data()), item.seq)
        try:
            await response.write(frame)
        except (ConnectionResetError, RuntimeError):
            return


async def end_streams(app: web.Application) -> None:
    """On shutdown: let every open stream finish so the server can stop promptly."""
    app[STREAMS].end_all()
