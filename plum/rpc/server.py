"""The controller's gRPC server: `plum.task.TaskService` for workers (grpclib).

`TaskStream`: the worker's first message is `register`; the controller then pushes
`TaskRequest`s (with `attempt`; `cancel: true` with an empty name to stop one) and the
worker sends results, log lines and heartbeats. An original worker that does not know
`cancel` answers such a request with an `Unknown task` error, which is ignored. Results are
matched by worker id and task id (and attempt when echoed), never by stream; a result that
matches nothing in flight here goes to the engine, whose attempt fence decides.

Liveness: original C++ workers never half-close, set no deadline and send no keepalive
pings; their only idle traffic is a heartbeat every 30 s. The registry ends a stream that
has been silent for `workers.idle_timeout_sec`; the server's own HTTP/2 pings notice dead
connections sooner.

`ExecuteTask` runs a task by name through the engine and answers when it ends;
`HealthCheck` answers for the controller (no worker id) or for one worker.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import betterproto2
import grpclib.const
import grpclib.server
import msgspec
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plum.bus import Bus, TaskChanged
from plum.engine.model import Health
from plum.engine.orchestrator import TaskEngine
from plum.engine.tasks import TaskRun, TaskState
from plum.errors import PlumError
from plum.executors.base import ExecutionRequest, ExecutionResult
from plum.executors.workers import Dispatch
from plum.logging import get_logger
from plum.rpc._proto.plum.task import (
    HealthRequest,
    HealthResponse,
    TaskAck,
    TaskRequest,
    TaskResponse,
    WorkerRegister,
)
from plum.rpc.errors import grpc_error
from plum.taskservice import TaskService
from plum.workers.model import WorkerRegistration
from plum.workers.registry import WorkerRegistry

log = get_logger(__name__)

SERVICE = "/plum.task.TaskService"


class StreamLink:
    """A worker's open `TaskStream`, as a `WorkerLink`: requests queue up and one writer
    sends them, so dispatching never waits on the network."""

    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self._outbox: asyncio.Queue[TaskRequest] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.reason: str | None = None

    def send(self, request: ExecutionRequest) -> None:
        payload = b"{}" if request.payload is None else msgspec.json.encode(request.payload)
        self._outbox.put_nowait(TaskRequest(
            task_id=request.task_id, name=request.name, payload=payload.decode(),
            attempt=request.attempt,
        ))

    async def wait(self, dispatch: Dispatch) -> ExecutionResult:
        return await dispatch.result

    def cancel(self, request: ExecutionRequest) -> None:
        self._outbox.put_nowait(
            TaskRequest(task_id=request.task_id, attempt=request.attempt, cancel=True))

    def close(self, reason: str) -> None:
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()

    async def write(self, stream: grpclib.server.Stream) -> None:
        try:
            while True:
                await stream.send_message(await self._outbox.get())
        except Exception as exc:  # the connection broke: the stream is over
            log.info("worker_stream_write_failed", worker_id=self.worker_id, error=repr(exc))
        finally:
            self.ended.set()


class TaskServiceHandler:
    """`plum.task.TaskService`, served by grpclib (`__mapping__` is its servable protocol)."""

    def __init__(self, registry: WorkerRegistry, engine: TaskEngine, tasks: TaskService,
                 bus: Bus, *, auth_tokens: tuple[str, ...] = ()):
        self._registry = registry
        self._engine = engine
        self._tasks = tasks
        self._bus = bus
        self._tokens = [t.encode() for t in auth_tokens]

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        card = grpclib.const.Cardinality
        return {
            f"{SERVICE}/TaskStream": grpclib.const.Handler(
                self.task_stream, card.STREAM_STREAM, TaskAck, TaskRequest),
            f"{SERVICE}/ExecuteTask": grpclib.const.Handler(
                self.execute_task, card.UNARY_UNARY, TaskRequest, TaskResponse),
            f"{SERVICE}/HealthCheck": grpclib.const.Handler(
                self.health_check, card.UNARY_UNARY, HealthRequest, HealthResponse),
        }

    def _authorize(self, stream: grpclib.server.Stream) -> None:
        if not self._tokens:
            return
        header = (stream.metadata or {}).get("authorization", "")
        scheme, _, credential = str(header).partition(" ")
        raw = credential.strip().encode()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(raw, t)
                                                  for t in self._tokens):
            raise GRPCError(Status.UNAUTHENTICATED, "missing or wrong bearer token")

    # -- TaskStream
    async def task_stream(self, stream: grpclib.server.Stream) -> None:
        self._authorize(stream)
        first = await stream.recv_message()
        if first is None:
            return
        kind, register = betterproto2.which_one_of(first, "payload")
        if kind != "register" or not register.worker_id:
            raise GRPCError(Status.FAILED_PRECONDITION,
                            "the first TaskStream message must be register, with a worker_id")
        worker_id = register.worker_id
        link = StreamLink(worker_id)
        try:
            await self._registry.register(_registration(register), link)
        except PlumError as exc:
            raise grpc_error(exc) from None
        log.info("worker_stream_opened", worker_id=worker_id, peer=str(stream.peer.addr()))
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(link.write(stream))
                reader = tg.create_task(self._read(stream, link))
                await link.ended.wait()
                writer.cancel()
                reader.cancel()
        finally:
            self._registry.disconnected(worker_id, link)
            log.info("worker_stream_closed", worker_id=worker_id, reason=link.reason)
        if link.reason is not None:
            raise GRPCError(Status.UNAVAILABLE, link.reason)

    async def _read(self, stream: grpclib.server.Stream, link: StreamLink) -> None:
        worker_id = link.worker_id
        try:
            async for ack in stream:
                self._registry.seen(worker_id)
                kind, value = betterproto2.which_one_of(ack, "payload")
                match kind:
                    case "result":
                        await self._result(worker_id, value)
                    case "log":
                        self._registry.pool.log(worker_id, value.task_id, value.attempt,
                                                value.stream, value.line)
                    case "heartbeat":
                        await self._registry.heartbeat(worker_id)
                    case "register" if value.worker_id == worker_id:
                        await self._registry.register(_registration(value), link)
                    case "register":
                        link.close("a stream serves one worker id")
                        return
        except PlumError as exc:  # the worker was removed meanwhile
            log.info("worker_stream_refused", worker_id=worker_id, error=exc.message)
        except Exception as exc:  # the connection broke: the stream is over
            log.info("worker_stream_read_failed", worker_id=worker_id, error=repr(exc))
        finally:
            link.ended.set()

    async def _result(self, worker_id: str, response: TaskResponse) -> None:
        result = to_result(response)
        if self._registry.pool.deliver(worker_id, response.task_id, response.attempt, result):
            return
        if response.attempt > 0:  # not in flight here (a restart, a late answer): fenced
            await self._engine.report(response.task_id, response.attempt, result)
        else:
            log.info("worker_result_unmatched", worker_id=worker_id, task_id=response.task_id)

    # -- ExecuteTask, HealthCheck
    async def execute_task(self, stream: grpclib.server.Stream) -> None:
        self._authorize(stream)
        request = await stream.recv_message()
        assert request is not None
        try:
            task = await self._run_to_end(request.name, _payload(request.payload))
        except PlumError as exc:
            raise grpc_error(exc) from None
        await stream.send_message(to_response(task))

    async def _run_to_end(self, name: str, payload: Any) -> TaskRun:
        wanted: list[str] = []
        ended = self._bus.wait_for(
            lambda e: isinstance(e, TaskChanged) and e.task.terminal
            and bool(wanted) and e.task.task_id == wanted[0])
        try:
            task = await self._tasks.run_named(name, payload)
            wanted.append(task.task_id)
            if task.terminal:
                return task
            if self._engine.get_active(task.task_id) is None:
                return await self._tasks.get_task(task.task_id)
            return (await ended).task
        except asyncio.CancelledError:
            if wanted:  # the caller went away: so does its task
                with suppress(PlumError):
                    await asyncio.shield(self._engine.cancel(wanted[0], "caller went away"))
            raise
        finally:
            ended.cancel()

    async def health_check(self, stream: grpclib.server.Stream) -> None:
        self._authorize(stream)
        request = await stream.recv_message()
        assert request is not None
        if not request.worker_id:
            response = HealthResponse(healthy=True, message="ok")
        elif (worker := self._registry.find(request.worker_id)) is None:
            response = HealthResponse(healthy=False, message="unknown worker")
        else:
            response = HealthResponse(healthy=worker.health == Health.HEALTHY,
                                      message=worker.health.value)
        await stream.send_message(response)


def _registration(message: WorkerRegister) -> WorkerRegistration:
    return WorkerRegistration(
        worker_id=message.worker_id, node_id=message.node_id, instance_id=message.instance_id,
        app_name=message.app_name, app_version=message.app_version, tasks=list(message.tasks),
        labels=dict(message.labels), capacity=max(0, message.capacity),
    )


def decode_json_text(text: str) -> Any:
    """A worker's result text: JSON when it parses, else kept as a string."""
    if not text:
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def to_result(response: TaskResponse) -> ExecutionResult:
    result = decode_json_text(response.result)
    if response.error:
        return ExecutionResult.failure(response.error, result)
    return ExecutionResult.success(result)


