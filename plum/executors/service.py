"""The `service` executor: call a registered service, picked by discovery and a balancer.

`request.target_ref` names the service; labels choose `serviceVersion`, `serviceProtocol`
(`http` by default, `https`, `grpc`), `servicePort`, `servicePath` (`/task` by default) and
`lbStrategy` (`round_robin` by default, `random`, `least_inflight`). The executor POSTs
`{taskId, name, payload}` as JSON to the chosen endpoint. A 2xx answer succeeds with the JSON
body (or the text) as result; any other status is a failure result, not retried elsewhere.
Only a connection error (refused, reset, DNS, connect timeout) moves on to the next healthy
endpoint, and marks the one that failed unhealthy. With `serviceProtocol: grpc`, `servicePath`
names the unary method (`/package.Service/Method`), called with the payload as a JSON
message through a JSON codec (`plum.executors.service_grpc`: the service must accept and
answer JSON).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import aiohttp
import msgspec

from plum.discovery.balancer import Strategy
from plum.discovery.model import Endpoint, ServiceProtocol
from plum.discovery.registry import DiscoveryQuery, ServiceRegistry
from plum.errors import Invalid, Unavailable
from plum.executors.base import ExecutionContext, ExecutionRequest, ExecutionResult, ExecutorKind
from plum.executors.bodies import MAX_RESPONSE_BYTES, BodyTooLarge, http_result, read_capped
from plum.executors.service_grpc import METHOD as GRPC_METHOD
from plum.executors.service_grpc import GrpcCalls, Unreachable
from plum.logging import get_logger

log = get_logger(__name__)

DEFAULT_PATH = "/task"

E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """What the task's labels ask for."""

    query: DiscoveryQuery
    path: str = DEFAULT_PATH
    strategy: Strategy = Strategy.ROUND_ROBIN

    @classmethod
    def from_request(cls, request: ExecutionRequest) -> ServiceCall:
        labels = request.labels
        if not request.target_ref:
            raise Invalid("targetRef: the service name is required", field="targetRef")
        path = labels.get("servicePath") or DEFAULT_PATH
        return cls(
            query=DiscoveryQuery(
                service=request.target_ref,
                version=labels.get("serviceVersion") or None,
                protocol=_label_enum(labels, "serviceProtocol", ServiceProtocol)
                or ServiceProtocol.HTTP,
                port=_label_port(labels),
            ),
            path=path if path.startswith("/") else f"/{path}",
            strategy=_label_enum(labels, "lbStrategy", Strategy) or Strategy.ROUND_ROBIN,
        )


_Unreachable = Unreachable  # the endpoint could not be reached; try the next one


class ServiceExecutor:
    kind = ExecutorKind.SERVICE

    def __init__(
        self,
        registry: ServiceRegistry,
        *,
        connect_timeout: float = 5.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self._registry = registry
        self._ssl = ssl_context if ssl_context is not None else True  # True: verify, defaults
        self._connect_timeout = connect_timeout
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._grpc = GrpcCalls()
        self._closed = False

    async def __aenter__(self) -> ServiceExecutor:
        self._open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise Unavailable("the service executor is closed")
        if self._session is None:
            # No total timeout: the engine owns deadlines and cancels the call.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
            connector = aiohttp.TCPConnector(ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def close(self) -> None:
        """Close the shared session. Closing twice is harmless."""
        self._closed = True
        self._grpc.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        try:
            call = ServiceCall.from_request(request)
        except Invalid as exc:
            return ExecutionResult.failure(exc.message)
        service = call.query.service
        grpc = call.query.protocol == ServiceProtocol.GRPC
        if grpc and not GRPC_METHOD.match(call.path):
            return ExecutionResult.failure(
                f"label servicePath: a gRPC call needs /package.Service/Method, got {call.path!r}"
            )
        candidates = self._registry.discover(call.query)
        if not candidates:
            return ExecutionResult.failure(f"no healthy endpoint for service {service!r}")
        session = self._open()
        body = msgspec.json.encode(
            {"taskId": request.task_id, "name": request.name, "payload": request.payload}
        )
        errors: list[str] = []
        await ctx.mark_running()
        for endpoint in self._registry.balancer.order(service, candidates, call.strategy):
            try:
                with self._registry.balancer.track(endpoint):
                    if grpc:
                        return await self._grpc.call(endpoint, call.path, request.payload)
                    return await self._post(session, endpoint, call.path, body)
            except _Unreachable as exc:
                errors.append(f"{endpoint.address}: {exc}")
                log.warning(
                    "service_endpoint_unreachable",
                    service=service,
                    instance_id=endpoint.instance_id,
                    address=endpoint.address,
                    error=str(exc),
                    task_id=request.task_id,
                )
                await self._registry.mark_unhealthy(endpoint, str(exc))
        return ExecutionResult.failure(
            f"no reachable endpoint for service {service!r} ({'; '.join(errors)})"
        )

    async def _post(
        self, session: aiohttp.ClientSession, endpoint: Endpoint, path: str, body: bytes
    ) -> ExecutionResult:
        url = endpoint.url(path)
        headers = {"Content-Type": "application/json"}
        try:
            async with session.post(url, data=body, headers=headers) as response:
                raw = await read_capped(response, self._max_response_bytes)
                status = response.status
        except aiohttp.ClientConnectionError as exc:
            raise _Unreachable(str(exc) or type(exc).__name__) from exc
        except BodyTooLarge:
            return ExecutionResult.failure(
                f"service answered more than {self._max_response_bytes} bytes ({url})"
            )
        except aiohttp.ClientError as exc:
            return ExecutionResult.failure(f"service call to {url} failed: {exc}")
        return http_result("service", status, raw)


def _label_enum(labels: dict[str, str], name: str, enum: type[E]) -> E | None:
    raw = labels.get(name) or None
    if raw is None:
        return None
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise Invalid(
            f"label {name}: expected one of {allowed}, got {raw!r}", field=f"labels.{name}"
        ) from None


def _label_port(labels: dict[str, str]) -> int | None:
    raw = labels.get("servicePort") or None
    if raw is None:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise Invalid(
            f"label servicePort: expected a port 1..65535, got {raw!r}", field="labels.servicePort"
        )
    return port
