"""The in-process event bus: the one way news travels.

`publish()` never blocks and never fails because of a consumer. Each subscriber has a
bounded queue; one that falls behind loses its backlog and gets a `RESYNC` marker instead,
so it knows to refetch state rather than trust a gapped stream. Every event gets a sequence
number (`seq`), which SSE uses as `id:`; a short history lets a reconnecting client resume
with `Last-Event-ID` without gaps, or be told to resync when the gap is too old.

Sequence numbers start at the clock's microseconds, so an id handed out by an earlier
process is always older than this process's history and resumes as a resync.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import msgspec

from plum.clock import Clock
from plum.discovery.model import Endpoint
from plum.engine.deployments import Deployment, Instance
from plum.engine.machine import NodeRecord, WorkflowRun
from plum.engine.model import Node
from plum.engine.schedules import Schedule
from plum.engine.tasks import TaskRun
from plum.workers.model import Worker


class Event(msgspec.Struct, frozen=True):
    """Base of bus events. `topic` names the SSE topic; `data()` is what SSE sends."""

    TOPIC: ClassVar[str] = ""

    @property
    def topic(self) -> str:
        return self.TOPIC

    def data(self) -> Any:
        return self


class NodeChanged(Event, frozen=True):
    TOPIC: ClassVar[str] = "nodes"
    node: Node

    def data(self) -> Any:
        return self.node


class Removed(Event, frozen=True, rename="camel"):
    """Something was deleted: SSE sends its id fields (camelCase) with `deleted: true`."""

    def data(self) -> Any:
        return {**msgspec.to_builtins(self), "deleted": True}


class TaskChanged(Event, frozen=True):
    TOPIC: ClassVar[str] = "tasks"
    task: TaskRun

    def data(self) -> Any:
        return self.task


class TaskRemoved(Removed, frozen=True):
    TOPIC: ClassVar[str] = "tasks"
    task_id: str


class RunUpdated(Event, frozen=True):
    """A workflow run's own state changed."""

    TOPIC: ClassVar[str] = "runs"
    run: WorkflowRun

    def data(self) -> Any:
        return self.run


class RunNodeChanged(Event, frozen=True):
    """One node of a workflow run changed (one event per node transition)."""

    TOPIC: ClassVar[str] = "runs"
    run_id: str
    workflow_id: str
    node: NodeRecord

    def data(self) -> Any:
        return {"runId": self.run_id, "workflowId": self.workflow_id, "node": self.node}


class NodeRemoved(Removed, frozen=True):
    TOPIC: ClassVar[str] = "nodes"
    node_id: str


class ServiceChanged(Event, frozen=True):
    """An endpoint was registered, refreshed, or flipped health; `removed` when it is gone."""

    TOPIC: ClassVar[str] = "services"
    endpoint: Endpoint
    removed: bool = False

    def data(self) -> Any:
        if not self.removed:
            return self.endpoint
        return {**msgspec.to_builtins(self.endpoint), "deleted": True}


class ScheduleChanged(Event, frozen=True):
    """A schedule was created, changed, or fired."""

    TOPIC: ClassVar[str] = "schedules"
    schedule: Schedule

    def data(self) -> Any:
        return self.schedule


class ScheduleRemoved(Removed, frozen=True):
    TOPIC: ClassVar[str] = "schedules"
    schedule_id: str


class DeploymentChanged(Event, frozen=True):
    """A deployment was created, changed, started, stopped or scaled."""

    TOPIC: ClassVar[str] = "deployments"
    deployment: Deployment

    def data(self) -> Any:
        return self.deployment


class DeploymentRemoved(Removed, frozen=True):
    TOPIC: ClassVar[str] = "deployments"
    deployment_id: str


class InstanceChanged(Event, frozen=True):
    """An instance was created, reported on, or (`assignment`) wants a new state, which its
    node's agent is told about."""

    TOPIC: ClassVar[str] = "instances"
    instance: Instance
    assignment: bool = False

    def data(self) -> Any:
        return self.instance


class InstanceRemoved(Removed, frozen=True):
    TOPIC: ClassVar[str] = "instances"
    instance_id: str
    deployment_id: str
    node_id: str


class WorkerChanged(Event, frozen=True):
    """A worker registered, heartbeat, or flipped health."""

    TOPIC: ClassVar[str] = "workers"
    worker: Worker

    def data(self) -> Any:
        return self.worker


class WorkerRemoved(Removed, frozen=True):
    TOPIC: ClassVar[str] = "workers"
    worker_id: str


@dataclass(frozen=True, slots=True)
class Envelope:
    seq: int
    event: Event


