"""Dispatch to workers: which worker runs a task, how many each holds, matching answers.

A task goes to a connected worker that serves its name and matches its target (`node`: the
worker's node, `app`: its app name, `worker`: its id), least loaded first. A worker's
capacity bounds the tasks it holds at once. While none can take the task, it waits
`Pending` with the reason shown, in line, until a worker registers or frees a slot (or the
engine's deadline cancels it).

Answers are matched by worker id and task id (and attempt, when the worker echoes it),
never by connection: a worker that reconnects may answer on its new stream for a task sent
on the old one. Links (`WorkerLink`) carry tasks to a worker: the gRPC stream or HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from plum.executors.base import (
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    LogStream,
    TargetKind,
)


class WorkerLink(Protocol):
    """One connection to a worker."""

    def send(self, request: ExecutionRequest) -> None:
        """Start the task on the worker without waiting (gRPC: queue the request)."""

    async def wait(self, dispatch: Dispatch) -> ExecutionResult:
        """The task's result (gRPC: the answer `deliver` matches; HTTP: the response)."""

    def cancel(self, request: ExecutionRequest) -> None:
        """Tell the worker to stop the task; best effort, never blocks."""

    def close(self, reason: str) -> None:
        """End the connection (the worker is removed or went quiet)."""


@dataclass(eq=False, slots=True)
class Dispatch:
    """A task sent to a worker and not answered yet."""

    request: ExecutionRequest
    ctx: ExecutionContext
    link: WorkerLink
    result: asyncio.Future[ExecutionResult]

    @property
    def answered(self) -> bool:
        return self.result.done() and not self.result.cancelled()


@dataclass(eq=False, slots=True)
class WorkerSlot:
    """The pool's view of one worker."""

    worker_id: str
    node_id: str = ""
    app_name: str = ""
    tasks: frozenset[str] = frozenset()
    capacity: int = 1
    link: WorkerLink | None = None
    load: int = 0
    dispatches: dict[str, Dispatch] = field(default_factory=dict)
    turn: int = 0

    def matches(self, request: ExecutionRequest) -> bool:
        if request.name not in self.tasks:
            return False
        match request.target_kind:
            case TargetKind.NODE:
                return self.node_id == request.target_ref
            case TargetKind.APP:
                return self.app_name == request.target_ref
            case TargetKind.WORKER:
                return self.worker_id == request.target_ref
        return True

    @property
    def free(self) -> bool:
        return self.link is not None and self.load < self.capacity


@dataclass(eq=False, slots=True)
class _Waiter:
    request: ExecutionRequest
    slot: asyncio.Future[WorkerSlot]


