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
    states = list(upstream)
    if not states:
        return Decision.RUN
    done = sum(1 for s in states if s in NODE_TERMINAL)
    success = sum(1 for s in states if s == NodeState.SUCCEEDED)
    failed = sum(1 for s in states if s in FAILED_LIKE)
    skipped = sum(1 for s in states if s == NodeState.SKIPPED)
    all_done = done == len(states)
    match rule:
        case TriggerRule.ALL_SUCCESS:
            if failed:
                return Decision.UPSTREAM_FAILED
            if skipped:
                return Decision.SKIP
            return Decision.RUN if success == len(states) else None
        case TriggerRule.ONE_SUCCESS:
            if success:
                return Decision.RUN
            if not all_done:
                return None
            return Decision.SKIP if skipped == len(states) else Decision.UPSTREAM_FAILED
        case TriggerRule.ALL_FAILED:
            if success or skipped:
                return Decision.SKIP
            return Decision.RUN if failed == len(states) else None
        case TriggerRule.ONE_FAILED:
            if failed:
                return Decision.RUN
            return Decision.SKIP if all_done else None
        case TriggerRule.ALL_DONE:
            return Decision.RUN if all_done else None
        case TriggerRule.NONE_FAILED:
            if failed:
                return Decision.UPSTREAM_FAILED
            return Decision.RUN if all_done else None
    raise ValueError(f"unknown trigger rule {rule!r}")
