"""The node registry's table."""

from __future__ import annotations

import sqlite3

import msgspec

from plum.engine.model import Health, Node, Usage
from plum.errors import NotFound
from plum.store.base import Page

_COLUMNS = "node_id, ip, labels, last_seen, health, capacity, usage, version"
_usage_decoder = msgspec.json.Decoder(Usage)
_labels_decoder = msgspec.json.Decoder(dict[str, str])


def _node(row: tuple) -> Node:
    node_id, ip, labels, last_seen, health, capacity, usage, version = row
    return Node(
        node_id=node_id,
        ip=ip,
        labels=_labels_decoder.decode(labels),
        last_seen=last_seen,
        health=Health(health),
        capacity=capacity,
        usage=_usage_decoder.decode(usage),
        version=version,
    )


class SqliteNodes:
    async def upsert_node(self, node: Node) -> None:
        params = (
            node.node_id,
            node.ip,
            msgspec.json.encode(node.labels).decode(),
            node.last_seen,
            node.health.value,
            node.capacity,
            msgspec.json.encode(node.usage).decode(),
            node.version,
            node.last_seen,
        )
        await self._write(
            lambda c: c.execute(
                f"INSERT INTO nodes ({_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(node_id) DO UPDATE SET ip = excluded.ip, labels = excluded.labels, "
                "last_seen = excluded.last_seen, health = excluded.health, "
                "capacity = excluded.capacity, usage = excluded.usage, version = excluded.version",
                params,
            )
        )

    async def get_node(self, node_id: str) -> Node:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"node {node_id!r} not found", field="nodeId")
        return _node(row)

    async def list_nodes(self, *, limit: int = 100, offset: int = 0) -> Page[Node]:
        def query(c: sqlite3.Connection) -> Page[Node]:
            rows = c.execute(
                f"SELECT {_COLUMNS} FROM nodes "
                "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            total = c.execute("SELECT count(*) FROM nodes").fetchone()[0]
            return Page([_node(r) for r in rows], total)

        return await self._read(query)

    async def delete_node(self, node_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)).rowcount == 0:
                raise NotFound(f"node {node_id!r} not found", field="nodeId")

        await self._write(delete)
