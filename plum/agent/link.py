"""The agent's side of its link to the controller.

`WebSocketLink` connects to `/v1/agents/connect` (JSON text frames); `LocalLink` joins the
controller's hub in the same process (all-in-one mode) and exchanges the same messages
unencoded, through two queues, so neither side ever runs inside the other's handler.

Both keep the agent linked until cancelled: on every connect the agent says `hello` with
its full state, then heartbeats every `heartbeat_sec` (the controller's `welcome` may
change it); what the controller says goes to `agent.receive()` in order. When the link
drops they reconnect with exponential backoff and jitter, and the new `hello` resyncs
everything, so reconnecting is idempotent. Outgoing messages are queued by `post()`, which
never blocks; while the link is down they are dropped (the agent keeps what matters, task
results, until the controller acknowledges them).
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol

import aiohttp
import msgspec

from plum.agent.protocol import (
    AgentMessage,
    ControllerMessage,
    Heartbeat,
    Hello,
    TaskLog,
    Welcome,
    decode_from_controller,
    encode,
)
from plum.clock import Clock
from plum.errors import PlumError
from plum.logging import get_logger

if TYPE_CHECKING:
    from plum.agenthub import AgentHub, AgentSession

log = get_logger(__name__)

CONNECT_PATH = "/v1/agents/connect"
MAX_QUEUED_LOGS = 10_000  # log lines queued while the link is slow; more are dropped
MAX_FRAME_BYTES = 64 * 1024 * 1024


class LinkedAgent(Protocol):
    """What a link needs from the agent it serves."""

    node_id: str
    heartbeat_sec: float

    def hello(self) -> Hello: ...
    def beat(self) -> Heartbeat: ...
    async def receive(self, message: ControllerMessage) -> None: ...


class ControllerLink(Protocol):
    async def run(self, agent: LinkedAgent) -> None:
        """Keep `agent` linked to the controller until cancelled."""

    def post(self, message: AgentMessage) -> bool:
        """Queue a message for the controller; False when the link is down (dropped)."""

    async def flush(self, timeout: float) -> None:
        """Wait (at most `timeout`) until the queued messages are sent."""


class Backoff:
    """Exponential backoff with jitter: delays of 0.5x-1.5x of 0.5, 1, 2, ... up to `cap`."""

    def __init__(self, first: float = 0.5, cap: float = 10.0):
        self._first = first
        self._cap = cap
        self._next = first

    def delay(self) -> float:
        delay = min(self._next * (0.5 + random.random()), self._cap)
        self._next = min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._first


class _Outbox:
    """Messages for the controller, in order; log lines are dropped past a bound."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AgentMessage] = asyncio.Queue()

    def post(self, message: AgentMessage) -> bool:
        if isinstance(message, TaskLog) and self.queue.qsize() >= MAX_QUEUED_LOGS:
            return False
        self.queue.put_nowait(message)
        return True

    async def flush(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.queue.join(), timeout)
        except TimeoutError:
            log.warning("agent_link_flush_timed_out", queued=self.queue.qsize())


async def _heartbeats(agent: LinkedAgent, outbox: _Outbox, clock: Clock) -> None:
    """A first beat at once (so usage shows up), then one every `heartbeat_sec`."""
    while True:
        outbox.post(agent.beat())
        await clock.sleep(agent.heartbeat_sec)


class _Linked(ABC):
    """The reconnect loop both links share: `connect_once` runs one connection."""

    def __init__(self, clock: Clock, what: str):
        self._clock = clock
        self._what = what
        self._outbox: _Outbox | None = None
        self._backoff = Backoff()

    def post(self, message: AgentMessage) -> bool:
        outbox = self._outbox
        return outbox is not None and outbox.post(message)

    async def flush(self, timeout: float) -> None:
        if self._outbox is not None:
            await self._outbox.flush(timeout)

    async def run(self, agent: LinkedAgent) -> None:
        while True:
            outbox = _Outbox()
            try:
                reason = await self._connect_once(agent, outbox)
            except (aiohttp.ClientError, OSError, TimeoutError, PlumError) as exc:
                reason = str(exc) or type(exc).__name__
            finally:
                self._outbox = None
            delay = self._backoff.delay()
            log.warning("agent_link_down", node_id=agent.node_id, controller=self._what,
                        reason=reason, retry_in=round(delay, 2))
            await self._clock.sleep(delay)

    def _open(self, agent: LinkedAgent, outbox: _Outbox) -> None:
        """Connected: `hello` (the agent's state as of now) goes first."""
        outbox.post(agent.hello())
        self._outbox = outbox

    async def _received(self, agent: LinkedAgent, message: ControllerMessage) -> None:
        if isinstance(message, Welcome):
            self._backoff.reset()
        try:
            await agent.receive(message)
        except Exception:
            log.exception("agent_message_failed", message=type(message).__name__)

    @abstractmethod
    async def _connect_once(self, agent: LinkedAgent, outbox: _Outbox) -> str:
        """Connect, serve the link until it drops, and say why it ended."""


