"""Registered workers."""

from __future__ import annotations

import sqlite3

import msgspec

from plum.engine.model import Health
from plum.errors import NotFound
from plum.store.base import Page
from plum.workers.model import Transport, Worker

_COLUMNS = (
    "worker_id, transport, node_id, instance_id, app_name, app_version, url, tasks, labels, "
    "capacity, health, last_seen, registered_at"
)
_UPSERT = (
    f"INSERT INTO workers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(worker_id) DO UPDATE SET transport = excluded.transport, "
    "node_id = excluded.node_id, instance_id = excluded.instance_id, "
    "app_name = excluded.app_name, app_version = excluded.app_version, url = excluded.url, "
    "tasks = excluded.tasks, labels = excluded.labels, capacity = excluded.capacity, "
    "health = excluded.health, last_seen = excluded.last_seen, "
    "registered_at = excluded.registered_at"
)
_tasks_decoder = msgspec.json.Decoder(list[str])
_labels_decoder = msgspec.json.Decoder(dict[str, str])


def _params(w: Worker) -> tuple:
    return (
        w.worker_id,
        w.transport.value,
        w.node_id,
        w.instance_id,
        w.app_name,
        w.app_version,
        w.url,
        msgspec.json.encode(w.tasks).decode(),
        msgspec.json.encode(w.labels).decode(),
        w.capacity,
        w.health.value,
        w.last_seen,
        w.registered_at,
    )


def _worker(row: tuple) -> Worker:
    (worker_id, transport, node_id, instance_id, app_name, app_version, url, tasks, labels,
     capacity, health, last_seen, registered_at) = row
    return Worker(
        worker_id=worker_id,
        transport=Transport(transport),
        node_id=node_id,
        instance_id=instance_id,
        app_name=app_name,
        app_version=app_version,
        url=url,
        tasks=_tasks_decoder.decode(tasks),
        labels=_labels_decoder.decode(labels),
        capacity=capacity,
        health=Health(health),
        last_seen=last_seen,
        registered_at=registered_at,
    )


def _missing(worker_id: str) -> NotFound:
    return NotFound(f"worker {worker_id!r} not found", field="workerId")


class SqliteWorkers:
    async def upsert_worker(self, worker: Worker) -> None:
        params = _params(worker)
        await self._write(lambda c: c.execute(_UPSERT, params))

    async def get_worker(self, worker_id: str) -> Worker:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM workers WHERE worker_id = ?", (worker_id,)
            ).fetchone()
        )
        if row is None:
            raise _missing(worker_id)
        return _worker(row)

    async def list_workers(
        self, *, transport: Transport | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Worker]:
        where, args = ("WHERE transport = ?", (transport.value,)) if transport else ("", ())

        def query(c: sqlite3.Connection) -> Page[Worker]:
            rows = c.execute(
                f"SELECT {_COLUMNS} FROM workers {where} "
                "ORDER BY registered_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            total = c.execute(f"SELECT count(*) FROM workers {where}", args).fetchone()[0]
            return Page([_worker(r) for r in rows], total)

        return await self._read(query)

    async def delete_worker(self, worker_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,)).rowcount == 0:
                raise _missing(worker_id)

        await self._write(delete)
