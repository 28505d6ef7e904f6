import asyncio

from plum.testing import FakeClock


def test_advance_fires_due_timers_in_deadline_order():
    clock = FakeClock(start=100.0)
    fired = []
    clock.call_at(105.0, fired.append, "b")
    clock.call_at(103.0, fired.append, "a")
    clock.call_at(110.0, fired.append, "c")
    assert clock.advance(6) == 2
    assert fired == ["a", "b"]
    assert clock.now() == 106.0
    clock.advance(10)
    assert fired == ["a", "b", "c"]


def test_callbacks_see_their_own_deadline_and_can_rearm():
    clock = FakeClock(start=0.0)
    seen = []

    def tick():
        seen.append(clock.now())
        if len(seen) < 3:
            clock.call_at(clock.now() + 5, tick)

    clock.call_at(5.0, tick)
    clock.advance(60)
    assert seen == [5.0, 10.0, 15.0]


def test_cancelled_timer_does_not_fire():
    clock = FakeClock()
    fired = []
    handle = clock.call_at(clock.now() + 1, fired.append, 1)
    handle.cancel()
    clock.advance(5)
    assert fired == []


async def test_sleep_returns_when_advanced():
    clock = FakeClock()
    sleeper = asyncio.ensure_future(clock.sleep(30))
    await asyncio.sleep(0)
    clock.advance(29)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, 1)
