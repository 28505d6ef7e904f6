"""Cron schedules, pure: the model, validation, and fire-time arithmetic.

No clock reads, no I/O: every function takes the time it reasons about. Fire times are
computed by croniter in the schedule's own time zone and returned as Unix seconds.

Cron expressions have the five classic fields (minute hour day-of-month month day-of-week,
with croniter's extensions such as `L` and `#`) or are one of `@hourly`, `@daily`,
`@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`. An expression that is valid but
can never match (`0 0 31 2 *`) is rejected.

Daylight saving time, in the schedule's zone:
- Spring forward (a local time that does not exist that day, `30 2 * * *` in Europe/Berlin
  on the last Sunday of March): croniter's behaviour is kept. The fire moves to the first
  instant after the gap, 03:00 local summer time, once; fire times that do exist that day
  (`0 3 * * *`, `0 * * * *`) are unaffected. Several missing times (`15,45 2 * * *`)
  collapse into that one fire at 03:00.
- Fall back (the repeated hour in autumn): each local wall-clock time fires at most once,
  on its first pass (summer time). Fire times on the second pass (croniter's `fold=1`
  times) are skipped, so `30 2 * * *` fires once that night, and an hourly schedule has a
  two-hour real-time gap there, as classic cron's fixed-time jobs do.

Catch-up (`fires_due`): without it, a schedule whose fire time passed fires once however
many times it missed. With it, every missed fire time fires, oldest first, at most
`MAX_CATCHUP` of them; the times beyond that are skipped and the schedule continues from
its next fire time after now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import CroniterBadDateError, CroniterError, croniter

from plum.engine.model import Model
from plum.errors import Invalid

DEFAULT_TIMEZONE = "UTC"
MAX_CATCHUP = 100
ALIASES = frozenset({"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly",
                     "@annually"})


class Schedule(Model, frozen=True):
    schedule_id: str
    workflow_id: str
    cron: str
    timezone: str = DEFAULT_TIMEZONE
    params: dict[str, Any] = {}
    enabled: bool = True
    catchup: bool = False
    next_run_at: float | None = None
    """The next fire time; `None` while disabled."""
    last_run_at: float | None = None
    """When the schedule last fired (whether or not the run started)."""
    last_run_id: str | None = None
    """The run the last fire started; `None` when starting it failed (see `last_error`)."""
    last_error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


def parse_cron(cron: str) -> str:
    """The expression with its whitespace normalised; raises `Invalid(field="cron")`."""
    normal = " ".join(cron.split())
    if normal.startswith("@"):
        if normal.lower() not in ALIASES:
            raise Invalid(f"cron: unknown alias {normal!r}; use one of "
                          f"{', '.join(sorted(ALIASES))}", field="cron")
        return normal.lower()
    if len(normal.split(" ")) != 5:
        raise Invalid("cron: expected 5 fields (minute hour day-of-month month day-of-week)",
                      field="cron")
    if not croniter.is_valid(normal):
        raise Invalid(f"cron: not a valid cron expression: {normal!r}", field="cron")
    return normal


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; raises `Invalid(field="timezone")`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Invalid(f"timezone: unknown time zone {name!r} (expected an IANA name such as "
                      "'Europe/Berlin')", field="timezone") from None


def _second_pass(fire: datetime) -> bool:
    """True for a wall-clock time on its second pass through the repeated hour in autumn."""
    return fire.fold == 1 and fire.replace(fold=0).utcoffset() != fire.utcoffset()


def next_fire(cron: str, tz: str, after: float) -> float:
    """The first fire time strictly after `after` (see the module docstring for DST).

    Raises `Invalid(field="cron")` when the expression never matches.
    """
    start = datetime.fromtimestamp(after, zone(tz))
    try:
        times = croniter(cron, start)
        while True:  # ends: a repeated hour is finite, and croniter gives up on no match
            fire = times.get_next(datetime)
            if not _second_pass(fire):
                return fire.timestamp()
    except CroniterBadDateError:
        raise Invalid(f"cron: {cron!r} never matches a date", field="cron") from None
    except CroniterError as exc:
        raise Invalid(f"cron: {exc}", field="cron") from None


def fires_due(schedule: Schedule, now: float) -> list[float]:
    """The fire times to act on at `now`, oldest first (empty when nothing is due)."""
    first = schedule.next_run_at
    if not schedule.enabled or first is None or first > now:
        return []
    times = [first]
    if not schedule.catchup:
        return times
    while len(times) < MAX_CATCHUP:
        following = next_fire(schedule.cron, schedule.timezone, times[-1])
        if following > now:
            break
        times.append(following)
    return times


def record_fire(
    schedule: Schedule,
    now: float,
    *,
    run_id: str | None,
    error: str | None,
    next_run_at: float | None = None,
) -> Schedule:
    """The schedule after firing at `now`: the run it started (or why not), and its next
    fire time (`next_run_at` when more catch-up times are pending, else the first after
    `now`). Stored times keep millisecond precision, as the API says."""
    if next_run_at is None:
        next_run_at = next_fire(schedule.cron, schedule.timezone, now)
    return msgspec.structs.replace(
        schedule,
        next_run_at=next_run_at,
        last_run_at=round(now, 3),
        last_run_id=run_id,
        last_error=error,
        updated_at=round(now, 3),
    )
