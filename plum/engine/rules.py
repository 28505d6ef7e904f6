"""Trigger rules, decided exactly as Airflow (2.1+, 3.x) decides them, over the states of a
node's direct upstreams. Each decision is final; some are taken before every upstream is
done (the table in API.md)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from plum.engine.dag import TriggerRule


class NodeState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMEOUT = "Timeout"
    CANCELED = "Canceled"
    SKIPPED = "Skipped"
    UPSTREAM_FAILED = "UpstreamFailed"


NODE_TERMINAL = frozenset({
    NodeState.SUCCEEDED, NodeState.FAILED, NodeState.TIMEOUT, NodeState.CANCELED,
    NodeState.SKIPPED, NodeState.UPSTREAM_FAILED,
})
# What counts as "failed" for trigger rules and for the run's outcome.
FAILED_LIKE = frozenset({
    NodeState.FAILED, NodeState.TIMEOUT, NodeState.UPSTREAM_FAILED, NodeState.CANCELED,
})


class Decision(StrEnum):
    RUN = "run"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


def decide(rule: TriggerRule, upstream: Iterable[NodeState]) -> Decision | None:
    """The decision for a node given its upstreams' (effective) states, or None to wait."""
    tally = Tally()
    for state in upstream:
        tally.add(state)
    return decide_tally(rule, tally)


class Tally:
    """How many of a node's upstreams ended, and how. Kept up to date as they finish, so a
    fan-in of n upstreams costs O(1) per upstream instead of O(n)."""

    __slots__ = ("failed", "skipped", "success", "total")

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self.success = self.failed = self.skipped = 0

    def add(self, state: NodeState, *, counted: bool = False) -> None:
        """Count one upstream that ended in `state` (`counted`: already in `total`)."""
        if not counted:
            self.total += 1
        if state == NodeState.SUCCEEDED:
            self.success += 1
        elif state in FAILED_LIKE:
            self.failed += 1
        elif state == NodeState.SKIPPED:
            self.skipped += 1

    @property
    def done(self) -> int:
        return self.success + self.failed + self.skipped


def decide_tally(rule: TriggerRule, t: Tally) -> Decision | None:
    if t.total == 0:
        return Decision.RUN
    all_done = t.done == t.total
    match rule:
        case TriggerRule.ALL_SUCCESS:
            if t.failed:
                return Decision.UPSTREAM_FAILED
            if t.skipped:
                return Decision.SKIP
            return Decision.RUN if t.success == t.total else None
        case TriggerRule.ONE_SUCCESS:
            if t.success:
                return Decision.RUN
            if not all_done:
                return None
            return Decision.SKIP if t.skipped == t.total else Decision.UPSTREAM_FAILED
        case TriggerRule.ALL_FAILED:
            if t.success or t.skipped:
                return Decision.SKIP
            return Decision.RUN if t.failed == t.total else None
        case TriggerRule.ONE_FAILED:
            if t.failed:
                return Decision.RUN
            return Decision.SKIP if all_done else None
        case TriggerRule.ALL_DONE:
            return Decision.RUN if all_done else None
        case TriggerRule.NONE_FAILED:
            if t.failed:
                return Decision.UPSTREAM_FAILED
            return Decision.RUN if all_done else None
    raise ValueError(f"unknown trigger rule {rule!r}")