class _Resync:
    def __repr__(self) -> str:
        return "RESYNC"


class _End:
    def __repr__(self) -> str:
        return "END"


RESYNC: Final = _Resync()
END: Final = _End()


def topic_matches(wanted: frozenset[str] | None, topic: str) -> bool:
    """`None` wants everything; `kv` wants every `kv:<ns>` topic."""
    if wanted is None or topic in wanted:
        return True
    family, sep, _ = topic.partition(":")
    return bool(sep) and family in wanted


class Subscription:
    """A bounded queue of envelopes for one consumer. Iterate it; close it when done."""

    def __init__(self, bus: Bus, topics: frozenset[str] | None, maxsize: int):
        self._bus = bus
        self.topics = topics
        self._queue: asyncio.Queue[Envelope | _Resync | _End] = asyncio.Queue(maxsize + 1)
        self._maxsize = maxsize
        self.closed = False

    def offer(self, item: Envelope | _Resync) -> None:
        if isinstance(item, Envelope) and not topic_matches(self.topics, item.event.topic):
            return
        self.deliver(item)

    def deliver(self, item: Envelope | _Resync) -> None:
        """Queue an item already known to match (the bus routes by topic)."""
        if self.closed:
            return
        if self._queue.qsize() >= self._maxsize:
            self._drop_backlog()
        else:
            self._queue.put_nowait(item)

    def _drop_backlog(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(RESYNC)
        self._bus.resyncs += 1

    def end(self) -> None:
        """Tell the consumer to finish (server shutdown): it gets `END` next."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(END)
        self.closed = True

    async def get(self) -> Envelope | _Resync | _End:
        return await self._queue.get()

    def get_nowait(self) -> Envelope | _Resync | _End:
        return self._queue.get_nowait()

    def pending(self) -> int:
        return self._queue.qsize()

    def __aiter__(self):
        return self

    async def __anext__(self) -> Envelope | _Resync | _End:
        return await self.get()

    def close(self) -> None:
        self.closed = True
        self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Bus:
    def __init__(self, clock: Clock, *, history: int = 10_000, queue_size: int = 1_000):
        self._seq = int(clock.now() * 1_000_000)
        self._history: deque[Envelope] = deque(maxlen=history)
        self._subs: set[Subscription] = set()
        # Routing: subscribers by wanted topic (or topic family, `kv`), and those wanting all,
        # so a publish touches only the subscribers that want it.
        self._by_topic: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._waiters: list[tuple[Callable[[Event], bool], asyncio.Future]] = []
        self._queue_size = queue_size
        self.published = 0
        self.resyncs = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, event: Event) -> int:
        self._seq += 1
        envelope = Envelope(self._seq, event)
        self._history.append(envelope)
        self.published += 1
        for sub in self._targets(event.topic):
            sub.deliver(envelope)
        if self._waiters:
            self._notify_waiters(event)
        return self._seq

    def subscribe(
        self,
        topics: Iterable[str] | None = None,
        *,
        since: int | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        """Subscribe now; with `since`, first replay what came after that sequence number."""
        wanted = frozenset(topics) if topics is not None else None
        sub = Subscription(self, wanted, maxsize or self._queue_size)
        if since is not None and since < self._seq:
            oldest = self._history[0].seq if self._history else self._seq + 1
            if since + 1 < oldest:
                sub.offer(RESYNC)
            for envelope in self._history:
                if envelope.seq > since:
                    sub.offer(envelope)
        elif since is not None and since > self._seq:
            sub.offer(RESYNC)
        self._subs.add(sub)
        if wanted is None:
            self._everything.add(sub)
        for topic in wanted or ():
            self._by_topic.setdefault(topic, set()).add(sub)
        return sub

    def _targets(self, topic: str) -> set[Subscription] | tuple[Subscription, ...]:
        exact = self._by_topic.get(topic)
        family_name, sep, _ = topic.partition(":")
        family = self._by_topic.get(family_name) if sep else None
        if not (self._everything or family):
            return tuple(exact) if exact else ()
        return self._everything | (exact or set()) | (family or set())

    def _remove(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        self._everything.discard(sub)
        for topic in sub.topics or ():
            subs = self._by_topic.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_topic[topic]

    def wait_for(self, predicate: Callable[[Event], bool]) -> asyncio.Future:
        """A future resolved with the first event published from now on that matches."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return future

    def _notify_waiters(self, event: Event) -> None:
        keep = []
        for predicate, future in self._waiters:
            if future.done():
                continue
            if predicate(event):
                future.set_result(event)
            else:
                keep.append((predicate, future))
        self._waiters = keep
