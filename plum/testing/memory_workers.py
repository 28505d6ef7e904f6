"""In-memory workers (the `MemoryStore` mixin)."""

from __future__ import annotations

import itertools

import msgspec

from plum.errors import NotFound
from plum.store.base import Page
from plum.workers.model import Transport, Worker


class MemoryWorkers:
    def _init_workers(self) -> None:
        # worker id -> (insertion order, worker); a replaced worker keeps its order.
        self._workers: dict[str, tuple[int, Worker]] = {}
        self._worker_order = itertools.count(1)

    async def upsert_worker(self, worker: Worker) -> None:
        order = self._workers.get(worker.worker_id, (None,))[0]
        stored = msgspec.structs.replace(worker, inflight=0)
        self._workers[worker.worker_id] = (order or next(self._worker_order), stored)

    async def get_worker(self, worker_id: str) -> Worker:
        try:
            return self._workers[worker_id][1]
        except KeyError:
            raise NotFound(f"worker {worker_id!r} not found", field="workerId") from None

    async def list_workers(
        self, *, transport: Transport | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Worker]:
        rows = [
            (order, w) for order, w in self._workers.values()
            if transport is None or w.transport == transport
        ]
        rows.sort(key=lambda row: (-row[1].registered_at, -row[0]))
        return Page([w for _, w in rows[offset : offset + limit]], len(rows))

    async def delete_worker(self, worker_id: str) -> None:
        if self._workers.pop(worker_id, None) is None:
            raise NotFound(f"worker {worker_id!r} not found", field="workerId")