def to_response(task: TaskRun) -> TaskResponse:
    result = "" if task.result is None else msgspec.json.encode(task.result).decode()
    error = "" if task.state == TaskState.SUCCEEDED else (task.error or task.state.value)
    return TaskResponse(task_id=task.task_id, result=result, error=error, attempt=task.attempt)


def _payload(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, f"payload: not JSON: {exc}") from None


def server_config(ping_interval: float) -> Configuration:
    """Ping idle connections every `ping_interval` seconds and drop those that do not answer
    within 20 s; never stop pinging for lack of data (workers may be quiet for 30 s)."""
    return Configuration(
        _keepalive_time=ping_interval,
        _keepalive_timeout=20.0,
        _keepalive_permit_without_calls=True,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=ping_interval,
    )


@asynccontextmanager
async def serve_grpc(handler: TaskServiceHandler, host: str, port: int, *,
                     ping_interval: float = 10.0) -> AsyncIterator[str]:
    """Serve until the context exits; on exit every stream ends (workers reconnect to the
    next controller). Yields `host:port` as bound (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    server = grpclib.server.Server([handler], config=server_config(ping_interval))
    await server.start(sock=sock)
    shown = f"[{host}]" if ":" in host else host
    address = f"{shown}:{bound_port}"
    log.info("grpc_listening", addr=address)
    try:
        yield address
    finally:
        server.close()
        await server.wait_closed()
