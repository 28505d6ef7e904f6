"""Pure cron arithmetic: validation, next fire times across DST, what is due, catch-up."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from plum.engine.schedules import (
    MAX_CATCHUP,
    Schedule,
    fires_due,
    next_fire,
    parse_cron,
    record_fire,
    zone,
)
from plum.errors import Invalid

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


def ts(tz: ZoneInfo, *parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=tz, fold=fold).timestamp()


def fires(cron: str, tz: str, after: float, n: int) -> list[float]:
    out = []
    for _ in range(n):
        after = next_fire(cron, tz, after)
        out.append(after)
    return out


def utc(*parts: int) -> float:
    return ts(UTC, *parts)


# -- validation


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("  0   3 * *   mon-fri ", "0 3 * * mon-fri"),
        ("@daily", "@daily"),
        ("@Hourly", "@hourly"),
        ("0 0 L * *", "0 0 L * *"),
    ],
)
def test_parse_cron_accepts_and_normalises(given, normal):
    assert parse_cron(given) == normal


@pytest.mark.parametrize(
    "bad", ["", "foo", "* * * *", "* * * * * *", "61 * * * *", "*/0 * * * *", "@reboot",
            "H * * * *", "0 0 1 1 * 2030"]
)
def test_parse_cron_rejects_naming_the_field(bad):
    with pytest.raises(Invalid) as err:
        parse_cron(bad)
    assert err.value.field == "cron"


def test_an_expression_that_never_matches_is_invalid():
    parse_cron("0 0 31 2 *")  # well-formed ...
    with pytest.raises(Invalid) as err:
        next_fire("0 0 31 2 *", "UTC", utc(2024, 1, 1))  # ... but February has no 31st
    assert err.value.field == "cron"


@pytest.mark.parametrize("bad", ["", "utc", "Europe", "Mars/Olympus", "../etc/passwd",
                                 "/etc/localtime", "Europe/Berlin ", "x" * 300])
def test_unknown_time_zones_are_invalid(bad):
    with pytest.raises(Invalid) as err:
        zone(bad)
    assert err.value.field == "timezone"
    with pytest.raises(Invalid) as err:
        next_fire("* * * * *", bad, 0.0)
    assert err.value.field == "timezone"


# -- next_fire


def test_next_fire_is_strictly_after():
    t = utc(2024, 1, 1, 12, 0)
    assert next_fire("* * * * *", "UTC", t) == t + 60
    assert next_fire("* * * * *", "UTC", t - 0.5) == t
    assert next_fire("0 * * * *", "UTC", t) == t + 3600


def test_next_fire_is_computed_in_the_schedules_zone():
    after = utc(2024, 1, 15, 0, 0)
    assert next_fire("0 9 * * *", "Europe/Berlin", after) == utc(2024, 1, 15, 8, 0)
    assert next_fire("0 9 * * *", "America/New_York", after) == utc(2024, 1, 15, 14, 0)
    assert next_fire("0 9 * * *", "UTC", after) == utc(2024, 1, 15, 9, 0)


def test_daily_fire_keeps_local_time_across_spring_forward_in_berlin():
    # 2024-03-31: 02:00 CET -> 03:00 CEST. 09:00 local is 08:00 UTC before, 07:00 UTC after.
    got = fires("0 9 * * *", "Europe/Berlin", ts(BERLIN, 2024, 3, 30, 12), 3)
    assert got == [utc(2024, 3, 31, 7), utc(2024, 4, 1, 7), utc(2024, 4, 2, 7)]
    assert fires("0 9 * * *", "Europe/Berlin", ts(BERLIN, 2024, 3, 29, 12), 1) == [
        utc(2024, 3, 30, 8)
    ]


def test_a_nonexistent_local_time_fires_once_right_after_the_gap():
    # 02:30 does not exist in Berlin on 2024-03-31: croniter's choice, 03:00 CEST, is kept.
    got = fires("30 2 * * *", "Europe/Berlin", ts(BERLIN, 2024, 3, 30, 12), 3)
    assert got == [ts(BERLIN, 2024, 3, 31, 3, 0), ts(BERLIN, 2024, 4, 1, 2, 30),
                   ts(BERLIN, 2024, 4, 2, 2, 30)]
    assert got[0] == utc(2024, 3, 31, 1, 0)
    # Several times inside the gap collapse into that one fire.
    got = fires("15,45 2 * * *", "Europe/Berlin", ts(BERLIN, 2024, 3, 31, 0), 2)
    assert got == [ts(BERLIN, 2024, 3, 31, 3, 0), ts(BERLIN, 2024, 4, 1, 2, 15)]


def test_hourly_skips_the_missing_hour_in_spring():
    got = fires("0 * * * *", "Europe/Berlin", ts(BERLIN, 2024, 3, 31, 0, 30), 3)
    assert got == [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)]
    assert [datetime.fromtimestamp(t, BERLIN).hour for t in got] == [1, 3, 4]


def test_the_repeated_hour_in_autumn_fires_once_in_berlin():
    # 2024-10-27: 03:00 CEST -> 02:00 CET, so 02:30 happens twice; it fires on the first pass.
    got = fires("30 2 * * *", "Europe/Berlin", ts(BERLIN, 2024, 10, 26, 12), 3)
    assert got == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30), utc(2024, 10, 29, 1, 30)]


def test_the_repeated_hour_in_autumn_fires_once_in_new_york():
    # 2024-11-03: 02:00 EDT -> 01:00 EST, so 01:30 happens twice.
    got = fires("30 1 * * *", "America/New_York", ts(NEW_YORK, 2024, 11, 2, 12), 2)
    assert got == [ts(NEW_YORK, 2024, 11, 3, 1, 30, fold=0), ts(NEW_YORK, 2024, 11, 4, 1, 30)]
    assert got[0] == utc(2024, 11, 3, 5, 30)


def test_hourly_and_half_hourly_skip_the_second_pass_in_autumn():
    got = fires("0 * * * *", "Europe/Berlin", ts(BERLIN, 2024, 10, 27, 0, 30), 4)
    assert got == [utc(2024, 10, 26, 23), utc(2024, 10, 27, 0), utc(2024, 10, 27, 2),
                   utc(2024, 10, 27, 3)]
    assert [datetime.fromtimestamp(t, BERLIN).hour for t in got] == [1, 2, 3, 4]
    got = fires("*/30 * * * *", "Europe/Berlin", ts(BERLIN, 2024, 10, 27, 1, 45), 4)
    assert got == [utc(2024, 10, 27, 0), utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 2),
                   utc(2024, 10, 27, 2, 30)]


def test_starting_inside_the_second_pass_waits_for_the_next_day():
    inside = ts(BERLIN, 2024, 10, 27, 2, 10, fold=1)
    assert next_fire("30 2 * * *", "Europe/Berlin", inside) == ts(BERLIN, 2024, 10, 28, 2, 30)
    assert next_fire("0 3 * * *", "Europe/Berlin", inside) == ts(BERLIN, 2024, 10, 27, 3, 0)


# -- fires_due


def schedule(next_run_at: float | None, **kw) -> Schedule:
    return Schedule(schedule_id="s", workflow_id="w", cron=kw.pop("cron", "0 * * * *"),
                    next_run_at=next_run_at, **kw)


def test_nothing_is_due_before_the_fire_time_or_when_disabled():
    t = utc(2024, 1, 1, 12)
    assert fires_due(schedule(t), t - 0.001) == []
    assert fires_due(schedule(t, enabled=False), t + 10) == []
    assert fires_due(schedule(None), t) == []


def test_due_exactly_at_the_fire_time():
    t = utc(2024, 1, 1, 12)
    assert fires_due(schedule(t), t) == [t]
    assert fires_due(schedule(t, catchup=True), t) == [t]


def test_without_catchup_missed_times_fire_once():
    t = utc(2024, 1, 1, 12)
    assert fires_due(schedule(t), t + 5 * 3600 + 1) == [t]


def test_with_catchup_every_missed_time_fires_oldest_first():
    t = utc(2024, 1, 1, 12)
    got = fires_due(schedule(t, catchup=True), t + 3 * 3600 + 59)
    assert got == [t, t + 3600, t + 7200, t + 10800]


def test_catchup_is_capped():
    t = utc(2024, 1, 1, 0)
    got = fires_due(schedule(t, cron="* * * * *", catchup=True), t + 7 * 86400)
    assert len(got) == MAX_CATCHUP
    assert got == [t + 60 * i for i in range(MAX_CATCHUP)]


def test_catchup_in_a_zone_across_the_repeated_hour_fires_each_local_time_once():
    first = utc(2024, 10, 26, 23)  # 01:00 CEST
    s = schedule(first, catchup=True, timezone="Europe/Berlin")
    got = fires_due(s, utc(2024, 10, 27, 4))
    assert got == [first, utc(2024, 10, 27, 0), utc(2024, 10, 27, 2), utc(2024, 10, 27, 3),
                   utc(2024, 10, 27, 4)]


# -- record_fire


def test_record_fire_moves_on_from_now():
    t = utc(2024, 1, 1, 12)
    fired = record_fire(schedule(t), t + 90, run_id="r1", error=None)
    assert (fired.next_run_at, fired.last_run_at, fired.last_run_id, fired.last_error) == (
        t + 3600, t + 90, "r1", None)
    assert fired.updated_at == t + 90
    failed = record_fire(fired, t + 3600, run_id=None, error="workflow gone")
    assert (failed.next_run_at, failed.last_run_id, failed.last_error) == (
        t + 7200, None, "workflow gone")


def test_record_fire_keeps_a_pending_catchup_time():
    t = utc(2024, 1, 1, 12)
    fired = record_fire(schedule(t, catchup=True), t + 9000, run_id="r1", error=None,
                        next_run_at=t + 3600)
    assert fired.next_run_at == t + 3600