class WorkerPool:
    def __init__(self) -> None:
        self._slots: dict[str, WorkerSlot] = {}
        self._by_task: dict[str, set[str]] = {}
        self._waiting: dict[_Waiter, None] = {}  # in arrival order
        self._turns = itertools.count(1)

    # -- membership (the registry calls these)
    def slot(self, worker_id: str) -> WorkerSlot | None:
        return self._slots.get(worker_id)

    def load(self, worker_id: str) -> int:
        slot = self._slots.get(worker_id)
        return slot.load if slot is not None else 0

    def update(self, worker_id: str, *, node_id: str, app_name: str, tasks: Iterable[str],
               capacity: int) -> WorkerSlot:
        """Add the worker or change what it serves; its load and dispatches are kept."""
        slot = self._slots.get(worker_id)
        if slot is None:
            slot = self._slots[worker_id] = WorkerSlot(worker_id)
        self._unindex(slot)
        slot.node_id, slot.app_name = node_id, app_name
        slot.tasks, slot.capacity = frozenset(tasks), max(1, capacity)
        for name in slot.tasks:
            self._by_task.setdefault(name, set()).add(worker_id)
        self._offer(slot)
        return slot

    def attach(self, worker_id: str, link: WorkerLink) -> WorkerLink | None:
        """Tasks for the worker now go through `link`; returns the link it replaces."""
        slot = self._slots[worker_id]
        previous, slot.link = slot.link, link
        self._offer(slot)
        return previous if previous is not link else None

    def detach(self, worker_id: str, link: WorkerLink) -> bool:
        """The link is gone; False when it was not the worker's current link any more."""
        slot = self._slots.get(worker_id)
        if slot is None or slot.link is not link:
            return False
        slot.link = None
        return True

    def remove(self, worker_id: str, reason: str) -> WorkerSlot | None:
        slot = self._slots.pop(worker_id, None)
        if slot is None:
            return None
        self._unindex(slot)
        slot.link = None
        for dispatch in list(slot.dispatches.values()):
            self._answer(slot, dispatch, ExecutionResult.failure(reason))
        return slot

    def lose(self, worker_id: str, link: WorkerLink, reason: str) -> list[str]:
        """Fail the tasks sent through `link` that are still unanswered; their ids."""
        slot = self._slots.get(worker_id)
        if slot is None:
            return []
        lost = [d for d in slot.dispatches.values() if d.link is link and not d.result.done()]
        for dispatch in lost:
            self._answer(slot, dispatch, ExecutionResult.failure(reason))
        return [d.request.task_id for d in lost]

    # -- answers from workers
    def find(self, worker_id: str, task_id: str, attempt: int) -> Dispatch | None:
        """The unanswered dispatch to this worker; `attempt` 0 (not echoed) matches any."""
        slot = self._slots.get(worker_id)
        dispatch = slot.dispatches.get(task_id) if slot is not None else None
        if dispatch is None or dispatch.result.done():
            return None
        if attempt and attempt != dispatch.request.attempt:
            return None
        return dispatch

    def deliver(self, worker_id: str, task_id: str, attempt: int,
                result: ExecutionResult) -> bool:
        dispatch = self.find(worker_id, task_id, attempt)
        if dispatch is None:
            return False
        self._answer(self._slots[worker_id], dispatch, result)
        return True

    def log(self, worker_id: str, task_id: str, attempt: int, stream: str, line: str) -> bool:
        dispatch = self.find(worker_id, task_id, attempt)
        if dispatch is None:
            return False
        try:
            kind = LogStream(stream)
        except ValueError:
            kind = LogStream.WORKER
        dispatch.ctx.log(kind, line)
        return True

    # -- running a task
    async def run(self, request: ExecutionRequest, ctx: ExecutionContext) -> ExecutionResult:
        slot = await self._acquire(request, ctx)
        link = slot.link
        assert link is not None
        dispatch = Dispatch(request, ctx, link, asyncio.get_running_loop().create_future())
        slot.dispatches[request.task_id] = dispatch
        try:
            link.send(request)
            await ctx.mark_running(slot.node_id or slot.worker_id)
            return await link.wait(dispatch)
        except asyncio.CancelledError:
            current = slot.link if self._slots.get(slot.worker_id) is slot else None
            if current is not None and not dispatch.answered:
                current.cancel(request)
            raise
        finally:
            self._settle(slot, dispatch)

    async def _acquire(self, request: ExecutionRequest, ctx: ExecutionContext) -> WorkerSlot:
        while True:
            slot = self._pick(request)
            if slot is not None:
                slot.load += 1
            else:
                slot = await self._wait(request, ctx)
            if slot.link is not None and self._slots.get(slot.worker_id) is slot:
                return slot
            self._release(slot)  # it went away between the hand-off and now

    async def _wait(self, request: ExecutionRequest, ctx: ExecutionContext) -> WorkerSlot:
        waiter = _Waiter(request, asyncio.get_running_loop().create_future())
        self._waiting[waiter] = None
        ctx.set_reason(self._reason(request))
        try:
            return await waiter.slot
        except asyncio.CancelledError:
            if waiter.slot.done() and not waiter.slot.cancelled():
                self._release(waiter.slot.result())  # handed a slot, then canceled
            raise
        finally:
            self._waiting.pop(waiter, None)

    def _pick(self, request: ExecutionRequest) -> WorkerSlot | None:
        best: WorkerSlot | None = None
        for worker_id in self._by_task.get(request.name, ()):
            slot = self._slots[worker_id]
            if not slot.free or not slot.matches(request):
                continue
            if best is None or (slot.load / slot.capacity, slot.turn) < (
                best.load / best.capacity, best.turn
            ):
                best = slot
        if best is not None:
            best.turn = next(self._turns)
        return best

    def _answer(self, slot: WorkerSlot, dispatch: Dispatch, result: ExecutionResult) -> None:
        """The worker is done with the task: its slot frees at once, while the engine is
        still storing what happened (so capacity bounds the work at the worker, not the
        store's commits)."""
        if not dispatch.result.done():
            dispatch.result.set_result(result)
        self._settle(slot, dispatch)

    def _settle(self, slot: WorkerSlot, dispatch: Dispatch) -> None:
        if slot.dispatches.get(dispatch.request.task_id) is dispatch:
            del slot.dispatches[dispatch.request.task_id]
            self._release(slot)

    def _release(self, slot: WorkerSlot) -> None:
        slot.load = max(0, slot.load - 1)
        if self._slots.get(slot.worker_id) is slot:
            self._offer(slot)

    def _offer(self, slot: WorkerSlot) -> None:
        """Hand the worker's free slots to the first waiters it can serve."""
        while slot.free and self._waiting:
            waiter = next(
                (w for w in self._waiting if not w.slot.done() and slot.matches(w.request)),
                None,
            )
            if waiter is None:
                return
            del self._waiting[waiter]
            slot.load += 1
            slot.turn = next(self._turns)
            waiter.slot.set_result(slot)

    def _reason(self, request: ExecutionRequest) -> str:
        where = ""
        if request.target_kind in (TargetKind.NODE, TargetKind.APP, TargetKind.WORKER):
            where = f" ({request.target_kind} '{request.target_ref}')"
        connected = any(
            self._slots[w].link is not None and self._slots[w].matches(request)
            for w in self._by_task.get(request.name, ())
        )
        if connected:
            return f"waiting for a free slot on a worker serving '{request.name}'{where}"
        return f"waiting for a worker serving '{request.name}'{where}"

    def _unindex(self, slot: WorkerSlot) -> None:
        for name in slot.tasks:
            serving = self._by_task.get(name)
            if serving is not None:
                serving.discard(slot.worker_id)
                if not serving:
                    del self._by_task[name]
