"""A worker built straight from the generated messages over a raw grpclib stream (not the
SDK): it proves the controller speaks the original `plum.task` wire protocol.

It registers, records every `TaskRequest` it receives, and answers only when told to, so
tests decide what happens when. Waits are on futures and queues, never on time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from grpclib.client import Channel
from grpclib.const import Cardinality

from plum.rpc._proto.plum.task import (
    Heartbeat,
    TaskAck,
    TaskLog,
    TaskRequest,
    TaskResponse,
    WorkerRegister,
)

TASK_STREAM = "/plum.task.TaskService/TaskStream"
SAFETY = 5.0


class RawWorker:
    def __init__(self, addr: str, worker_id: str, tasks: list[str], *, capacity: int = 0,
                 on_request: Callable[[RawWorker, TaskRequest], None] | None = None,
                 **register: str | dict):
        host, _, port = addr.rpartition(":")
        self.host, self.port = host, int(port)
        self.register = WorkerRegister(worker_id=worker_id, tasks=tasks, capacity=capacity,
                                       **register)
        self.on_request = on_request
        self.received: asyncio.Queue[TaskRequest] = asyncio.Queue()
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()
        self._channel: Channel | None = None
        self._stream = None
        self._reader: asyncio.Task | None = None

    @property
    def worker_id(self) -> str:
        return self.register.worker_id

    async def connect(self) -> RawWorker:
        self._channel = Channel(self.host, self.port)
        self._stream = self._channel.request(TASK_STREAM, Cardinality.STREAM_STREAM,
                                             TaskAck, TaskRequest)
        await self._stream.__aenter__()
        await self._stream.send_message(TaskAck(register=self.register))
        self.ended = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for request in self._stream:
                self.received.put_nowait(request)
                if self.on_request is not None:
                    self.on_request(self, request)
            outcome: object = None
        except Exception as exc:  # the controller ended the stream with a status
            outcome = exc
        if not self.ended.done():
            self.ended.set_result(outcome)

    async def next_request(self) -> TaskRequest:
        return await asyncio.wait_for(self.received.get(), SAFETY)

    async def send(self, ack: TaskAck) -> None:
        await self._stream.send_message(ack)

    async def answer(self, task_id: str, result: str = "", error: str = "",
                     attempt: int = 0) -> None:
        await self.send(TaskAck(result=TaskResponse(task_id=task_id, result=result, error=error,
                                                    attempt=attempt)))

    async def heartbeat(self) -> None:
        await self.send(TaskAck(heartbeat=Heartbeat(worker_id=self.worker_id)))

    async def log(self, task_id: str, line: str, stream: str = "stdout",
                  attempt: int = 0) -> None:
        await self.send(TaskAck(log=TaskLog(task_id=task_id, attempt=attempt, stream=stream,
                                            line=line)))

    def drop(self) -> None:
        """The connection dies at once (no half-close, no status): a crash or a cable."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def close(self) -> None:
        self.drop()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
