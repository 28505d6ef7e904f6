"""An in-process stand-in for the controller's `TaskStream`, to drive a `Worker` message by
message: each accepted stream is a `Conn` whose received messages the test awaits and
through which it pushes `TaskRequest`s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpclib.const
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Server, Stream

from plum.rpc._proto.plum.task import TaskAck, TaskRequest
from plum.sdk.worker import TASK_STREAM

WAIT = 10.0  # never reached when all is well


class Conn:
    """One stream from a worker."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self.received: asyncio.Queue[TaskAck] = asyncio.Queue()
        self.ended = asyncio.Event()  # the worker closed its side
        self.done = asyncio.Event()   # the call is over
        self._close = asyncio.Event()
        self._abort = False
        self.reset = False

    async def serve(self) -> None:
        async def receive() -> None:
            try:
                async for message in self._stream:
                    self.received.put_nowait(message)
            except StreamTerminatedError:  # the worker reset the stream instead
                self.reset = True
            else:
                self.ended.set()
            self._close.set()

        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(receive())
                await self._close.wait()
                reader.cancel()
            if self._abort:
                raise GRPCError(grpclib.const.Status.UNAVAILABLE, "controller stopping")
        finally:
            self.done.set()

    async def next(self, kind: str | None = None) -> TaskAck:
        """The next message, skipping heartbeats (and log lines) unless `kind` asks for them."""
        async with asyncio.timeout(WAIT):
            while True:
                message = await self.received.get()
                which = _kind(message)
                if kind == which or (kind is None and which not in ("heartbeat", "log")):
                    return message

    async def send(self, **fields) -> None:
        await self._stream.send_message(TaskRequest(**fields))

    def close(self, *, abort: bool = False) -> None:
        """End the stream from the controller's side: OK status, or UNAVAILABLE."""
        self._abort = abort
        self._close.set()


def _kind(message: TaskAck) -> str:
    for name in ("register", "result", "heartbeat", "log"):
        if getattr(message, name) is not None:
            return name
    return "empty"


class FakeController:
    def __init__(self) -> None:
        self.conns: asyncio.Queue[Conn] = asyncio.Queue()
        self._live: set[Conn] = set()
        self._server: Server | None = None
        self.port = 0

    def __mapping__(self):
        return {TASK_STREAM: grpclib.const.Handler(
            self._handle, grpclib.const.Cardinality.STREAM_STREAM, TaskAck, TaskRequest)}

    async def _handle(self, stream: Stream) -> None:
        conn = Conn(stream)
        self.conns.put_nowait(conn)
        self._live.add(conn)
        try:
            await conn.serve()
        finally:
            self._live.discard(conn)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = Server([self])
        await self._server.start("127.0.0.1", self.port or 0, reuse_address=True)
        self.port = self._server._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Like a controller shutting down: every stream ends with UNAVAILABLE, then the
        server closes (grpclib's `close()` alone would leave clients waiting)."""
        for conn in list(self._live):
            conn.close(abort=True)
            async with asyncio.timeout(WAIT):
                await conn.done.wait()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def accept(self) -> Conn:
        """The next stream a worker opens, once its `register` arrived."""
        async with asyncio.timeout(WAIT):
            return await self.conns.get()


@contextlib.asynccontextmanager
async def fake_controller() -> AsyncIterator[FakeController]:
    controller = FakeController()
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()
