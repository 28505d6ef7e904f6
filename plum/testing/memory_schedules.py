"""In-memory cron schedules (the `MemoryStore` mixin)."""

from __future__ import annotations

from plum.engine.schedules import Schedule
from plum.errors import Conflict, NotFound
from plum.store.base import Page


def _missing(schedule_id: str) -> NotFound:
    return NotFound(f"schedule {schedule_id!r} not found", field="scheduleId")


class MemorySchedules:
    def _init_schedules(self) -> None:
        self._schedules: dict[str, Schedule] = {}  # in insertion order

    async def insert_schedule(self, schedule: Schedule) -> None:
        if schedule.schedule_id in self._schedules:
            raise Conflict(f"schedule {schedule.schedule_id!r} exists")
        self._schedules[schedule.schedule_id] = schedule

    async def save_schedule(self, schedule: Schedule) -> None:
        if schedule.schedule_id not in self._schedules:
            raise _missing(schedule.schedule_id)
        self._schedules[schedule.schedule_id] = schedule

    async def get_schedule(self, schedule_id: str) -> Schedule:
        try:
            return self._schedules[schedule_id]
        except KeyError:
            raise _missing(schedule_id) from None

    async def list_schedules(
        self, *, workflow_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Schedule]:
        items = [s for s in reversed(self._schedules.values())
                 if workflow_id is None or s.workflow_id == workflow_id]
        return Page(items[offset : offset + limit], len(items))

    async def delete_schedule(self, schedule_id: str) -> None:
        if self._schedules.pop(schedule_id, None) is None:
            raise _missing(schedule_id)

    async def enabled_schedules(self) -> list[Schedule]:
        return [s for s in self._schedules.values() if s.enabled]
