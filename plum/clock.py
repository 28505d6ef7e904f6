"""Time, injectable. Nothing else in Plum reads the wall clock or sleeps on its own.

`SystemClock` is the real one. `FakeClock` (in `plum.testing`) jumps forward on `advance()`
and fires due timers in deadline order.
"""

import asyncio
import time
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall time, Unix seconds."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""

    def call_at(self, when: float, callback, *args) -> TimerHandle:
        """Run `callback(*args)` on the loop once wall time reaches `when`."""

    async def sleep(self, seconds: float) -> None:
        """Sleep on this clock (for truly periodic work such as heartbeats)."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback, *args) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback, *args)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def clock_timer(clock: Clock, delay: float) -> tuple[asyncio.Future[None], TimerHandle]:
    """A future that `clock` resolves `delay` seconds from now (cancel the handle when done)."""
    future = asyncio.get_running_loop().create_future()
    return future, clock.call_at(clock.now() + delay, _resolve, future)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
