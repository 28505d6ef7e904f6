"""The store contract: every implementation must pass these."""

import pytest

from plum.engine.model import Health, Node, Usage
from plum.errors import NotFound


def node(node_id: str, **kw) -> Node:
    return Node(
        node_id=node_id, ip=kw.pop("ip", "127.0.0.1"), last_seen=kw.pop("last_seen", 1.0), **kw
    )


async def test_upsert_then_get_round_trips_every_field(store):
    original = node(
        "n1",
        ip="127.0.0.2",
        labels={"zone": "edge"},
        health=Health.HEALTHY,
        capacity=8,
        usage=Usage(cpu_percent=12.5, mem_percent=40.0, mem_used_bytes=10, mem_total_bytes=25),
        version="0.1.0",
    )
    await store.upsert_node(original)
    assert await store.get_node("n1") == original


async def test_upsert_replaces(store):
    await store.upsert_node(node("n1", health=Health.HEALTHY))
    await store.upsert_node(node("n1", ip="127.0.0.9", health=Health.UNHEALTHY, last_seen=5.0))
    got = await store.get_node("n1")
    assert (got.ip, got.health, got.last_seen) == ("127.0.0.9", Health.UNHEALTHY, 5.0)
    assert (await store.list_nodes()).total == 1


async def test_list_is_newest_first_and_pages(store):
    for i in range(5):
        await store.upsert_node(node(f"n{i}", last_seen=float(i)))
    page = await store.list_nodes(limit=2, offset=1)
    assert page.total == 5
    assert [n.node_id for n in page.items] == ["n3", "n2"]
    assert (await store.list_nodes(limit=10, offset=10)).items == []


async def test_missing_and_delete(store):
    with pytest.raises(NotFound):
        await store.get_node("nope")
    with pytest.raises(NotFound):
        await store.delete_node("nope")
    await store.upsert_node(node("n1"))
    await store.delete_node("n1")
    with pytest.raises(NotFound):
        await store.get_node("n1")


async def test_meta(store):
    assert await store.get_meta("k") is None
    await store.set_meta("k", "v1")
    await store.set_meta("k", "v2")
    assert await store.get_meta("k") == "v2"
