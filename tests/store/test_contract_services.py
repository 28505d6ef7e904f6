"""The store contract for service endpoints: every implementation must pass these."""

import pytest

from plum.discovery.model import Endpoint, EndpointKey, ServiceProtocol
from plum.errors import NotFound


def endpoint(instance_id: str, service: str = "echo", port: int = 8000, **kw) -> Endpoint:
    return Endpoint(
        service_name=service,
        instance_id=instance_id,
        ip=kw.pop("ip", "127.0.0.1"),
        port=port,
        protocol=kw.pop("protocol", ServiceProtocol.HTTP),
        last_seen=kw.pop("last_seen", 1.0),
        registered_at=kw.pop("registered_at", 1.0),
        **kw,
    )


async def test_replace_round_trips_every_field(store):
    original = endpoint(
        "i-1",
        "rpc",
        9000,
        ip="10.0.0.7",
        protocol=ServiceProtocol.GRPC,
        node_id="n1",
        version="1.2.3",
        labels={"zone": "edge"},
        healthy=False,
        last_seen=5.5,
        registered_at=2.25,
    )
    await store.replace_endpoints("i-1", [original])
    assert (await store.list_endpoints()).items == [original]


async def test_replace_makes_the_instances_set_exact_and_leaves_others(store):
    await store.replace_endpoints("i-1", [endpoint("i-1", "a", 1), endpoint("i-1", "b", 2)])
    await store.replace_endpoints("i-2", [endpoint("i-2", "a", 1)])
    await store.replace_endpoints(
        "i-1", [endpoint("i-1", "b", 2, version="v2"), endpoint("i-1", "c", 3)]
    )
    got = {(e.instance_id, e.service_name, e.version) for e in (await store.list_endpoints()).items}
    assert got == {("i-1", "b", "v2"), ("i-1", "c", ""), ("i-2", "a", "")}


async def test_list_is_newest_first_pages_and_filters(store):
    for i in range(4):
        service = "a" if i % 2 else "b"
        await store.replace_endpoints(f"i-{i}", [endpoint(f"i-{i}", service, registered_at=i)])
    page = await store.list_endpoints(limit=2, offset=1)
    assert page.total == 4
    assert [e.instance_id for e in page.items] == ["i-2", "i-1"]
    only_a = await store.list_endpoints(service_name="a")
    assert (only_a.total, [e.instance_id for e in only_a.items]) == (2, ["i-3", "i-1"])
    assert (await store.list_endpoints(limit=10, offset=10)).items == []


async def test_same_registration_time_orders_by_insertion_and_replacing_keeps_it(store):
    await store.replace_endpoints("i-1", [endpoint("i-1", "a", 1), endpoint("i-1", "b", 2)])
    await store.replace_endpoints("i-2", [endpoint("i-2", "a", 1)])
    await store.replace_endpoints("i-1", [endpoint("i-1", "a", 1), endpoint("i-1", "b", 2)])
    keys = [e.key for e in (await store.list_endpoints()).items]
    assert keys == [("i-2", "a", 1), ("i-1", "b", 2), ("i-1", "a", 1)]


async def test_touch_sets_last_seen_of_the_instance_only(store):
    await store.replace_endpoints("i-1", [endpoint("i-1", "a", 1), endpoint("i-1", "b", 2)])
    await store.replace_endpoints("i-2", [endpoint("i-2", "a", 1)])
    await store.touch_endpoints("i-1", 42.0)
    seen = {e.key: e.last_seen for e in (await store.list_endpoints()).items}
    assert seen == {("i-1", "a", 1): 42.0, ("i-1", "b", 2): 42.0, ("i-2", "a", 1): 1.0}
    with pytest.raises(NotFound):
        await store.touch_endpoints("ghost", 1.0)


async def test_set_endpoint_health(store):
    await store.replace_endpoints("i-1", [endpoint("i-1", "a", 1), endpoint("i-1", "b", 2)])
    await store.set_endpoint_health(EndpointKey("i-1", "b", 2), False)
    health = {e.key: e.healthy for e in (await store.list_endpoints()).items}
    assert health == {("i-1", "a", 1): True, ("i-1", "b", 2): False}
    with pytest.raises(NotFound):
        await store.set_endpoint_health(EndpointKey("i-1", "b", 3), False)


async def test_delete_endpoints(store):
    await store.replace_endpoints("i-1", [endpoint("i-1", "a", 1), endpoint("i-1", "b", 2)])
    await store.replace_endpoints("i-2", [endpoint("i-2", "a", 1)])
    await store.delete_endpoints("i-1")
    assert [e.instance_id for e in (await store.list_endpoints()).items] == ["i-2"]
    with pytest.raises(NotFound):
        await store.delete_endpoints("i-1")
