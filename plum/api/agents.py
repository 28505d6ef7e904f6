"""The agent link over a websocket: `GET /v1/agents/connect`.

One JSON message per text frame (`plum.agent.protocol`), handed to the agent hub in order.
A frame that does not decode is logged and ends the connection (1003, unsupported data); a
message that breaks the protocol (anything before `hello`) ends it with 1008. Bearer-token
auth applies as on every /v1 route. Dead peers are found by websocket pings every
`heartbeat_sec`, besides the agent's own heartbeats.
"""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from plum.agent.protocol import ControllerMessage, decode_from_agent, encode
from plum.agenthub import AgentHub, AgentSession
from plum.api.context import SERVICES, services
from plum.api.http import RouteTable
from plum.errors import BadRequest, PlumError
from plum.logging import get_logger

log = get_logger(__name__)

routes = RouteTable("agents")

MAX_FRAME_BYTES = 64 * 1024 * 1024


class WebSocketConnection:
    """The hub's view of one agent websocket."""

    def __init__(self, ws: web.WebSocketResponse):
        self._ws = ws
        self._lock = asyncio.Lock()

    async def send(self, message: ControllerMessage) -> None:
        async with self._lock:
            if self._ws.closed:
                raise ConnectionResetError("the agent websocket is closed")
            await self._ws.send_str(encode(message).decode())

    async def close(self) -> None:
        await self._ws.close(code=WSCloseCode.GOING_AWAY, message=b"link closed by controller")


@routes.route(
    "GET", "/v1/agents/connect", summary="The agent link (websocket upgrade)", status=101
)
async def connect(request: web.Request) -> web.StreamResponse:
    hub = services(request).agents_hub
    ws = web.WebSocketResponse(heartbeat=hub.heartbeat_sec, max_msg_size=MAX_FRAME_BYTES)
    if not ws.can_prepare(request).ok:
        raise BadRequest("expected a websocket upgrade")
    await ws.prepare(request)
    try:
        async with hub.session(WebSocketConnection(ws)) as session:
            await _pump(ws, session)
    except PlumError as exc:  # the hub is stopping
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=_reason(exc.message))
    return ws


async def _pump(ws: web.WebSocketResponse, session: AgentSession) -> None:
    async for frame in ws:
        if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return  # an error frame: the connection is unusable
        try:
            message = decode_from_agent(frame.data)
        except msgspec.DecodeError as exc:
            log.warning("agent_frame_rejected", node_id=session.node_id, error=str(exc))
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"malformed message")
            return
        try:
            await session.receive(message)
        except BadRequest as exc:
            log.warning("agent_protocol_violated", node_id=session.node_id, error=exc.message)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=_reason(exc.message))
            return


def _reason(text: str) -> bytes:
    return text.encode()[:120]  # a close frame's reason holds at most 123 bytes


async def stop_hub(app: web.Application) -> None:
    """On shutdown, before connections are torn down: agents leave without losing tasks."""
    hub: AgentHub = app[SERVICES].agents_hub
    await hub.stop()
