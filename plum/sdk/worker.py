"""`Worker`: serve tasks by name over the controller's gRPC `TaskStream`.

    worker = Worker()                       # defaults from the env the agent gives apps

    @worker.task("demo.add")
    async def add(payload):                 # or def add(payload, ctx) / a sync function
        return {"sum": payload["a"] + payload["b"]}

    asyncio.run(worker.run(handle_signals=True))

Each stream starts with `register`; the controller then pushes `TaskRequest`s. A handler
gets the decoded JSON payload (and a `TaskContext` when it takes a second argument); its
return value becomes the result, an exception becomes the error with its message. Async
handlers run on the loop, sync ones in a thread pool; at most `capacity` run at once. A
cancel request cancels the handler's asyncio task (a sync handler's thread cannot be
stopped: `ctx.canceled` is set and its result dropped; the process exits only once such a
thread returns, so long sync handlers should check `ctx.canceled`); no result is sent for
a canceled task. Heartbeats go out every `heartbeat_sec`, which must stay below the
controller's `workers.idle_timeout_sec` (90 s by default).

When the stream ends (the controller restarted, the network broke) the worker connects
again with exponential backoff and full jitter. Results finished while disconnected wait
in an outbox and are sent, after `register`, on the next stream; the controller matches
them by worker and task id. `stop()` (or SIGTERM with `run(handle_signals=True)`) drains:
new requests are refused, running tasks get `drain_grace_sec` to finish, their results
are flushed, then `run()` returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import random
import signal
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from plum.clock import Clock, SystemClock
from plum.config import parse_hostport
from plum.ids import new_id
from plum.logging import get_logger
from plum.rpc._proto.plum.task import (
    Heartbeat,
    TaskAck,
    TaskLog,
    TaskRequest,
    TaskResponse,
    WorkerRegister,
)

log = get_logger(__name__)

TASK_STREAM = "/plum.task.TaskService/TaskStream"
DEFAULT_CONTROLLER = "127.0.0.1:9090"
_TRANSPORT_ERRORS = (GRPCError, ProtocolError, StreamTerminatedError, OSError)
_MAX_QUEUED_LINES = 1000
_REMEMBERED_RESULTS = 1000


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: `initial * 2**n` capped at `maximum`, each drawn uniformly from
    `[0, that]` (full jitter) so a fleet of workers does not reconnect in step."""

    initial: float = 0.5
    maximum: float = 30.0

    def delay(self, failures: int) -> float:
        return random.uniform(0, min(self.maximum, self.initial * 2 ** max(0, failures - 1)))


class TaskContext:
    """What a handler may want besides its payload: ids, a log, cancellation."""

    def __init__(self, worker: Worker, task_id: str, name: str, attempt: int):
        self.task_id = task_id
        self.name = name
        self.attempt = attempt
        self.worker_id = worker.worker_id
        self._worker = worker
        self._loop = asyncio.get_running_loop()
        self._canceled = threading.Event()

    @property
    def canceled(self) -> bool:
        """True once the controller canceled this task (for sync handlers to check)."""
        return self._canceled.is_set()

    def log(self, line: str, stream: str = "stdout") -> None:
        """One line of output for `GET /v1/tasks/{id}/logs`. Safe from a handler's thread;
        never blocks (lines beyond a bounded backlog are dropped)."""
        message = TaskAck(log=TaskLog(task_id=self.task_id, attempt=self.attempt,
                                      stream=stream, line=line))
        if _running_loop() is self._loop:
            self._worker._queue_extra(message)
        else:
            self._loop.call_soon_threadsafe(self._worker._queue_extra, message)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a handler's thread
        return None


@dataclass(frozen=True, slots=True)
class _Handler:
    fn: Callable[..., Any]
    is_async: bool
    arity: int  # 0: fn(), 1: fn(payload), 2: fn(payload, ctx)

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> _Handler:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return cls(fn, inspect.iscoroutinefunction(fn), min(len(params), 2))

    async def call(self, payload: Any, ctx: TaskContext, pool: ThreadPoolExecutor) -> Any:
        args = (payload, ctx)[: self.arity]
        if self.is_async:
            return await self.fn(*args)
        run = contextvars.copy_context().run
        value = await asyncio.get_running_loop().run_in_executor(pool, run, self.fn, *args)
        return await value if inspect.isawaitable(value) else value


