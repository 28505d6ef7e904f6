"""The store contract for cron schedules: every implementation must pass these."""

import msgspec
import pytest

from plum.engine.schedules import Schedule
from plum.errors import Conflict, NotFound


def schedule(schedule_id: str, workflow_id: str = "w1", **kw) -> Schedule:
    return Schedule(schedule_id=schedule_id, workflow_id=workflow_id,
                    cron=kw.pop("cron", "*/5 * * * *"), created_at=kw.pop("created_at", 1.0),
                    updated_at=kw.pop("updated_at", 1.0), **kw)


async def test_insert_then_get_round_trips_every_field(store):
    original = schedule(
        "s1", cron="30 2 * * *", timezone="Europe/Berlin",
        params={"n": 3, "nested": {"list": [1, "two", None]}, "flag": True},
        enabled=True, catchup=True, next_run_at=1234.5, last_run_at=1200.25,
        last_run_id="r" * 32, last_error="workflow gone", created_at=10.5, updated_at=20.75,
    )
    await store.insert_schedule(original)
    assert await store.get_schedule("s1") == original


async def test_defaults_round_trip(store):
    original = schedule("s1")
    await store.insert_schedule(original)
    got = await store.get_schedule("s1")
    assert got == original
    assert (got.next_run_at, got.last_run_id, got.last_error, got.params) == (
        None, None, None, {})


async def test_insert_twice_conflicts(store):
    await store.insert_schedule(schedule("s1"))
    with pytest.raises(Conflict):
        await store.insert_schedule(schedule("s1", cron="0 * * * *"))
    assert (await store.get_schedule("s1")).cron == "*/5 * * * *"


async def test_save_replaces_every_field_and_needs_the_schedule(store):
    await store.insert_schedule(schedule("s1", next_run_at=5.0))
    changed = msgspec.structs.replace(
        await store.get_schedule("s1"), cron="0 9 * * *", timezone="America/New_York",
        params={"a": 1}, enabled=False, catchup=True, next_run_at=None, last_run_at=4.0,
        last_run_id="r1", last_error=None, updated_at=9.0,
    )
    await store.save_schedule(changed)
    assert await store.get_schedule("s1") == changed
    with pytest.raises(NotFound):
        await store.save_schedule(schedule("ghost"))
    with pytest.raises(NotFound):
        await store.get_schedule("ghost")


async def test_list_is_newest_first_pages_and_filters(store):
    for i in range(5):
        await store.insert_schedule(schedule(f"s{i}", "wa" if i % 2 else "wb",
                                             created_at=float(i)))
    page = await store.list_schedules(limit=2, offset=1)
    assert page.total == 5
    assert [s.schedule_id for s in page.items] == ["s3", "s2"]
    only_a = await store.list_schedules(workflow_id="wa")
    assert (only_a.total, [s.schedule_id for s in only_a.items]) == (2, ["s3", "s1"])
    assert (await store.list_schedules(workflow_id="nope")).total == 0
    assert (await store.list_schedules(limit=10, offset=10)).items == []


async def test_saving_keeps_the_list_order(store):
    for i in range(3):
        await store.insert_schedule(schedule(f"s{i}"))
    await store.save_schedule(schedule("s0", updated_at=99.0))
    assert [s.schedule_id for s in (await store.list_schedules()).items] == ["s2", "s1", "s0"]


async def test_delete(store):
    await store.insert_schedule(schedule("s1"))
    await store.insert_schedule(schedule("s2"))
    await store.delete_schedule("s1")
    with pytest.raises(NotFound):
        await store.get_schedule("s1")
    with pytest.raises(NotFound):
        await store.delete_schedule("s1")
    assert [s.schedule_id for s in (await store.list_schedules()).items] == ["s2"]


async def test_enabled_schedules(store):
    await store.insert_schedule(schedule("s1", next_run_at=5.0))
    await store.insert_schedule(schedule("s2", enabled=False))
    await store.insert_schedule(schedule("s3", next_run_at=7.0))
    assert [s.schedule_id for s in await store.enabled_schedules()] == ["s1", "s3"]
