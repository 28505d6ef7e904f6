"""Service endpoints registered for discovery."""

from __future__ import annotations

import sqlite3

import msgspec

from plum.discovery.model import Endpoint, EndpointKey, ServiceProtocol
from plum.errors import NotFound
from plum.store.base import Page

_COLUMNS = (
    "instance_id, service_name, port, node_id, ip, protocol, version, labels, healthy, "
    "last_seen, registered_at"
)
_UPSERT = (
    f"INSERT INTO service_endpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(instance_id, service_name, port) DO UPDATE SET node_id = excluded.node_id, "
    "ip = excluded.ip, protocol = excluded.protocol, version = excluded.version, "
    "labels = excluded.labels, healthy = excluded.healthy, last_seen = excluded.last_seen, "
    "registered_at = excluded.registered_at"
)
_labels_decoder = msgspec.json.Decoder(dict[str, str])


def _params(e: Endpoint) -> tuple:
    return (
        e.instance_id,
        e.service_name,
        e.port,
        e.node_id,
        e.ip,
        e.protocol.value,
        e.version,
        msgspec.json.encode(e.labels).decode(),
        int(e.healthy),
        e.last_seen,
        e.registered_at,
    )


def _endpoint(row: tuple) -> Endpoint:
    (
        instance_id,
        service_name,
        port,
        node_id,
        ip,
        protocol,
        version,
        labels,
        healthy,
        last_seen,
        registered_at,
    ) = row
    return Endpoint(
        service_name=service_name,
        instance_id=instance_id,
        ip=ip,
        port=port,
        protocol=ServiceProtocol(protocol),
        node_id=node_id,
        version=version,
        labels=_labels_decoder.decode(labels),
        healthy=bool(healthy),
        last_seen=last_seen,
        registered_at=registered_at,
    )


def _missing_instance(instance_id: str) -> NotFound:
    return NotFound(f"no endpoints registered for instance {instance_id!r}", field="instanceId")


class SqliteServices:
    async def replace_endpoints(self, instance_id: str, endpoints: list[Endpoint]) -> None:
        keep = {(e.service_name, e.port) for e in endpoints}
        rows = [_params(e) for e in endpoints]

        def replace(c: sqlite3.Connection) -> None:
            stored = c.execute(
                "SELECT service_name, port FROM service_endpoints WHERE instance_id = ?",
                (instance_id,),
            ).fetchall()
            c.executemany(
                "DELETE FROM service_endpoints "
                "WHERE instance_id = ? AND service_name = ? AND port = ?",
                [(instance_id, name, port) for name, port in stored if (name, port) not in keep],
            )
            c.executemany(_UPSERT, rows)

        await self._write(replace)

    async def touch_endpoints(self, instance_id: str, last_seen: float) -> None:
        def touch(c: sqlite3.Connection) -> None:
            cursor = c.execute(
                "UPDATE service_endpoints SET last_seen = ? WHERE instance_id = ?",
                (last_seen, instance_id),
            )
            if cursor.rowcount == 0:
                raise _missing_instance(instance_id)

        await self._write(touch)

    async def set_endpoint_health(self, key: EndpointKey, healthy: bool) -> None:
        def update(c: sqlite3.Connection) -> None:
            cursor = c.execute(
                "UPDATE service_endpoints SET healthy = ? "
                "WHERE instance_id = ? AND service_name = ? AND port = ?",
                (int(healthy), *key),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"endpoint {tuple(key)!r} not found", field="instanceId")

        await self._write(update)

    async def delete_endpoints(self, instance_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            cursor = c.execute(
                "DELETE FROM service_endpoints WHERE instance_id = ?", (instance_id,)
            )
            if cursor.rowcount == 0:
                raise _missing_instance(instance_id)

        await self._write(delete)

    async def list_endpoints(
        self, *, service_name: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Endpoint]:
        where, args = ("", ())
        if service_name is not None:
            where, args = "WHERE service_name = ?", (service_name,)

        def query(c: sqlite3.Connection) -> Page[Endpoint]:
            rows = c.execute(
                f"SELECT {_COLUMNS} FROM service_endpoints {where} "
                "ORDER BY registered_at DESC, seq DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            total = c.execute(f"SELECT count(*) FROM service_endpoints {where}", args).fetchone()
            return Page([_endpoint(r) for r in rows], total[0])

        return await self._read(query)
