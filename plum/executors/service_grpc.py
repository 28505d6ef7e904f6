"""gRPC calls for the `service` executor: one unary method, JSON in and out.

Plum has no schema for a service's messages, so the call goes through a generic JSON codec:
the request is the task's payload encoded as JSON, sent with content type
`application/grpc+json`, and the reply is decoded as JSON (or kept as text). The service
must therefore accept JSON-encoded messages, i.e. be served with a JSON codec (grpclib:
`Server(handlers, codec=JsonCodec())`; grpc-java/go: a registered "json" codec), and
answer JSON. A non-OK status is a failure result; a connection error moves on to the next
endpoint. One channel per endpoint address is kept open and reused.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from plum.discovery.model import Endpoint
from plum.executors.base import ExecutionResult
from plum.executors.bodies import body_value

METHOD = re.compile(r"^/[A-Za-z0-9_.]+/[A-Za-z0-9_]+$")


class Unreachable(Exception):
    """The endpoint could not be reached; try the next one."""


class JsonCodec(CodecBase):
    """grpclib codec for messages that are JSON values (any type, no schema)."""

    __content_subtype__ = "json"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return msgspec.json.encode(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return body_value(data)


class GrpcCalls:
    def __init__(self) -> None:
        self._codec = JsonCodec()
        self._channels: dict[tuple[str, int], Channel] = {}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def _channel(self, endpoint: Endpoint) -> Channel:
        key = (endpoint.ip, endpoint.port)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = Channel(endpoint.ip, endpoint.port,
                                                    codec=self._codec)
        return channel

    async def call(self, endpoint: Endpoint, method: str, payload: Any) -> ExecutionResult:
        channel = self._channel(endpoint)
        request = {} if payload is None else payload
        try:
            async with channel.request(method, Cardinality.UNARY_UNARY, object, object) as stream:
                try:
                    await stream.send_message(request, end=True)  # connects first
                except OSError as exc:
                    raise Unreachable(str(exc) or type(exc).__name__) from exc
                reply = await stream.recv_message()
        except GRPCError as exc:
            detail = f": {exc.message}" if exc.message else ""
            return ExecutionResult.failure(f"service answered gRPC {exc.status.name}{detail}")
        except (OSError, StreamTerminatedError, ProtocolError) as exc:
            # Sent, then lost: not tried elsewhere, the service may have run it.
            return ExecutionResult.failure(
                f"gRPC call {method} to {endpoint.address} failed: {exc}")
        return ExecutionResult.success(reply)
