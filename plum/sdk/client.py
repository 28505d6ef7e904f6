"""`Client`: the REST API of API.md from Python, with waits that listen instead of polling.

    async with Client("http://127.0.0.1:8080", token=...) as plum:
        task = await plum.create_task("builtin.echo", "embedded", {"hi": 1})
        done = await plum.wait_task(task.task_id, timeout=30)

Values are Plum's own wire models (`TaskRun`, `WorkflowRun`, ...), decoded from the JSON
the server sends. A non-2xx answer raises `PlumApiError` built from the JSON error shape.

`wait_task` and `wait_run` subscribe to `GET /v1/stream` first and only then read the
current state, so a change that lands between the two is never missed; a `resync` event or
a dropped stream (a controller restart) leads to a fresh read, never to a sleep loop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import msgspec

from plum.discovery.balancer import Strategy
from plum.discovery.model import Endpoint, ServiceProtocol
from plum.engine.machine import RUN_TERMINAL, WorkflowRun
from plum.engine.rules import NODE_TERMINAL
from plum.engine.tasks import TERMINAL, TaskDef, TaskRun, TaskState
from plum.errors import ErrorCode
from plum.executors.base import ExecutorKind, TargetKind
from plum.taskservice import TaskDetail, TaskLogView
from plum.workflows import RunDetail, WorkflowView

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
_TASK_TERMINAL = frozenset(state.value for state in TERMINAL)
_RUN_TERMINAL = frozenset(state.value for state in RUN_TERMINAL)
_RECONNECT_MAX_SEC = 5.0


class PlumApiError(Exception):
    """An error answer: HTTP `status` and the `{"error": {code, message, field}}` body.

    `code` is an `ErrorCode` when the server sent a known one (it compares equal to the
    wire string either way).
    """

    def __init__(self, status: int, code: ErrorCode | str, message: str,
                 field: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    @classmethod
    def from_body(cls, status: int, raw: bytes) -> PlumApiError:
        try:
            detail = msgspec.json.decode(raw).get("error") or {}
            code, message = detail.get("code", ""), detail.get("message", "")
            field = detail.get("field")
        except (msgspec.DecodeError, AttributeError):
            code, message, field = "", raw.decode(errors="replace").strip(), None
        try:
            code = ErrorCode(code)
        except ValueError:
            code = code or (ErrorCode.INTERNAL if status >= 500 else ErrorCode.INVALID)
        return cls(status, code, message or f"HTTP {status}", field)


def _body(**fields: Any) -> dict[str, Any]:
    """A request body: snake_case keywords as camelCase keys, unset (None) ones left out."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        head, *rest = key.split("_")
        out[head + "".join(part.title() for part in rest)] = value
    return out


def _target(kind: TargetKind | str | None) -> TargetKind | None:
    return TargetKind(kind) if kind is not None else None


