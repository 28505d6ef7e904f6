"""A clock that only moves when told to.

`advance(seconds)` moves time forward and runs every timer that falls due, in deadline
order (ties in scheduling order), each with the clock set to its own deadline, so code
that re-arms a timer from inside its callback sees the time it would see for real.
"""

import asyncio
import heapq
import itertools


class _Timer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback, args: tuple):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0):
        self._now = start
        self._mono = 0.0
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def call_at(self, when: float, callback, *args) -> _Timer:
        timer = _Timer(when, callback, args)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        handle = self.call_at(self._now + seconds, _resolve, future)
        try:
            await future
        finally:
            handle.cancel()

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def advance(self, seconds: float) -> int:
        """Move time forward by `seconds`, firing due timers; returns how many fired."""
        target = self._now + seconds
        fired = 0
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            _, _, timer = heapq.heappop(self._heap)
            self._step_to(timer.when)
            timer.callback(*timer.args)
            fired += 1
        self._step_to(target)
        return fired

    def _step_to(self, when: float) -> None:
        if when > self._now:
            self._mono += when - self._now
            self._now = when


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
