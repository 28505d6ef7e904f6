"""Trigger rules against the table in API.md, written out here independently of
`plum.engine.rules`: every multiset of 2 and 3 finished upstream states, the early
decisions taken while some upstreams are still Pending or Running, and the waits."""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations_with_replacement, product

import pytest

from plum.engine.dag import TriggerRule
from plum.engine.rules import Decision, NodeState, decide

R, S = TriggerRule, NodeState
RUN, SKIP, UF = Decision.RUN, Decision.SKIP, Decision.UPSTREAM_FAILED

FINISHED = (S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.SKIPPED, S.UPSTREAM_FAILED)
NOT_DONE = (S.PENDING, S.RUNNING)
FAILED = {S.FAILED, S.TIMEOUT, S.UPSTREAM_FAILED}  # "count as failed" (API.md)


class Counts:
    def __init__(self, states: tuple[NodeState, ...]):
        self.n = len(states)
        self.succeeded = sum(s == S.SUCCEEDED for s in states)
        self.failed = sum(s in FAILED for s in states)
        self.skipped = sum(s == S.SKIPPED for s in states)
        self.done = self.succeeded + self.failed + self.skipped
        self.all_done = self.done == self.n


Pred = Callable[[Counts], bool]
NEVER: Pred = lambda c: False  # noqa: E731

# The API.md table, column by column, for upstreams that are all done:
#   rule: (runs when, becomes Skipped when, becomes UpstreamFailed when)
TABLE: dict[TriggerRule, tuple[Pred, Pred, Pred]] = {
    R.ALL_SUCCESS: (
        lambda c: c.succeeded == c.n,
        lambda c: c.failed == 0 and c.skipped >= 1,
        lambda c: c.failed >= 1,
    ),
    R.ONE_SUCCESS: (
        lambda c: c.succeeded >= 1,
        lambda c: c.skipped == c.n,
        lambda c: c.succeeded == 0 and c.skipped < c.n,
    ),
    R.ALL_FAILED: (
        lambda c: c.failed == c.n,
        lambda c: c.succeeded + c.skipped >= 1,
        NEVER,
    ),
    R.ONE_FAILED: (
        lambda c: c.failed >= 1,
        lambda c: c.failed == 0,
        NEVER,
    ),
    R.ALL_DONE: (
        lambda c: True,
        NEVER,
        NEVER,
    ),
    R.NONE_FAILED: (
        lambda c: c.failed == 0,
        NEVER,
        lambda c: c.failed >= 1,
    ),
}

# The "decided early" column: what is final while some upstreams are not done yet.
EARLY: dict[TriggerRule, Callable[[Counts], Decision | None]] = {
    R.ALL_SUCCESS: lambda c: UF if c.failed else (SKIP if c.skipped else None),
    R.ONE_SUCCESS: lambda c: RUN if c.succeeded else None,
    R.ALL_FAILED: lambda c: SKIP if c.succeeded or c.skipped else None,
    R.ONE_FAILED: lambda c: RUN if c.failed else None,
    R.ALL_DONE: lambda c: None,
    R.NONE_FAILED: lambda c: UF if c.failed else None,
}


def expected_when_done(rule: TriggerRule, states: tuple[NodeState, ...]) -> Decision:
    counts = Counts(states)
    runs, skipped, upstream_failed = TABLE[rule]
    matches = [d for d, holds in ((RUN, runs), (SKIP, skipped), (UF, upstream_failed))
               if holds(counts)]
    assert len(matches) == 1, f"the test's table is ambiguous for {rule} {states}: {matches}"
    return matches[0]


def expected_early(rule: TriggerRule, states: tuple[NodeState, ...]) -> Decision | None:
    return EARLY[rule](Counts(states))


def _name(states: tuple[NodeState, ...]) -> str:
    return "+".join(s.value for s in states)


DONE_CASES = [
    pytest.param(rule, states, id=f"{rule}-{_name(states)}")
    for rule in TriggerRule
    for size in (2, 3)
    for states in combinations_with_replacement(FINISHED, size)
]

# every multiset of 2 and 3 upstreams with at least one Pending/Running among them
EARLY_CASES = [
    pytest.param(rule, states, id=f"{rule}-{_name(states)}")
    for rule in TriggerRule
    for size in (2, 3)
    for states in combinations_with_replacement(FINISHED + NOT_DONE, size)
    if any(s in NOT_DONE for s in states)
]


@pytest.mark.parametrize(("rule", "states"), DONE_CASES)
def test_decision_once_every_upstream_is_done(rule, states):
    want = expected_when_done(rule, states)
    assert decide(rule, states) == want
    assert decide(rule, reversed(states)) == want  # order is irrelevant


