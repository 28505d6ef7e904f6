"""Fakes for tests, shipped for SDK users too: a clock that jumps, an in-memory store."""

from plum.testing.clock import FakeClock

__all__ = ["FakeClock"]
