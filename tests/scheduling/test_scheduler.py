"""The scheduler on a fake clock, a real SQLite store and a fake workflow service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from plum.bus import Bus, ScheduleChanged, ScheduleRemoved
from plum.engine.schedules import MAX_CATCHUP, Schedule
from plum.errors import Invalid, NotFound
from plum.scheduling import NewSchedule, SchedulePatch, Scheduler
from plum.store.sqlite import SqliteStore
from plum.testing import FakeClock

pytestmark = pytest.mark.timeout(15)

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Call:
    workflow_id: str
    params: dict[str, Any]
    trigger: str
    at: float


class FakeRuns:
    """A `RunStarter` that records every start (and the clock's time), or fails on demand."""

    def __init__(self, clock: FakeClock):
        self._clock = clock
        self.workflows = {"wf", "other"}
        self.calls: list[Call] = []
        self.failure: Exception | None = None

    async def require_workflow(self, workflow_id: str) -> None:
        if workflow_id not in self.workflows:
            raise NotFound(f"workflow {workflow_id!r} not found", field="workflowId")

    async def start_run(self, workflow_id: str, params: dict[str, Any], *, trigger: str) -> str:
        if self.failure is not None:
            raise self.failure
        await self.require_workflow(workflow_id)
        self.calls.append(Call(workflow_id, params, trigger, self._clock.now()))
        return f"run-{len(self.calls)}"


@dataclass
class Env:
    clock: FakeClock
    bus: Bus
    store: SqliteStore
    runs: FakeRuns

    @asynccontextmanager
    async def scheduler(self) -> AsyncIterator[Scheduler]:
        scheduler = Scheduler(self.store, self.runs, self.bus, self.clock)
        async with scheduler.running():
            yield scheduler

    async def advance(self, seconds: float) -> list[Schedule]:
        """Advance the clock; when the timer fired, wait for the schedules it fired."""
        with self.bus.subscribe(["schedules"]) as events:
            if not self.clock.advance(seconds):
                return []
            return await fired(events)

    async def advance_to(self, when: float) -> list[Schedule]:
        return await self.advance(when - self.clock.now())


async def fired(events, count: int = 1) -> list[Schedule]:
    """The next `count` schedules that fired (a `ScheduleChanged` with a new last run)."""
    got: list[Schedule] = []
    while len(got) < count:
        envelope = await asyncio.wait_for(events.get(), 5)
        event = envelope.event
        if isinstance(event, ScheduleChanged) and event.schedule.last_run_at is not None:
            got.append(event.schedule)
    return got


@pytest.fixture
async def env(tmp_path):
    clock = FakeClock(utc(2024, 1, 1, 0, 0))
    async with SqliteStore(tmp_path / "plum.db") as store:
        yield Env(clock, Bus(clock), store, FakeRuns(clock))


def new(cron: str = "0 * * * *", **kw) -> NewSchedule:
    return NewSchedule(workflow_id=kw.pop("workflow_id", "wf"), cron=cron, **kw)


# -- firing


async def test_fires_at_each_fire_time_across_several_advances(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("*/15 * * * *", params={"n": 1}))
        assert s.next_run_at == env.clock.now() + 900
        assert env.clock.next_deadline() == s.next_run_at
        for _ in range(16):  # two hours in 7.5-minute steps: a fire every other step
            await env.advance(450)
        start = utc(2024, 1, 1, 0, 0)
        assert [c.at for c in env.runs.calls] == [start + 900 * i for i in range(1, 9)]
        assert {(c.workflow_id, c.trigger) for c in env.runs.calls} == {("wf", "schedule")}
        assert all(c.params == {"n": 1} for c in env.runs.calls)
        stored = await scheduler.get(s.schedule_id)
        assert (stored.last_run_at, stored.last_run_id, stored.last_error) == (
            utc(2024, 1, 1, 2, 0), "run-8", None)
        assert stored.next_run_at == utc(2024, 1, 1, 2, 15)
        assert env.clock.next_deadline() == stored.next_run_at


async def test_one_timer_for_the_earliest_schedule_and_simultaneous_fires(env):
    async with env.scheduler() as scheduler:
        hourly = await scheduler.create(new("0 * * * *"))
        quarter = await scheduler.create(new("*/15 * * * *", workflow_id="other"))
        daily = await scheduler.create(new("0 0 * * *"))
        assert env.clock.next_deadline() == quarter.next_run_at
        fired_now = await env.advance_to(quarter.next_run_at)
        assert [s.schedule_id for s in fired_now] == [quarter.schedule_id]
        await env.advance(1800)
        with env.bus.subscribe(["schedules"]) as events:
            env.clock.advance(hourly.next_run_at - env.clock.now())
            both = await fired(events, 2)
        assert {s.schedule_id for s in both} == {hourly.schedule_id, quarter.schedule_id}
        assert env.clock.next_deadline() == utc(2024, 1, 1, 1, 15)
        assert (await scheduler.get(daily.schedule_id)).last_run_at is None


async def test_disable_stops_it_and_enable_resumes_from_now(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("*/10 * * * *"))
        await env.advance(600)
        assert len(env.runs.calls) == 1
        off = await scheduler.patch(s.schedule_id, SchedulePatch(enabled=False))
        assert (off.enabled, off.next_run_at) == (False, None)
        assert env.clock.next_deadline() is None
        assert await env.advance(5 * HOUR) == []
        assert len(env.runs.calls) == 1
        on = await scheduler.patch(s.schedule_id, SchedulePatch(enabled=True))
        assert on.next_run_at == env.clock.now() + 600  # no catch-up of the disabled time
        await env.advance(600)
        assert [c.at for c in env.runs.calls][-1] == on.next_run_at


async def test_a_schedule_created_disabled_never_fires(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("* * * * *", enabled=False))
        assert s.next_run_at is None
        assert env.clock.next_deadline() is None
        assert await env.advance(HOUR) == []
        assert env.runs.calls == []


async def test_patch_rearms_the_timer(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("0 * * * *"))
        assert env.clock.next_deadline() == utc(2024, 1, 1, 1, 0)
        sooner = await scheduler.patch(s.schedule_id, SchedulePatch(cron="*/5 * * * *"))
        assert sooner.next_run_at == env.clock.next_deadline() == utc(2024, 1, 1, 0, 5)
        await env.advance(300)
        assert [c.at for c in env.runs.calls] == [utc(2024, 1, 1, 0, 5)]
        berlin = await scheduler.patch(s.schedule_id, SchedulePatch(
            cron="0 9 * * *", timezone="Europe/Berlin", params={"x": 2}, catchup=True))
        assert berlin.next_run_at == env.clock.next_deadline() == utc(2024, 1, 1, 8, 0)
        assert (berlin.cron, berlin.timezone, berlin.params, berlin.catchup) == (
            "0 9 * * *", "Europe/Berlin", {"x": 2}, True)
        assert berlin.last_run_id == "run-1"  # history is kept
        await env.advance_to(berlin.next_run_at)
        assert env.runs.calls[-1] == Call("wf", {"x": 2}, "schedule", utc(2024, 1, 1, 8, 0))


async def test_a_patch_that_does_not_retime_keeps_the_next_fire_time(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("0 * * * *"))
        env.clock.advance(1200)
        kept = await scheduler.patch(s.schedule_id, SchedulePatch(params={"a": 1}))
        assert kept.next_run_at == s.next_run_at
        assert kept.updated_at == env.clock.now()


async def test_delete_disarms_and_publishes(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("* * * * *"))
        with env.bus.subscribe(["schedules"]) as events:
            await scheduler.delete(s.schedule_id)
            envelope = await asyncio.wait_for(events.get(), 5)
        assert envelope.event == ScheduleRemoved(s.schedule_id)
        assert env.clock.next_deadline() is None
        assert await env.advance(HOUR) == []
        with pytest.raises(NotFound):
            await scheduler.get(s.schedule_id)
        with pytest.raises(NotFound):
            await scheduler.delete(s.schedule_id)


async def test_a_failing_start_is_recorded_and_the_schedule_moves_on(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("0 * * * *"))
        env.runs.workflows.discard("wf")  # the workflow was deleted
        [failed] = await env.advance(HOUR)
        assert failed.last_run_id is None
        assert "not found" in failed.last_error
        assert (failed.last_run_at, failed.next_run_at) == (s.next_run_at, s.next_run_at + HOUR)
        env.runs.failure = RuntimeError("engine exploded")
        [failed] = await env.advance(HOUR)
        assert failed.last_error == "engine exploded"
        env.runs.failure = None
        env.runs.workflows.add("wf")
        [ok] = await env.advance(HOUR)
        assert (ok.last_run_id, ok.last_error, ok.next_run_at) == (
            "run-1", None, s.next_run_at + 3 * HOUR)
        assert await scheduler.get(s.schedule_id) == ok


# -- DST in a non-UTC zone


async def test_fires_across_spring_forward_in_berlin(env):
    env.clock.advance(utc(2024, 3, 30, 12, 0) - env.clock.now())
    async with env.scheduler() as scheduler:
        nightly = await scheduler.create(new("30 2 * * *", timezone="Europe/Berlin"))
        morning = await scheduler.create(new("0 9 * * *", timezone="Europe/Berlin",
                                             workflow_id="other"))
        assert nightly.next_run_at == utc(2024, 3, 31, 1, 0)  # 02:30 does not exist: 03:00
        while env.clock.now() < utc(2024, 4, 2, 12, 0):
            await env.advance(1800)
        got = {c.at: c.workflow_id for c in env.runs.calls}
    assert got == {
        utc(2024, 3, 31, 1, 0): "wf",  # 03:00 CEST, right after the gap
        utc(2024, 3, 31, 7, 0): "other",  # 09:00 CEST
        utc(2024, 4, 1, 0, 30): "wf",  # 02:30 CEST
        utc(2024, 4, 1, 7, 0): "other",
        utc(2024, 4, 2, 0, 30): "wf",
        utc(2024, 4, 2, 7, 0): "other",
    }
    assert morning.next_run_at == utc(2024, 3, 31, 7, 0)


async def test_fires_once_in_the_repeated_hour_of_autumn_in_berlin(env):
    env.clock.advance(utc(2024, 10, 26, 12, 0) - env.clock.now())
    async with env.scheduler() as scheduler:
        await scheduler.create(new("30 2 * * *", timezone="Europe/Berlin"))
        hourly = await scheduler.create(new("0 * * * *", timezone="Europe/Berlin",
                                            workflow_id="other"))
        assert hourly.next_run_at == utc(2024, 10, 26, 13, 0)
        while env.clock.now() < utc(2024, 10, 28, 3, 0):
            await env.advance(1800)
    nightly = [c.at for c in env.runs.calls if c.workflow_id == "wf"]
    assert nightly == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]
    local_hours = [datetime.fromtimestamp(c.at, BERLIN).strftime("%H%z")
                   for c in env.runs.calls if c.workflow_id == "other"
                   and utc(2024, 10, 26, 22) <= c.at <= utc(2024, 10, 27, 3)]
    assert local_hours == ["00+0200", "01+0200", "02+0200", "03+0100", "04+0100"]


