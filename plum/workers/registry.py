"""The worker registry: who registered, whether they are alive, what they hold.

A gRPC worker is `Healthy` while its `TaskStream` is open and it sends something (a result,
a log line, its 30 s heartbeat) at least every `idle_timeout` seconds; when its stream ends
it is `Unhealthy` at once, and when it goes quiet the controller ends its stream. HTTP
workers, and gRPC workers registered over REST without a stream, are `Healthy` while they
heartbeat within `idle_timeout`. Timers on the clock, not polling, notice the silence.

When a stream ends, the tasks sent on it stay in flight for `reconnect_grace` seconds: a
worker that reconnects may still answer them on its new stream. After that they are lost,
and the engine retries or fails them ("worker lost").

Records live in memory (reads never touch the store); every change is applied in memory,
stored, then published. What a worker holds in flight is never stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from plum.bus import Bus, WorkerChanged, WorkerRemoved
from plum.clock import Clock, TimerHandle
from plum.engine.model import Health
from plum.errors import Conflict, NotFound
from plum.executors.workers import WorkerLink, WorkerPool
from plum.logging import get_logger
from plum.store.base import Page, WorkerRepo
from plum.workers.http import HttpLink, HttpWorkers
from plum.workers.model import HttpWorkerRegistration, Transport, Worker, WorkerRegistration

log = get_logger(__name__)

WORKER_LOST = "worker lost"


class WorkerRegistry:
    def __init__(
        self,
        store: WorkerRepo,
        bus: Bus,
        clock: Clock,
        pool: WorkerPool,
        *,
        default_capacity: int = 8,
        idle_timeout: float = 90.0,
        reconnect_grace: float = 10.0,
        http: HttpWorkers | None = None,
    ):
        self._store = store
        self._bus = bus
        self._clock = clock
        self.pool = pool
        self._default_capacity = default_capacity
        self._idle = idle_timeout
        self._grace = reconnect_grace
        self._http = http or HttpWorkers()
        self._workers: dict[str, Worker] = {}
        self._last_seen: dict[str, float] = {}
        self._http_links: dict[str, HttpLink] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._grace_timers: set[TimerHandle] = set()
        self._tg: asyncio.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WorkerRegistry]:
        async with self._http, asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                await self._load()
                yield self
            finally:
                self._tg = None
                for timer in [*self._timers.values(), *self._grace_timers]:
                    timer.cancel()
                self._timers.clear()
                self._grace_timers.clear()

    async def _load(self) -> None:
        offset = 0
        while True:
            page = await self._store.list_workers(limit=1000, offset=offset)
            for worker in page.items:
                await self._restore(worker)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    async def _restore(self, worker: Worker) -> None:
        """A stored worker after a restart: gRPC workers have no stream yet; HTTP workers
        stay as they were until their heartbeats stop."""
        wid = worker.worker_id
        self._workers[wid] = worker
        self._last_seen[wid] = worker.last_seen
        self.pool.update(wid, node_id=worker.node_id, app_name=worker.app_name,
                         tasks=worker.tasks, capacity=worker.capacity)
        if worker.transport == Transport.HTTP:
            self._http_links[wid] = self._http.link(wid, worker.url, self._unreachable)
        if worker.health != Health.HEALTHY:
            return
        if worker.transport == Transport.GRPC:
            self._workers[wid] = msgspec.structs.replace(worker, health=Health.UNHEALTHY)
            await self._store.upsert_worker(self._workers[wid])
        else:
            self.pool.attach(wid, self._http_links[wid])
            self._arm(wid)

    # -- registration
    async def register(self, reg: WorkerRegistration, link: WorkerLink | None = None) -> Worker:
        """A gRPC worker: on its stream (`link`), or over REST (no link: the stream comes
        separately)."""
        existing = self._check_transport(reg.worker_id, Transport.GRPC)
        worker = self._record(
            existing, reg.worker_id, Transport.GRPC, node_id=reg.node_id,
            instance_id=reg.instance_id, app_name=reg.app_name, app_version=reg.app_version,
            tasks=reg.tasks, labels=reg.labels, capacity=reg.capacity,
        )
        self._http_links.pop(reg.worker_id, None)
        replaced = self._apply(worker)
        if link is not None:
            self.pool.attach(worker.worker_id, link)
            if replaced is not None and replaced is not link:
                replaced.close("replaced by a new stream")
                self.disconnected(worker.worker_id, replaced)
        elif replaced is not None and not isinstance(replaced, HttpLink):
            self.pool.attach(worker.worker_id, replaced)  # keep the open stream
        log.info("worker_registered", worker_id=worker.worker_id, transport="grpc",
                 stream=link is not None, tasks=worker.tasks, capacity=worker.capacity)
        return await self._persist(worker.worker_id)

    async def register_http(self, reg: HttpWorkerRegistration) -> Worker:
        existing = self._check_transport(reg.worker_id, Transport.HTTP)
        worker = self._record(
            existing, reg.worker_id, Transport.HTTP, node_id=reg.node_id, url=reg.url,
            tasks=reg.tasks, labels=reg.labels, capacity=reg.capacity,
        )
        self._apply(worker)
        link = self._http_links[worker.worker_id] = self._http.link(
            worker.worker_id, worker.url, self._unreachable)
        self.pool.attach(worker.worker_id, link)
        log.info("worker_registered", worker_id=worker.worker_id, transport="http",
                 url=worker.url, tasks=worker.tasks, capacity=worker.capacity)
        return await self._persist(worker.worker_id)

    def _check_transport(self, worker_id: str, transport: Transport) -> Worker | None:
        existing = self._workers.get(worker_id)
        if existing is not None and existing.transport != transport \
                and existing.health == Health.HEALTHY:
            raise Conflict(
                f"worker {worker_id!r} is registered as a healthy "
                f"{existing.transport.value} worker", field="workerId")
        return existing

    def _record(self, existing: Worker | None, worker_id: str, transport: Transport, *,
                capacity: int, **fields: Any) -> Worker:
        now = self._clock.now()
        return Worker(
            worker_id=worker_id, transport=transport, capacity=capacity or self._default_capacity,
            health=Health.HEALTHY, last_seen=round(now, 3),
            registered_at=existing.registered_at if existing else round(now, 3), **fields,
        )

    def _apply(self, worker: Worker) -> WorkerLink | None:
        """Take the new record in memory; returns the link the worker had."""
        wid = worker.worker_id
        self._workers[wid] = worker
        self._last_seen[wid] = self._clock.now()
        slot = self.pool.slot(wid)
        previous = slot.link if slot is not None else None
        if previous is not None:
            self.pool.detach(wid, previous)  # nothing goes out on it while it changes
        self.pool.update(wid, node_id=worker.node_id, app_name=worker.app_name,
                         tasks=worker.tasks, capacity=worker.capacity)
        self._arm(wid)
        return previous

    async def heartbeat(self, worker_id: str, transport: Transport | None = None) -> Worker:
        worker = self._require(worker_id, transport)
        self._last_seen[worker_id] = self._clock.now()
        if worker.health != Health.HEALTHY:
            link = self._http_links.get(worker_id)
            if link is not None:
                self.pool.attach(worker_id, link)
            self._workers[worker_id] = msgspec.structs.replace(worker, health=Health.HEALTHY)
            log.info("worker_healthy", worker_id=worker_id)
        self._arm(worker_id)
        return await self._persist(worker_id)

    def seen(self, worker_id: str) -> None:
        """Any message from the worker: it is alive (kept in memory only)."""
        self._last_seen[worker_id] = self._clock.now()

    # -- losing workers
    def disconnected(self, worker_id: str, link: WorkerLink) -> None:
        """The link ended (stream closed, worker quiet or unreachable). Its unanswered
        tasks get `reconnect_grace` seconds to be answered on a new stream."""
        current = self.pool.detach(worker_id, link)
        slot = self.pool.slot(worker_id)
        # (HTTP calls in flight end by themselves: answered, refused, or timed out.)
        if slot is not None and not isinstance(link, HttpLink) \
                and any(d.link is link for d in slot.dispatches.values()):
            self._arm_grace(worker_id, link)
        worker = self._workers.get(worker_id)
        if current and worker is not None and worker.health == Health.HEALTHY:
            self._workers[worker_id] = msgspec.structs.replace(worker, health=Health.UNHEALTHY)
            log.warning("worker_unhealthy", worker_id=worker_id,
                        inflight=self.pool.load(worker_id))
            self._spawn(self._persist(worker_id))

    def _arm_grace(self, worker_id: str, link: WorkerLink) -> None:
        def expire() -> None:
            self._grace_timers.discard(timer)
            lost = self.pool.lose(worker_id, link, WORKER_LOST)
            if lost:
                log.warning("worker_tasks_lost", worker_id=worker_id, task_ids=lost)

        timer = self._clock.call_at(self._clock.now() + self._grace, expire)
        self._grace_timers.add(timer)

    def _unreachable(self, worker_id: str, link: HttpLink, reason: str) -> None:
        log.warning("worker_unreachable", worker_id=worker_id, url=link.url, error=reason)
        self.disconnected(worker_id, link)

    def _arm(self, worker_id: str) -> None:
        timer = self._timers.pop(worker_id, None)
        if timer is not None:
            timer.cancel()
        when = self._last_seen[worker_id] + self._idle
        self._timers[worker_id] = self._clock.call_at(when, self._check_idle, worker_id)

    def _check_idle(self, worker_id: str) -> None:
        self._timers.pop(worker_id, None)
        worker = self._workers.get(worker_id)
        if worker is None or worker.health != Health.HEALTHY:
            return
        if self._clock.now() < self._last_seen[worker_id] + self._idle:
            self._arm(worker_id)  # it spoke after the timer was armed
            return
        log.warning("worker_idle", worker_id=worker_id, idle_timeout=self._idle)
        slot = self.pool.slot(worker_id)
        link = slot.link if slot is not None else None
        if link is not None:
            link.close(f"no message from the worker for {self._idle:g}s")
            self.disconnected(worker_id, link)
            return
        self._workers[worker_id] = msgspec.structs.replace(worker, health=Health.UNHEALTHY)
        self._spawn(self._persist(worker_id))

    async def remove(self, worker_id: str, transport: Transport | None = None) -> None:
        self._require(worker_id, transport)
        slot = self.pool.slot(worker_id)
        link = slot.link if slot is not None else None
        self.pool.remove(worker_id, "worker removed")
        if link is not None:
            link.close("worker removed")
        for mapping in (self._workers, self._last_seen, self._http_links):
            mapping.pop(worker_id, None)
        timer = self._timers.pop(worker_id, None)
        if timer is not None:
            timer.cancel()
        try:
            await self._store.delete_worker(worker_id)
        except NotFound:
            pass  # registered and removed before its first write landed
        log.info("worker_removed", worker_id=worker_id)
        self._bus.publish(WorkerRemoved(worker_id))

    # -- reading
    def get(self, worker_id: str, transport: Transport | None = None) -> Worker:
        return self._view(self._require(worker_id, transport))

    def find(self, worker_id: str) -> Worker | None:
        worker = self._workers.get(worker_id)
        return self._view(worker) if worker is not None else None

    def list(self, *, transport: Transport | None = None, limit: int = 100,
             offset: int = 0) -> Page[Worker]:
        chosen = [
            w for w in self._workers.values() if transport is None or w.transport == transport
        ]
        chosen.sort(key=lambda w: w.registered_at, reverse=True)
        return Page([self._view(w) for w in chosen[offset : offset + limit]], len(chosen))

    def _view(self, worker: Worker) -> Worker:
        wid = worker.worker_id
        return msgspec.structs.replace(
            worker, inflight=self.pool.load(wid),
            last_seen=round(self._last_seen.get(wid, worker.last_seen), 3),
        )

    def _require(self, worker_id: str, transport: Transport | None) -> Worker:
        worker = self._workers.get(worker_id)
        if worker is None or (transport is not None and worker.transport != transport):
            raise NotFound(f"worker {worker_id!r} not found", field="workerId")
        return worker

    # -- storing
    async def _persist(self, worker_id: str) -> Worker:
        """Store the worker as memory has it now, then publish it."""
        worker = self._workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id!r} not found", field="workerId")
        view = self._view(worker)
        await self._store.upsert_worker(view)
        self._bus.publish(WorkerChanged(view))
        return view

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._tg is None:
            coro.close()
            return
        self._tg.create_task(_logged(coro))


async def _logged(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except NotFound:
        pass  # removed meanwhile
    except Exception:
        log.exception("worker_change_not_stored")
