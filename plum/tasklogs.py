"""Live output of running tasks: a bounded buffer per task, and followers who get each
line as it comes (`GET /v1/tasks/{id}/logs?follow=true`).

Lines are kept while a task runs and for the most recently finished tasks; after that the
captured stdout/stderr in the task's result is the record. A follower that falls behind
loses lines rather than slowing the task: it is told how many it missed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Final

from plum.engine.model import Model


class LogLine(Model, frozen=True):
    stream: str
    text: str
    time: float


class _Closed:
    pass


CLOSED: Final = _Closed()


class _Buffer:
    __slots__ = ("closed", "dropped", "followers", "lines")

    def __init__(self, max_lines: int):
        self.lines: deque[LogLine] = deque(maxlen=max_lines)
        self.followers: set[asyncio.Queue] = set()
        self.closed = False
        self.dropped = 0


class TaskLogs:
    def __init__(self, *, max_lines: int = 5_000, keep_finished: int = 256,
                 follower_queue: int = 1_000):
        self._live: dict[str, _Buffer] = {}
        self._finished: OrderedDict[str, _Buffer] = OrderedDict()
        self._max_lines = max_lines
        self._keep = keep_finished
        self._queue_size = follower_queue

    def append(self, task_id: str, stream: str, text: str, time: float) -> None:
        buffer = self._live.get(task_id)
        if buffer is None:
            buffer = self._live[task_id] = _Buffer(self._max_lines)
        line = LogLine(stream=stream, text=text, time=round(time, 3))
        if len(buffer.lines) == buffer.lines.maxlen:
            buffer.dropped += 1
        buffer.lines.append(line)
        for queue in buffer.followers:
            if queue.qsize() < self._queue_size:
                queue.put_nowait(line)

    def close(self, task_id: str) -> None:
        """The task finished: followers get `CLOSED`; the lines stay for a while."""
        buffer = self._live.pop(task_id, None)
        if buffer is None:
            return
        buffer.closed = True
        for queue in buffer.followers:
            queue.put_nowait(CLOSED)
        buffer.followers.clear()
        self._finished[task_id] = buffer
        while len(self._finished) > self._keep:
            self._finished.popitem(last=False)

    def end_followers(self) -> None:
        """The server is stopping: every follower gets `CLOSED` now (the tasks run on)."""
        for buffer in self._live.values():
            for queue in buffer.followers:
                queue.put_nowait(CLOSED)

    def lines(self, task_id: str) -> list[LogLine] | None:
        buffer = self._live.get(task_id) or self._finished.get(task_id)
        return list(buffer.lines) if buffer is not None else None

    def follow(self, task_id: str) -> tuple[list[LogLine], asyncio.Queue | None]:
        """The lines so far and a queue of the lines to come (None once finished)."""
        buffer = self._live.get(task_id)
        if buffer is None:
            buffer = self._live[task_id] = _Buffer(self._max_lines)
        queue: asyncio.Queue = asyncio.Queue()
        buffer.followers.add(queue)
        return list(buffer.lines), queue

    def unfollow(self, task_id: str, queue: asyncio.Queue) -> None:
        buffer = self._live.get(task_id)
        if buffer is not None:
            buffer.followers.discard(queue)
            if not buffer.followers and not buffer.lines:
                del self._live[task_id]

    def discard(self, task_id: str) -> None:
        self.close(task_id)
        self._finished.pop(task_id, None)