# -- restarts


async def test_restart_after_downtime_fires_once_without_catchup(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("0 * * * *", params={"k": "v"}))
    assert env.clock.next_deadline() is None  # stopping disarms the timer
    env.clock.advance(5 * HOUR + 600)  # down across five fire times
    with env.bus.subscribe(["schedules"]) as events:
        async with env.scheduler() as scheduler:
            [again] = await fired(events)
            assert env.runs.calls == [Call("wf", {"k": "v"}, "schedule", env.clock.now())]
            assert again.next_run_at == utc(2024, 1, 1, 6, 0)
            assert env.clock.next_deadline() == again.next_run_at
            await env.advance(3000)
            assert len(env.runs.calls) == 2
    assert (await env.store.get_schedule(s.schedule_id)).last_run_id == "run-2"


async def test_restart_after_downtime_catches_up_every_missed_time(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("0 * * * *", catchup=True))
    env.clock.advance(5 * HOUR + 600)
    with env.bus.subscribe(["schedules"]) as events:
        async with env.scheduler():
            steps = await fired(events, 5)
            assert len(env.runs.calls) == 5
            assert [step.next_run_at for step in steps] == [
                s.next_run_at + HOUR * i for i in range(1, 5)] + [utc(2024, 1, 1, 6, 0)]
            assert [step.last_run_id for step in steps] == [f"run-{i}" for i in range(1, 6)]
            assert env.clock.next_deadline() == utc(2024, 1, 1, 6, 0)


