"""Load balancing over a service's endpoints, and the in-flight counts it needs.

`order()` returns every candidate, the chosen one first and the others after it in the
order to fail over to. `round_robin` rotates a cursor per service over the endpoints sorted
by key (so a set that does not change is walked fairly); `random` shuffles;
`least_inflight` takes the endpoint with the fewest calls in flight, ties broken by the
round-robin rotation so equal load still spreads. Callers count a call with `track()`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from plum.discovery.model import Endpoint, EndpointKey


class Strategy(StrEnum):
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    LEAST_INFLIGHT = "least_inflight"


class Balancer:
    def __init__(self, rng: random.Random | None = None):
        self._rng = rng or random.Random()
        self._cursors: Counter[str] = Counter()
        self._inflight: Counter[EndpointKey] = Counter()

    def order(
        self, service: str, candidates: list[Endpoint], strategy: Strategy = Strategy.ROUND_ROBIN
    ) -> list[Endpoint]:
        if not candidates:
            return []
        if strategy == Strategy.RANDOM:
            shuffled = list(candidates)
            self._rng.shuffle(shuffled)
            return shuffled
        rotated = self._rotate(service, candidates)
        if strategy == Strategy.LEAST_INFLIGHT:
            rotated.sort(key=lambda e: self._inflight[e.key])  # stable: keeps the rotation
        return rotated

    def pick(
        self, service: str, candidates: list[Endpoint], strategy: Strategy = Strategy.ROUND_ROBIN
    ) -> Endpoint | None:
        ordered = self.order(service, candidates, strategy)
        return ordered[0] if ordered else None

    def _rotate(self, service: str, candidates: list[Endpoint]) -> list[Endpoint]:
        ordered = sorted(candidates, key=lambda e: e.key)
        start = self._cursors[service] % len(ordered)
        self._cursors[service] += 1
        return ordered[start:] + ordered[:start]

    @contextmanager
    def track(self, endpoint: Endpoint) -> Iterator[None]:
        """Count one call in flight to `endpoint` while the block runs."""
        key = endpoint.key
        self._inflight[key] += 1
        try:
            yield
        finally:
            self._inflight[key] -= 1
            if self._inflight[key] <= 0:
                del self._inflight[key]

    def inflight(self, endpoint: Endpoint) -> int:
        return self._inflight[endpoint.key]