@dataclass(slots=True)
class _Job:
    task_id: str
    attempt: int
    name: str
    context: TaskContext
    task: asyncio.Task | None = None
    canceled: bool = False

    def response(self, *, result: str = "", error: str = "") -> TaskResponse:
        return TaskResponse(task_id=self.task_id, result=result, error=error,
                            attempt=self.attempt)


@dataclass
class _Outbox:
    """What must reach the controller, in order: results (kept until written to a stream)
    and log lines and heartbeats (bounded: past `_MAX_QUEUED_LINES` waiting, new ones are
    dropped). One queue, so a task's log lines always arrive before its result."""

    queue: deque[tuple[tuple[str, int] | None, TaskAck]] = field(default_factory=deque)
    results: dict[tuple[str, int], TaskResponse] = field(default_factory=dict)
    sent: OrderedDict[tuple[str, int], TaskResponse] = field(default_factory=OrderedDict)
    lines: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    empty: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.empty.set()

    def put_result(self, response: TaskResponse) -> None:
        key = (response.task_id, response.attempt)
        self.results[key] = response
        self.queue.append((key, TaskAck(result=response)))
        self.empty.clear()
        self.wake.set()

    def put_extra(self, message: TaskAck) -> None:
        if self.lines < _MAX_QUEUED_LINES:
            self.lines += 1
            self.queue.append((None, message))
            self.wake.set()

    def mark_sent(self, item: tuple[tuple[str, int] | None, TaskAck]) -> None:
        """`item` (the head of the queue when it was written) went out."""
        if self.queue and self.queue[0] is item:
            self.queue.popleft()
        elif item in self.queue:  # a `drop` rebuilt the queue meanwhile
            self.queue.remove(item)
        key = item[0]
        if key is None:
            self.lines -= 1
            return
        response = self.results.pop(key, None)
        if response is not None:
            self.sent[key] = response
            while len(self.sent) > _REMEMBERED_RESULTS:
                self.sent.popitem(last=False)
        if not self.results:
            self.empty.set()

    def drop(self, task_id: str, attempt: int) -> None:
        """Forget unsent results of a canceled task (`attempt` 0: any attempt)."""
        gone = {k for k in self.results if k[0] == task_id and attempt in (0, k[1])}
        if gone:
            self.queue = deque(item for item in self.queue if item[0] not in gone)
            for key in gone:
                del self.results[key]
            if not self.results:
                self.empty.set()


