"""HTTP workers: the controller POSTs `{taskId, name, payload, attempt}` as JSON to the
worker's URL. A 2xx answer succeeds with the JSON body (or the text) as result; any other
status is a failure result. A connection error fails the task and marks the worker
unhealthy until its next heartbeat. No total timeout: the engine owns deadlines and cancels
the call, which abandons the request.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import msgspec

from plum.executors.base import ExecutionRequest, ExecutionResult
from plum.executors.bodies import MAX_RESPONSE_BYTES, BodyTooLarge, http_result, read_capped
from plum.executors.workers import Dispatch
from plum.logging import get_logger

log = get_logger(__name__)

Unreachable = Callable[[str, "HttpLink", str], None]


class HttpWorkers:
    """The one client session HTTP workers are called through."""

    def __init__(self, *, connect_timeout: float = 5.0,
                 max_response_bytes: int = MAX_RESPONSE_BYTES):
        self._connect_timeout = connect_timeout
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpWorkers:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def link(self, worker_id: str, url: str, on_unreachable: Unreachable) -> HttpLink:
        return HttpLink(self, worker_id, url, on_unreachable)

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        if self._session is None:
            raise aiohttp.ClientConnectionError("the HTTP worker client is closed")
        headers = {"Content-Type": "application/json"}
        async with self._session.post(url, data=body, headers=headers) as response:
            return response.status, await read_capped(response, self._max_response_bytes)

    @property
    def max_response_bytes(self) -> int:
        return self._max_response_bytes


class HttpLink:
    """A worker's URL, as a `WorkerLink`."""

    def __init__(self, client: HttpWorkers, worker_id: str, url: str,
                 on_unreachable: Unreachable):
        self._client = client
        self.worker_id = worker_id
        self.url = url
        self._on_unreachable = on_unreachable

    def send(self, request: ExecutionRequest) -> None:
        return None  # the call happens in `wait`

    async def wait(self, dispatch: Dispatch) -> ExecutionResult:
        request = dispatch.request
        body = msgspec.json.encode({
            "taskId": request.task_id, "name": request.name, "payload": request.payload,
            "attempt": request.attempt,
        })
        try:
            status, raw = await self._client.post(self.url, body)
        except aiohttp.ClientConnectionError as exc:
            reason = str(exc) or type(exc).__name__
            self._on_unreachable(self.worker_id, self, reason)
            return ExecutionResult.failure(f"worker {self.worker_id!r} unreachable: {reason}")
        except BodyTooLarge:
            return ExecutionResult.failure(f"worker {self.worker_id!r} answered more than "
                                           f"{self._client.max_response_bytes} bytes")
        except aiohttp.ClientError as exc:
            return ExecutionResult.failure(f"call to worker {self.worker_id!r} failed: {exc}")
        return http_result("worker", status, raw)

    def cancel(self, request: ExecutionRequest) -> None:
        return None  # the canceled call closes its connection

    def close(self, reason: str) -> None:
        return None