@pytest.mark.parametrize(("rule", "states"), EARLY_CASES)
def test_decision_while_some_upstreams_are_not_done(rule, states):
    assert decide(rule, states) == expected_early(rule, states)


@pytest.mark.parametrize(("rule", "states"), EARLY_CASES)
def test_an_early_decision_agrees_with_every_completion(rule, states):
    """Whatever the unfinished upstreams end as, the all-done column agrees with an early
    decision, with one exception: all_success is skipped on the first skip, and a failure
    arriving later does not turn it into UpstreamFailed (each decision is final, as in
    Airflow), although the all-done column alone would say so."""
    early = decide(rule, states)
    if early is None:
        return
    done = tuple(s for s in states if s not in NOT_DONE)
    for rest in product(FINISHED, repeat=len(states) - len(done)):
        final = expected_when_done(rule, done + rest)
        if rule == R.ALL_SUCCESS and early == SKIP and any(s in FAILED for s in rest):
            assert final == UF
        else:
            assert final == early, (rule, done + rest)


def test_all_success_depends_on_which_came_first():
    assert decide(R.ALL_SUCCESS, [S.SKIPPED, S.RUNNING]) == SKIP  # taken, final
    assert decide(R.ALL_SUCCESS, [S.SKIPPED, S.FAILED]) == UF  # both seen at once


# The early cases named in API.md, spelled out (a readable subset of the above).
NAMED_EARLY = [
    (R.ALL_SUCCESS, (S.FAILED, S.PENDING, S.RUNNING), UF),
    (R.ALL_SUCCESS, (S.RUNNING, S.TIMEOUT), UF),
    (R.ALL_SUCCESS, (S.SKIPPED, S.PENDING), SKIP),
    (R.ALL_SUCCESS, (S.SKIPPED, S.UPSTREAM_FAILED, S.RUNNING), UF),
    (R.ALL_SUCCESS, (S.SUCCEEDED, S.RUNNING), None),
    (R.ONE_SUCCESS, (S.PENDING, S.SUCCEEDED, S.RUNNING), RUN),
    (R.ONE_SUCCESS, (S.FAILED, S.SKIPPED, S.RUNNING), None),
    (R.ALL_FAILED, (S.SUCCEEDED, S.PENDING), SKIP),
    (R.ALL_FAILED, (S.SKIPPED, S.RUNNING), SKIP),
    (R.ALL_FAILED, (S.FAILED, S.RUNNING), None),
    (R.ONE_FAILED, (S.RUNNING, S.TIMEOUT), RUN),
    (R.ONE_FAILED, (S.SUCCEEDED, S.SKIPPED, S.PENDING), None),
    (R.NONE_FAILED, (S.UPSTREAM_FAILED, S.PENDING), UF),
    (R.NONE_FAILED, (S.SUCCEEDED, S.SKIPPED, S.RUNNING), None),
    (R.ALL_DONE, (S.FAILED, S.SUCCEEDED, S.RUNNING), None),
    (R.ALL_DONE, (S.SKIPPED, S.PENDING), None),
]


@pytest.mark.parametrize(("rule", "states", "want"), NAMED_EARLY,
                         ids=[f"{r}-{_name(s)}" for r, s, _ in NAMED_EARLY])
def test_named_early_decisions_and_waits(rule, states, want):
    assert decide(rule, states) == want


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_no_upstream_runs(rule):
    assert decide(rule, []) == RUN


@pytest.mark.parametrize("rule", list(TriggerRule))
@pytest.mark.parametrize("waiting", NOT_DONE)
def test_every_rule_waits_while_nothing_is_done(rule, waiting):
    assert decide(rule, [waiting]) is None
    assert decide(rule, [waiting, S.PENDING]) is None


@pytest.mark.parametrize(("rule", "state", "want"), [
    (R.ALL_SUCCESS, S.SUCCEEDED, RUN), (R.ALL_SUCCESS, S.SKIPPED, SKIP),
    (R.ALL_SUCCESS, S.TIMEOUT, UF), (R.ONE_SUCCESS, S.SKIPPED, SKIP),
    (R.ONE_SUCCESS, S.FAILED, UF), (R.ALL_FAILED, S.UPSTREAM_FAILED, RUN),
    (R.ALL_FAILED, S.SUCCEEDED, SKIP), (R.ONE_FAILED, S.SUCCEEDED, SKIP),
    (R.ALL_DONE, S.FAILED, RUN), (R.NONE_FAILED, S.SKIPPED, RUN),
    (R.NONE_FAILED, S.TIMEOUT, UF),
])
def test_single_upstream(rule, state, want):
    assert decide(rule, [state]) == want