class Worker:
    """A gRPC stream worker. Arguments left out come from the environment the agent gives
    apps: `CONTROLLER_GRPC_ADDR`, `WORKER_NODE_ID`, `PLUM_INSTANCE_ID`, `PLUM_APP_NAME`,
    `PLUM_APP_VERSION`. The worker id defaults to the instance id, else a random id; it
    stays the same across reconnects."""

    def __init__(self, controller: str | None = None, worker_id: str | None = None, *,
                 capacity: int = 8, node_id: str | None = None, app_name: str | None = None,
                 app_version: str | None = None, instance_id: str | None = None,
                 labels: Mapping[str, str] | None = None, heartbeat_sec: float = 30.0,
                 token: str | None = None, drain_grace_sec: float = 30.0,
                 backoff: Backoff | None = None, clock: Clock | None = None,
                 environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        if capacity < 1:
            raise ValueError("capacity: must be at least 1")
        self.controller = controller or env.get("CONTROLLER_GRPC_ADDR") or DEFAULT_CONTROLLER
        self._host, self._port = parse_hostport(self.controller, "controller")
        self.instance_id = instance_id or env.get("PLUM_INSTANCE_ID", "")
        self.worker_id = worker_id or self.instance_id or new_id()
        self.node_id = node_id or env.get("WORKER_NODE_ID", "")
        self.app_name = app_name or env.get("PLUM_APP_NAME", "")
        self.app_version = app_version or env.get("PLUM_APP_VERSION", "")
        self.capacity = capacity
        self.labels = dict(labels or {})
        self.heartbeat_sec = heartbeat_sec
        self.drain_grace_sec = drain_grace_sec
        self._metadata = {"authorization": f"Bearer {token}"} if token else {}
        self._backoff = backoff or Backoff()
        self._clock = clock or SystemClock()
        self._handlers: dict[str, _Handler] = {}
        self._jobs: dict[str, _Job] = {}
        self.connected = asyncio.Event()  # set while a registered stream is open
        self._stopping = asyncio.Event()
        self._hanging_up = asyncio.Event()
        self._outbox: _Outbox | None = None
        self._job_group: asyncio.TaskGroup | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- registration
    def task(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: serve task `name` with the decorated function (async or sync)."""
        if not name:
            raise ValueError("task name: must not be empty")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._handlers:
                raise ValueError(f"task {name!r} already has a handler")
            self._handlers[name] = _Handler.of(fn)
            return fn

        return register

    @property
    def task_names(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def running_tasks(self) -> int:
        return len(self._jobs)

    async def wait_connected(self) -> None:
        """Until a stream is open and `register` has been sent on it."""
        await self.connected.wait()

    def stop(self) -> None:
        """Begin a graceful drain; `run()` returns once it is done. Stopping twice is
        harmless. Call it from the worker's event loop (signal handlers do)."""
        self._stopping.set()

    # -- the lifecycle
    async def run(self, *, handle_signals: bool = False) -> None:
        """Serve until `stop()` (or SIGTERM/SIGINT with `handle_signals`). A worker runs
        once; make a new one to serve again."""
        if self._outbox is not None:
            raise RuntimeError("this Worker has already run")
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.stop)
        self._outbox = _Outbox()
        self._slots = asyncio.Semaphore(self.capacity)
        self._pool = ThreadPoolExecutor(self.capacity, thread_name_prefix="plum-worker")
        log.info("worker_started", worker_id=self.worker_id, controller=self.controller,
                 tasks=self.task_names, capacity=self.capacity)
        try:
            async with asyncio.TaskGroup() as group:
                self._job_group = group
                link = group.create_task(self._connect_loop(), name="plum-worker-link")
                await self._stopping.wait()
                await self._drain()
                await self._hang_up(link)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.connected.clear()
            log.info("worker_stopped", worker_id=self.worker_id)

    async def _drain(self) -> None:
        """Running tasks get the grace period; then the rest are cancelled (and reported
        as failed). Then their results are flushed: briefly, over the current stream or
        one that comes back meanwhile."""
        jobs = [job.task for job in self._jobs.values() if job.task is not None]
        log.info("worker_draining", worker_id=self.worker_id, running=len(jobs))
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=self.drain_grace_sec)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        assert self._outbox is not None
        try:
            async with asyncio.timeout(min(5.0, max(self.drain_grace_sec, 0.1))):
                await self._outbox.empty.wait()
        except TimeoutError:
            log.warning("worker_results_unsent", worker_id=self.worker_id,
                        count=len(self._outbox.results))

    async def _hang_up(self, link: asyncio.Task) -> None:
        """End the stream politely (the controller then closes its side), briefly."""
        assert self._outbox is not None
        self._hanging_up.set()
        self._outbox.wake.set()
        if self.connected.is_set():
            await asyncio.wait([link], timeout=5.0)
        link.cancel()

    async def _connect_loop(self) -> None:
        failures = 0
        while not self._hanging_up.is_set():
            registered = await self._session()
            if self._hanging_up.is_set():
                return
            failures = 1 if registered else failures + 1
            delay = self._backoff.delay(failures)
            log.info("worker_reconnecting", worker_id=self.worker_id, retry_in=round(delay, 2))
            await self._clock.sleep(delay)

    async def _session(self) -> bool:
        """One stream, from `register` until it ends; True if registration went out."""
        registered = False
        # HTTP/2 pings find a controller that vanished without closing the connection.
        keepalive = Configuration(_keepalive_time=max(self.heartbeat_sec, 10.0),
                                  _keepalive_timeout=20.0,
                                  _keepalive_permit_without_calls=True)
        channel = Channel(self._host, self._port, config=keepalive)
        try:
            async with channel.request(TASK_STREAM, Cardinality.STREAM_STREAM, TaskAck,
                                       TaskRequest, metadata=self._metadata) as stream:
                await stream.send_request()
                await stream.send_message(TaskAck(register=self._register_message()))
                registered = True
                self.connected.set()
                log.info("worker_connected", worker_id=self.worker_id,
                         controller=self.controller, pending_results=len(self._outbox.results))
                async with asyncio.TaskGroup() as group:
                    sender = group.create_task(self._send_loop(stream))
                    beats = group.create_task(self._heartbeat_loop())
                    try:
                        async for request in stream:
                            self._on_request(request)
                    finally:
                        sender.cancel()
                        beats.cancel()
        except* _TRANSPORT_ERRORS as group:
            log.warning("worker_disconnected", worker_id=self.worker_id,
                        error=str(group.exceptions[0]) or type(group.exceptions[0]).__name__)
        finally:
            self.connected.clear()
            channel.close()
        return registered

    def _register_message(self) -> WorkerRegister:
        return WorkerRegister(worker_id=self.worker_id, node_id=self.node_id,
                              instance_id=self.instance_id, app_name=self.app_name,
                              app_version=self.app_version, tasks=self.task_names,
                              labels=self.labels, capacity=self.capacity)

    async def _send_loop(self, stream) -> None:
        outbox = self._outbox
        assert outbox is not None
        while True:
            if outbox.queue:
                item = outbox.queue[0]
                await stream.send_message(item[1])
                outbox.mark_sent(item)
            elif self._hanging_up.is_set():
                await stream.end()
                return
            else:
                outbox.wake.clear()
                await outbox.wake.wait()

    async def _heartbeat_loop(self) -> None:
        beat = TaskAck(heartbeat=Heartbeat(worker_id=self.worker_id))
        while True:  # truly periodic
            await self._clock.sleep(self.heartbeat_sec)
            self._queue_extra(beat)

    def _queue_extra(self, message: TaskAck) -> None:
        if self._outbox is not None:
            self._outbox.put_extra(message)

    # -- requests and jobs
    def _on_request(self, request: TaskRequest) -> None:
        if request.cancel:
            self._cancel(request.task_id, request.attempt)
            return
        outbox = self._outbox
        assert outbox is not None and self._job_group is not None
        key = (request.task_id, request.attempt)
        running = self._jobs.get(request.task_id)
        if key in outbox.results or (running is not None and running.attempt == request.attempt):
            return  # a re-delivery after a reconnect: the result is on its way
        if key in outbox.sent:  # answered on a stream that broke: answer again
            outbox.put_result(outbox.sent[key])
            return
        if running is not None:
            self._cancel(running.task_id, running.attempt)
        job = _Job(request.task_id, request.attempt, request.name,
                   TaskContext(self, request.task_id, request.name, request.attempt))
        if self._stopping.is_set():
            outbox.put_result(job.response(
                error=f"worker {self.worker_id} is shutting down; the task was not started"))
            return
        self._jobs[job.task_id] = job
        job.task = self._job_group.create_task(self._run_job(job, request.payload),
                                               name=f"plum-task-{job.task_id}")

    def _cancel(self, task_id: str, attempt: int) -> None:
        assert self._outbox is not None
        self._outbox.drop(task_id, attempt)  # no result is expected for a canceled task
        job = self._jobs.get(task_id)
        if job is None or attempt not in (0, job.attempt):
            return
        del self._jobs[task_id]
        job.canceled = True
        job.context._canceled.set()
        if job.task is not None:
            job.task.cancel()
        log.info("worker_task_canceled", worker_id=self.worker_id, task_id=task_id,
                 attempt=job.attempt)

    async def _run_job(self, job: _Job, payload: str) -> None:
        assert self._slots is not None and self._outbox is not None
        try:
            async with self._slots:
                response = await self._execute(job, payload)
        except asyncio.CancelledError:
            if not job.canceled:  # the worker is stopping, not the controller canceling
                self._outbox.put_result(
                    job.response(error="the worker stopped before the task finished"))
            raise
        finally:
            if self._jobs.get(job.task_id) is job:
                del self._jobs[job.task_id]
        if not job.canceled:
            self._outbox.put_result(response)

    async def _execute(self, job: _Job, payload_text: str) -> TaskResponse:
        handler = self._handlers.get(job.name)
        if handler is None:
            return job.response(error=f"Unknown task: {job.name}")
        try:
            payload = msgspec.json.decode(payload_text) if payload_text else None
        except msgspec.DecodeError as exc:
            return job.response(error=f"payload is not JSON: {exc}")
        assert self._pool is not None
        try:
            value = await handler.call(payload, job.context, self._pool)
        except Exception as exc:
            log.info("worker_task_failed", worker_id=self.worker_id, task_id=job.task_id,
                     name=job.name, error=repr(exc))
            return job.response(error=str(exc) or type(exc).__name__)
        try:
            return job.response(result=msgspec.json.encode(value).decode())
        except (TypeError, msgspec.EncodeError) as exc:
            return job.response(error=f"the result is not JSON-serializable: {exc}")