class Client:
    """An async REST client for one Plum controller. Use it as an async context manager
    (or call `close()`); one instance can be shared by many tasks."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, *,
                 request_timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool. Closing twice is harmless."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _call(self, method: str, path: str, model: type[T] | None = None, *,
                    body: Any = None, params: dict[str, Any] | None = None) -> T:
        data = msgspec.json.encode(body) if body is not None else None
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        headers = {"Content-Type": "application/json"} if data is not None else None
        async with self._open().request(method, self.base_url + path, data=data,
                                        params=query, headers=headers) as response:
            raw = await response.read()
            if response.status >= 400:
                raise PlumApiError.from_body(response.status, raw)
        if model is None or not raw:
            return None  # type: ignore[return-value]
        return msgspec.json.decode(raw, type=model)

    # -- task definitions and task runs
    async def create_task_def(self, name: str, executor: ExecutorKind | str, *,
                              target_kind: TargetKind | str | None = None,
                              target_ref: str | None = None,
                              labels: dict[str, str] | None = None,
                              default_payload: dict[str, Any] | None = None,
                              timeout_sec: float | None = None, max_retries: int | None = None,
                              description: str | None = None) -> TaskDef:
        body = _body(name=name, executor=ExecutorKind(executor), target_kind=_target(target_kind),
                     target_ref=target_ref, labels=labels, default_payload=default_payload,
                     timeout_sec=timeout_sec, max_retries=max_retries, description=description)
        return await self._call("POST", "/v1/task-defs", TaskDef, body=body)

    async def list_task_defs(self, *, limit: int = 100, offset: int = 0) -> list[TaskDef]:
        return await self._call("GET", "/v1/task-defs", list[TaskDef],
                                params={"limit": limit, "offset": offset})

    async def run_task_def(self, def_id: str, payload: dict[str, Any] | None = None, *,
                           timeout_sec: float | None = None, max_retries: int | None = None,
                           labels: dict[str, str] | None = None) -> TaskRun:
        body = _body(payload=payload, timeout_sec=timeout_sec, max_retries=max_retries,
                     labels=labels)
        return await self._call("POST", f"/v1/task-defs/{def_id}", TaskRun, body=body,
                                params={"action": "run"})

    async def create_task(self, name: str, executor: ExecutorKind | str,
                          payload: dict[str, Any] | None = None, *, auto_start: bool = True,
                          target_kind: TargetKind | str | None = None,
                          target_ref: str | None = None, labels: dict[str, str] | None = None,
                          timeout_sec: float | None = None, max_retries: int | None = None,
                          retry_backoff_sec: float | None = None) -> TaskRun:
        """Create a task run. Unlike the bare REST call it starts at once unless
        `auto_start=False` (then it stays `Queued` until `start_task`)."""
        body = _body(name=name, executor=ExecutorKind(executor), payload=payload,
                     auto_start=auto_start, target_kind=_target(target_kind), target_ref=target_ref,
                     labels=labels, timeout_sec=timeout_sec, max_retries=max_retries,
                     retry_backoff_sec=retry_backoff_sec)
        return await self._call("POST", "/v1/tasks", TaskRun, body=body)

    async def list_tasks(self, *, state: TaskState | str | None = None, name: str | None = None,
                         def_id: str | None = None, workflow_run_id: str | None = None,
                         limit: int = 100, offset: int = 0) -> list[TaskRun]:
        params = {"state": TaskState(state) if state else None, "name": name, "defId": def_id,
                  "workflowRunId": workflow_run_id, "limit": limit, "offset": offset}
        return await self._call("GET", "/v1/tasks", list[TaskRun], params=params)

    async def get_task(self, task_id: str) -> TaskDetail:
        return await self._call("GET", f"/v1/tasks/{task_id}", TaskDetail)

    async def start_task(self, task_id: str) -> TaskRun:
        return await self._call("POST", f"/v1/tasks/{task_id}", TaskRun,
                                params={"action": "start"})

    async def cancel_task(self, task_id: str) -> TaskRun:
        return await self._call("POST", f"/v1/tasks/{task_id}", TaskRun,
                                params={"action": "cancel"})

    async def task_logs(self, task_id: str) -> TaskLogView:
        """The task's captured output (process stdout/stderr, or a worker's log lines)."""
        return await self._call("GET", f"/v1/tasks/{task_id}/logs", TaskLogView)

    async def wait_task(self, task_id: str, timeout: float | None = None) -> TaskDetail:
        """The task once it is terminal (`Succeeded`, `Failed`, `Timeout`, `Canceled`).
        Raises `TimeoutError` after `timeout` seconds, `PlumApiError` (404) if it is gone."""

        def matches(data: dict) -> bool:
            return data.get("taskId") == task_id

        def done(task: TaskDetail) -> bool:
            return task.state in TERMINAL

        async with asyncio.timeout(timeout):
            return await self._wait_terminal(
                "tasks", lambda: self.get_task(task_id), matches, _TASK_TERMINAL, done)

    # -- workflows and runs
    async def create_workflow(self, definition: dict[str, Any]) -> WorkflowView:
        """Any definition form API.md accepts: a DAG (`nodes` + `edges`), `steps`, or the
        original's form."""
        return await self._call("POST", "/v1/workflows", WorkflowView, body=definition)

    async def run_workflow(self, workflow_id: str,
                           params: dict[str, Any] | None = None) -> WorkflowRun:
        return await self._call("POST", f"/v1/workflows/{workflow_id}", WorkflowRun,
                                body={"params": params or {}}, params={"action": "run"})

    async def get_run(self, run_id: str) -> RunDetail:
        return await self._call("GET", f"/v1/workflow-runs/{run_id}", RunDetail)

    async def cancel_run(self, run_id: str) -> WorkflowRun:
        return await self._call("POST", f"/v1/workflow-runs/{run_id}", WorkflowRun,
                                params={"action": "cancel"})

    async def wait_run(self, run_id: str, timeout: float | None = None) -> RunDetail:
        """The run, with every node, once it is terminal. Raises `TimeoutError` after
        `timeout` seconds.

        A terminal run whose nodes are not all terminal yet is a view read while the
        controller was still storing the last step; the run's next event brings the rest.
        """

        def matches(data: dict) -> bool:  # the run itself, not one of its nodes
            return data.get("runId") == run_id and "node" not in data

        def done(run: RunDetail) -> bool:
            return run.state in RUN_TERMINAL and all(n.state in NODE_TERMINAL for n in run.nodes)

        async with asyncio.timeout(timeout):
            return await self._wait_terminal(
                "runs", lambda: self.get_run(run_id), matches, _RUN_TERMINAL, done)

    # -- discovery
    async def discover(self, service: str, *, version: str | None = None,
                       protocol: ServiceProtocol | str | None = None,
                       include_all: bool = False) -> list[Endpoint]:
        """The service's healthy, fresh endpoints (every one with `include_all`)."""
        params = {"service": service, "version": version,
                  "protocol": ServiceProtocol(protocol) if protocol else None,
                  "all": "true" if include_all else None}
        return await self._call("GET", "/v1/discovery", list[Endpoint], params=params)

    async def discover_one(self, service: str, strategy: Strategy | str | None = None, *,
                           version: str | None = None,
                           protocol: ServiceProtocol | str | None = None) -> Endpoint:
        """One endpoint picked by `strategy` (`round_robin`, `random`, `least_inflight`)."""
        params = {"service": service, "version": version,
                  "protocol": ServiceProtocol(protocol) if protocol else None,
                  "strategy": Strategy(strategy) if strategy else None}
        return await self._call("GET", "/v1/discovery/one", Endpoint, params=params)

    # -- live updates
    async def _wait_terminal(self, topic: str, fetch: Callable[[], Awaitable[T]],
                             matches: Callable[[dict], bool], terminal: frozenset[str],
                             done: Callable[[T], bool]) -> T:
        """Subscribe to `topic`, then read; read again on each event of the object in a
        `terminal` state (or a resync) until `done` holds for what was read."""
        backoff = 0.1
        while True:
            try:
                async with self._events(topic) as events:
                    backoff = 0.1
                    current = await fetch()  # after subscribing: nothing slips between
                    if done(current):
                        return current
                    async for event, data in events:
                        if event == "resync" or (event == topic and matches(data)
                                                 and data.get("state") in terminal):
                            current = await fetch()
                            if done(current):
                                return current
                        elif event == topic and matches(data) and data.get("deleted"):
                            raise PlumApiError(404, ErrorCode.NOT_FOUND, "deleted while waiting")
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                pass
            # The stream ended (the controller stopped): listen again once it is back.
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, _RECONNECT_MAX_SEC)

    @asynccontextmanager
    async def _events(self, *topics: str) -> AsyncIterator[AsyncIterator[tuple[str, Any]]]:
        """`GET /v1/stream?topics=...`, open (the server has subscribed) once this enters."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total)
        async with self._open().get(f"{self.base_url}/v1/stream",
                                    params={"topics": ",".join(topics)},
                                    timeout=timeout) as response:
            if response.status >= 400:
                raise PlumApiError.from_body(response.status, await response.read())
            yield _read_events(response)


async def _read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Server-Sent Events as `(event name, decoded JSON data)`; comments are skipped. Lines
    are split here rather than by `readline`, which refuses lines past 128 KiB."""
    event, data, pending = "message", [], b""
    async for chunk in response.content.iter_any():
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode().rstrip("\r")
            if not line:
                if data:
                    yield event, msgspec.json.decode("\n".join(data))
                event, data = "message", []
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "event":
                    event = value
                elif key == "data":
                    data.append(value)
