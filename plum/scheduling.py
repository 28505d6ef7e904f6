"""The scheduler: cron schedules that start workflow runs.

One timer on the clock, armed for the earliest `nextRunAt` among enabled schedules (a heap
of schedules by next fire time), re-armed after every change and every fire; no polling.
When it fires, a worker owned by `running()`'s task group starts a run for each due
schedule through the `RunStarter` (`trigger="schedule"`), stores `lastRunAt`, `lastRunId`
(or `lastError` when the start failed: the schedule moves on either way) and the next fire
time, then publishes `ScheduleChanged`. Runs are started before the schedule is stored, so
a crash in between starts that run again on restart: at least once, like the rest of Plum.

On start, a schedule whose `nextRunAt` passed while the controller was down fires at once:
once, or with `catchup` once per missed time (see `plum.engine.schedules`). Changes and
fires are serialised by one lock, so a PATCH never loses a fire's bookkeeping or vice versa.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol

import msgspec

from plum.bus import Bus, ScheduleChanged, ScheduleRemoved
from plum.clock import Clock, TimerHandle
from plum.engine.model import Model
from plum.engine.schedules import (
    DEFAULT_TIMEZONE,
    Schedule,
    fires_due,
    next_fire,
    parse_cron,
    record_fire,
    zone,
)
from plum.errors import Invalid, NotFound
from plum.ids import new_id
from plum.logging import get_logger
from plum.store.base import Page, ScheduleRepo

log = get_logger(__name__)

TRIGGER = "schedule"

Cron = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class RunStarter(Protocol):
    """What the scheduler needs from the workflow service."""

    async def require_workflow(self, workflow_id: str) -> None:
        """Raises `plum.errors.NotFound`."""

    async def start_run(self, workflow_id: str, params: dict[str, Any], *, trigger: str) -> str:
        """Start a run; returns its id."""


class NewSchedule(Model, frozen=True, forbid_unknown_fields=False):
    workflow_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    cron: Cron
    timezone: TimeZone = DEFAULT_TIMEZONE
    params: dict[str, Any] = {}
    enabled: bool = True
    catchup: bool = False


class SchedulePatch(Model, frozen=True, forbid_unknown_fields=False):
    """Fields left out (or null) stay as they are."""

    cron: Cron | None = None
    timezone: TimeZone | None = None
    params: dict[str, Any] | None = None
    enabled: bool | None = None
    catchup: bool | None = None


class Scheduler:
    def __init__(self, store: ScheduleRepo, runs: RunStarter, bus: Bus, clock: Clock):
        self._store = store
        self._runs = runs
        self._bus = bus
        self._clock = clock
        self._next: dict[str, float] = {}  # enabled schedule -> its next fire time
        self._heap: list[tuple[float, str]] = []  # (next fire, id); stale entries skipped
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._running = False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Scheduler]:
        for schedule in await self._store.enabled_schedules():
            self._track(schedule)
        async with asyncio.TaskGroup() as tg:
            self._running = True
            self._arm()
            self._wake.set()  # fire at once what fell due while we were down
            worker = tg.create_task(self._fire_when_woken(), name="scheduler")
            try:
                yield self
            finally:
                self._running = False
                worker.cancel()
                self._disarm()

    # -- the API's operations
    async def create(self, body: NewSchedule) -> Schedule:
        cron = parse_cron(body.cron)
        now = self._clock.now()
        first = next_fire(cron, body.timezone, now)
        try:
            await self._runs.require_workflow(body.workflow_id)
        except NotFound:
            raise Invalid(f"workflowId: workflow {body.workflow_id!r} not found",
                          field="workflowId") from None
        schedule = Schedule(
            schedule_id=new_id(), workflow_id=body.workflow_id, cron=cron,
            timezone=body.timezone, params=body.params, enabled=body.enabled,
            catchup=body.catchup, next_run_at=first if body.enabled else None,
            created_at=round(now, 3), updated_at=round(now, 3),
        )
        async with self._lock:
            await self._store.insert_schedule(schedule)
            self._changed(schedule)
        log.info("schedule_created", schedule_id=schedule.schedule_id,
                 workflow_id=schedule.workflow_id, cron=cron, timezone=schedule.timezone)
        return schedule

    async def get(self, schedule_id: str) -> Schedule:
        return await self._store.get_schedule(schedule_id)

    async def list(
        self, *, workflow_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Schedule]:
        return await self._store.list_schedules(workflow_id=workflow_id, limit=limit,
                                                offset=offset)

    async def patch(self, schedule_id: str, body: SchedulePatch) -> Schedule:
        """Change a schedule. The next fire time is recomputed from now when the cron, the
        time zone or enabling changes it; a disabled schedule has none."""
        cron = parse_cron(body.cron) if body.cron is not None else None
        if body.timezone is not None:
            zone(body.timezone)
        async with self._lock:
            current = await self._store.get_schedule(schedule_id)
            updated = _patched(current, body, cron)
            now = self._clock.now()
            retimed = (updated.cron, updated.timezone) != (current.cron, current.timezone)
            first = next_fire(updated.cron, updated.timezone, now)  # validates the pair
            if not updated.enabled:
                next_run_at = None
            elif retimed or current.next_run_at is None:
                next_run_at = first
            else:
                next_run_at = current.next_run_at
            updated = msgspec.structs.replace(updated, next_run_at=next_run_at,
                                              updated_at=round(now, 3))
            await self._store.save_schedule(updated)
            self._changed(updated)
        return updated

    async def delete(self, schedule_id: str) -> None:
        async with self._lock:
            await self._store.delete_schedule(schedule_id)
            self._next.pop(schedule_id, None)
            self._arm()
        self._bus.publish(ScheduleRemoved(schedule_id))
        log.info("schedule_deleted", schedule_id=schedule_id)

    # -- firing
    async def _fire_when_woken(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for schedule_id in self._pop_due(self._clock.now()):
                async with self._lock:
                    await self._fire(schedule_id)
            self._arm()

    def _pop_due(self, now: float) -> list[str]:
        due: dict[str, None] = {}
        while self._heap and self._heap[0][0] <= now:
            when, schedule_id = heapq.heappop(self._heap)
            if self._next.get(schedule_id) == when:
                due[schedule_id] = None
        return list(due)

    async def _fire(self, schedule_id: str) -> None:
        try:
            schedule = await self._store.get_schedule(schedule_id)
        except NotFound:
            self._next.pop(schedule_id, None)
            return
        times = fires_due(schedule, self._clock.now())
        for i, when in enumerate(times):
            run_id, error = await self._start_run(schedule, when)
            pending = times[i + 1] if i + 1 < len(times) else None
            schedule = record_fire(schedule, self._clock.now(), run_id=run_id, error=error,
                                   next_run_at=pending)
            await self._store.save_schedule(schedule)
            self._bus.publish(ScheduleChanged(schedule))
        self._track(schedule)

    async def _start_run(self, schedule: Schedule, when: float) -> tuple[str | None, str | None]:
        try:
            run_id = await self._runs.start_run(schedule.workflow_id, schedule.params,
                                                trigger=TRIGGER)
        except Exception as exc:  # the workflow was deleted, its params are bad, ...
            log.warning("schedule_run_failed", schedule_id=schedule.schedule_id,
                        workflow_id=schedule.workflow_id, fire_time=when, error=str(exc))
            return None, str(exc) or type(exc).__name__
        log.info("schedule_fired", schedule_id=schedule.schedule_id,
                 workflow_id=schedule.workflow_id, fire_time=when, run_id=run_id)
        return run_id, None

    # -- the heap and the one timer
    def _changed(self, schedule: Schedule) -> None:
        self._track(schedule)
        self._bus.publish(ScheduleChanged(schedule))

    def _track(self, schedule: Schedule) -> None:
        if schedule.enabled and schedule.next_run_at is not None:
            self._next[schedule.schedule_id] = schedule.next_run_at
            heapq.heappush(self._heap, (schedule.next_run_at, schedule.schedule_id))
            if len(self._heap) > 2 * len(self._next) + 64:
                self._heap = [(when, sid) for sid, when in self._next.items()]
                heapq.heapify(self._heap)
        else:
            self._next.pop(schedule.schedule_id, None)
        self._arm()

    def _arm(self) -> None:
        """Point the one timer at the earliest live entry of the heap."""
        heap = self._heap
        while heap and self._next.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        when = heap[0][0] if heap and self._running else None
        if when == self._timer_at and self._timer is not None:
            return
        self._disarm()
        if when is not None:
            self._timer = self._clock.call_at(when, self._on_timer)
            self._timer_at = when

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._wake.set()


def _patched(current: Schedule, body: SchedulePatch, cron: str | None) -> Schedule:
    changes: dict[str, Any] = {
        name: value
        for name, value in (("cron", cron), ("timezone", body.timezone), ("params", body.params),
                            ("enabled", body.enabled), ("catchup", body.catchup))
        if value is not None
    }
    return msgspec.structs.replace(current, **changes)
