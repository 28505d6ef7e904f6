"""Cron schedules."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from plum.engine.schedules import Schedule
from plum.errors import Conflict, NotFound
from plum.store.base import Page

_params_decoder = msgspec.json.Decoder(dict[str, Any])

_COLUMNS = (
    "schedule_id, workflow_id, cron, timezone, params, enabled, catchup, next_run_at, "
    "last_run_at, last_run_id, last_error, created_at, updated_at"
)
_PLACEHOLDERS = ", ".join("?" * len(_COLUMNS.split(",")))
_UPDATE = ", ".join(f"{c.strip()} = ?" for c in _COLUMNS.split(",")[1:])


def _params(s: Schedule) -> tuple:
    return (
        s.schedule_id, s.workflow_id, s.cron, s.timezone, msgspec.json.encode(s.params).decode(),
        int(s.enabled), int(s.catchup), s.next_run_at, s.last_run_at, s.last_run_id,
        s.last_error, s.created_at, s.updated_at,
    )


def _schedule(row: tuple) -> Schedule:
    (schedule_id, workflow_id, cron, tz, params, enabled, catchup, next_run_at, last_run_at,
     last_run_id, last_error, created_at, updated_at) = row
    return Schedule(
        schedule_id=schedule_id, workflow_id=workflow_id, cron=cron, timezone=tz,
        params=_params_decoder.decode(params), enabled=bool(enabled), catchup=bool(catchup),
        next_run_at=next_run_at, last_run_at=last_run_at, last_run_id=last_run_id,
        last_error=last_error, created_at=created_at, updated_at=updated_at,
    )


def _missing(schedule_id: str) -> NotFound:
    return NotFound(f"schedule {schedule_id!r} not found", field="scheduleId")


class SqliteSchedules:
    async def insert_schedule(self, schedule: Schedule) -> None:
        params = _params(schedule)

        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute(f"INSERT INTO schedules ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", params)
            except sqlite3.IntegrityError:
                raise Conflict(f"schedule {schedule.schedule_id!r} exists") from None

        await self._write(insert)

    async def save_schedule(self, schedule: Schedule) -> None:
        schedule_id, *rest = _params(schedule)

        def save(c: sqlite3.Connection) -> None:
            cursor = c.execute(f"UPDATE schedules SET {_UPDATE} WHERE schedule_id = ?",
                               (*rest, schedule_id))
            if cursor.rowcount == 0:
                raise _missing(schedule_id)

        await self._write(save)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM schedules WHERE schedule_id = ?", (schedule_id,)).fetchone())
        if row is None:
            raise _missing(schedule_id)
        return _schedule(row)

    async def list_schedules(
        self, *, workflow_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Schedule]:
        where, args = ("", ()) if workflow_id is None else (" WHERE workflow_id = ?",
                                                            (workflow_id,))

        def query(c: sqlite3.Connection) -> Page[Schedule]:
            rows = c.execute(f"SELECT {_COLUMNS} FROM schedules{where} ORDER BY seq DESC "
                             "LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
            total = c.execute(f"SELECT count(*) FROM schedules{where}", args).fetchone()[0]
            return Page([_schedule(r) for r in rows], total)

        return await self._read(query)

    async def delete_schedule(self, schedule_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM schedules WHERE schedule_id = ?",
                         (schedule_id,)).rowcount == 0:
                raise _missing(schedule_id)

        await self._write(delete)

    async def enabled_schedules(self) -> list[Schedule]:
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM schedules WHERE enabled = 1 ORDER BY seq").fetchall())
        return [_schedule(r) for r in rows]