class WebSocketLink(_Linked):
    def __init__(self, base_url: str, token: str | None, clock: Clock):
        self._url = base_url.rstrip("/") + CONNECT_PATH
        super().__init__(clock, self._url)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def run(self, agent: LinkedAgent) -> None:
        async with aiohttp.ClientSession(headers=self._headers) as http:
            self._http = http
            await super().run(agent)

    async def _connect_once(self, agent: LinkedAgent, outbox: _Outbox) -> str:
        async with self._http.ws_connect(
            self._url, heartbeat=agent.heartbeat_sec, max_msg_size=MAX_FRAME_BYTES
        ) as ws:
            log.info("agent_link_connected", node_id=agent.node_id, controller=self._url)
            self._open(agent, outbox)
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write(ws, outbox), name="agent-link-writer")
                beats = tg.create_task(_heartbeats(agent, outbox, self._clock),
                                       name="agent-heartbeats")
                try:
                    await self._read(ws, agent)
                finally:
                    writer.cancel()
                    beats.cancel()
            code = ws.close_code
        return f"closed by the controller (code {code})"

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, agent: LinkedAgent) -> None:
        async for frame in ws:
            if frame.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                return  # an error frame: the connection is unusable
            try:
                message = decode_from_controller(frame.data)
            except msgspec.DecodeError as exc:
                log.error("agent_link_frame_rejected", error=str(exc))
                await ws.close(code=aiohttp.WSCloseCode.UNSUPPORTED_DATA,
                               message=b"malformed message")
                return
            await self._received(agent, message)

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, outbox: _Outbox) -> None:
        while True:
            message = await outbox.queue.get()
            try:
                await ws.send_str(encode(message).decode())
            except (ConnectionError, aiohttp.ClientError) as exc:
                log.info("agent_link_send_failed", error=str(exc))
                await ws.close()
                return
            finally:
                outbox.queue.task_done()


class LocalConnection:
    """The hub's side of the in-process link."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[ControllerMessage] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def send(self, message: ControllerMessage) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("the in-process link is closed")
        self.inbox.put_nowait(message)

    async def close(self) -> None:
        self.closed.set()


class LocalLink(_Linked):
    """All-in-one mode: the agent joins the hub of the controller in the same process."""

    def __init__(self, hub: AgentHub, clock: Clock):
        super().__init__(clock, "in-process")
        self._hub = hub

    async def _connect_once(self, agent: LinkedAgent, outbox: _Outbox) -> str:
        conn = LocalConnection()
        async with self._hub.session(conn) as session:
            self._open(agent, outbox)
            async with asyncio.TaskGroup() as tg:
                pumps = [
                    tg.create_task(self._to_hub(session, outbox, conn)),
                    tg.create_task(self._to_agent(conn, agent)),
                    tg.create_task(_heartbeats(agent, outbox, self._clock)),
                ]
                try:
                    await conn.closed.wait()
                finally:
                    for pump in pumps:
                        pump.cancel()
        return "closed by the controller"

    async def _to_hub(self, session: AgentSession, outbox: _Outbox, conn: LocalConnection) -> None:
        while True:
            message = await outbox.queue.get()
            try:
                await session.receive(message)
            except Exception:
                log.exception("agent_link_message_failed", message=type(message).__name__)
                await conn.close()
            finally:
                outbox.queue.task_done()

    async def _to_agent(self, conn: LocalConnection, agent: LinkedAgent) -> None:
        while True:
            await self._received(agent, await conn.inbox.get())