async def test_catchup_after_a_long_downtime_is_capped(env):
    async with env.scheduler() as scheduler:
        await scheduler.create(new("* * * * *", catchup=True))
    env.clock.advance(3 * 24 * HOUR)
    with env.bus.subscribe(["schedules"]) as events:
        async with env.scheduler():
            steps = await fired(events, MAX_CATCHUP)
            assert len(env.runs.calls) == MAX_CATCHUP
            assert steps[-1].next_run_at == env.clock.now() + 60


async def test_a_restart_before_the_fire_time_just_waits(env):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new("0 * * * *"))
    env.clock.advance(1800)
    async with env.scheduler():
        assert env.clock.next_deadline() == s.next_run_at
        await env.advance(1800)
    assert [c.at for c in env.runs.calls] == [s.next_run_at]


# -- validation: a rejected request changes nothing


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (new(workflow_id="ghost"), "workflowId"),
        (new("61 * * * *"), "cron"),
        (new("0 0 31 2 *"), "cron"),
        (new(timezone="Mars/Olympus"), "timezone"),
    ],
)
async def test_create_rejects_bad_input(env, body, field):
    async with env.scheduler() as scheduler:
        with pytest.raises(Invalid) as err:
            await scheduler.create(body)
        assert err.value.field == field
        assert (await scheduler.list()).total == 0
        assert env.clock.next_deadline() is None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (SchedulePatch(cron="nope"), "cron"),
        (SchedulePatch(cron="0 0 30 2 *", enabled=False), "cron"),
        (SchedulePatch(timezone="Nowhere/Land", params={"a": 1}), "timezone"),
    ],
)
async def test_patch_rejects_bad_input(env, patch, field):
    async with env.scheduler() as scheduler:
        s = await scheduler.create(new())
        with pytest.raises(Invalid) as err:
            await scheduler.patch(s.schedule_id, patch)
        assert err.value.field == field
        assert await scheduler.get(s.schedule_id) == s
        assert env.clock.next_deadline() == s.next_run_at
        with pytest.raises(NotFound):
            await scheduler.patch("ghost", SchedulePatch(enabled=False))


async def test_list_filters_by_workflow_newest_first(env):
    async with env.scheduler() as scheduler:
        a = await scheduler.create(new())
        b = await scheduler.create(new(workflow_id="other"))
        c = await scheduler.create(new())
        page = await scheduler.list()
        assert ([s.schedule_id for s in page.items], page.total) == (
            [c.schedule_id, b.schedule_id, a.schedule_id], 3)
        only = await scheduler.list(workflow_id="wf", limit=1, offset=1)
        assert ([s.schedule_id for s in only.items], only.total) == ([a.schedule_id], 2)
