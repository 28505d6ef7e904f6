"""The store contract for workers: every implementation must pass these."""

import pytest

from plum.engine.model import Health
from plum.errors import NotFound
from plum.workers.model import Transport, Worker


def worker(worker_id: str, transport: Transport = Transport.GRPC, **kw) -> Worker:
    return Worker(
        worker_id=worker_id,
        transport=transport,
        health=kw.pop("health", Health.HEALTHY),
        last_seen=kw.pop("last_seen", 1.0),
        registered_at=kw.pop("registered_at", 1.0),
        **kw,
    )


async def test_upsert_round_trips_every_field(store):
    original = worker(
        "w-1", Transport.HTTP, node_id="n1", instance_id="i-1", app_name="app",
        app_version="1.2", url="http://127.0.0.1:9/task", tasks=["a", "b"],
        labels={"zone": "edge"}, capacity=4, health=Health.UNHEALTHY, last_seen=5.5,
        registered_at=2.25,
    )
    await store.upsert_worker(original)
    assert await store.get_worker("w-1") == original
    assert (await store.list_workers()).items == [original]


async def test_inflight_is_not_stored(store):
    await store.upsert_worker(worker("w-1", inflight=3))
    assert (await store.get_worker("w-1")).inflight == 0


async def test_upsert_replaces(store):
    await store.upsert_worker(worker("w-1", tasks=["a"]))
    await store.upsert_worker(worker("w-1", tasks=["b"], health=Health.UNHEALTHY))
    stored = await store.get_worker("w-1")
    assert (stored.tasks, stored.health) == (["b"], Health.UNHEALTHY)
    assert (await store.list_workers()).total == 1


async def test_list_is_newest_first_filtered_and_paged(store):
    await store.upsert_worker(worker("old", registered_at=1.0))
    await store.upsert_worker(worker("web", Transport.HTTP, registered_at=2.0))
    await store.upsert_worker(worker("new", registered_at=3.0))
    page = await store.list_workers()
    assert [w.worker_id for w in page.items] == ["new", "web", "old"]
    grpc = await store.list_workers(transport=Transport.GRPC)
    assert ([w.worker_id for w in grpc.items], grpc.total) == (["new", "old"], 2)
    second = await store.list_workers(limit=1, offset=1)
    assert ([w.worker_id for w in second.items], second.total) == (["web"], 3)


async def test_delete_and_missing(store):
    await store.upsert_worker(worker("w-1"))
    await store.delete_worker("w-1")
    with pytest.raises(NotFound):
        await store.get_worker("w-1")
    with pytest.raises(NotFound):
        await store.delete_worker("w-1")
