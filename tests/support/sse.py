"""A small SSE reader for tests: open a stream, then await the event you expect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None

    def json(self):
        return json.loads(self.data)


async def read_event(response: aiohttp.ClientResponse) -> SseEvent:
    """The next complete event (comments and keep-alives are skipped)."""
    fields: dict[str, str] = {}
    while True:
        raw = await response.content.readline()
        if not raw:
            raise EOFError("stream closed")
        line = raw.decode().rstrip("\n")
        if line == "":
            if "event" in fields or "data" in fields:
                return SseEvent(
                    fields.get("event", "message"), fields.get("data", ""), fields.get("id")
                )
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        fields[key] = value.removeprefix(" ")


class EventStream:
    def __init__(self, response: aiohttp.ClientResponse):
        self.response = response

    async def next(self, timeout: float = 10.0) -> SseEvent:
        return await asyncio.wait_for(read_event(self.response), timeout)

    async def wait_for(
        self, predicate: Callable[[SseEvent], bool], timeout: float = 10.0
    ) -> SseEvent:
        async with asyncio.timeout(timeout):
            while True:
                event = await read_event(self.response)
                if predicate(event):
                    return event


@asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession, url: str, headers: dict | None = None
) -> AsyncIterator[EventStream]:
    async with session.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)
    ) as response:
        assert response.status == 200, await response.text()
        yield EventStream(response)
