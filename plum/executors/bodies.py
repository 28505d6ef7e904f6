"""Answers to HTTP calls (services, HTTP workers): the body as the task's result, a 2xx
status as success, and the body shortened for a failure message."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from plum.executors.base import ExecutionResult

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
SHORT_BODY_CHARS = 200


class BodyTooLarge(Exception):
    """The answer is longer than the cap."""


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, every chunk of it, or `BodyTooLarge` past `cap` bytes."""
    if response.content_length is not None and response.content_length > cap:
        raise BodyTooLarge()
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def http_result(who: str, status: int, raw: bytes) -> ExecutionResult:
    """Success with the body's value for a 2xx `status`; otherwise a failure naming the
    status (`<who> answered HTTP 503: ...`), with the body's value as its result."""
    result = body_value(raw)
    if 200 <= status < 300:
        return ExecutionResult.success(result)
    return ExecutionResult.failure(f"{who} answered HTTP {status}: {short_body(raw)}", result)


def body_value(raw: bytes) -> Any:
    """The JSON value of `raw`, its text if it is not JSON, or None if it is blank."""
    if not raw.strip():
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode(errors="replace")


def short_body(raw: bytes) -> str:
    """`raw` as one line of at most `SHORT_BODY_CHARS` characters, for an error message."""
    text = " ".join(raw.decode(errors="replace").split())
    if len(text) > SHORT_BODY_CHARS:
        return text[: SHORT_BODY_CHARS - 3] + "..."
    return text or "(empty body)"
