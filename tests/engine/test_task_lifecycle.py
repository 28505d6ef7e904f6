"""The pure task lifecycle: events in, transitions and commands out."""

import pytest

from plum.engine import tasks as lc
from plum.engine.tasks import (
    ArmRetry,
    ArmTimeout,
    Dispatch,
    StopExecution,
    TaskRun,
    TaskState,
    backoff_delay,
    check_transition,
)
from plum.errors import InvalidState

S = TaskState


def queued(**kw) -> TaskRun:
    return TaskRun(task_id="t", name="n", executor="embedded", state=S.QUEUED, **kw)


def started(now=100.0, **kw) -> TaskRun:
    return lc.start(queued(**kw), now).task


def running(now=100.0, **kw) -> TaskRun:
    return lc.mark_running(started(now, **kw), 1, now).task


def test_transition_table_allows_only_documented_moves():
    allowed = {
        (S.QUEUED, S.PENDING), (S.QUEUED, S.CANCELED),
        (S.PENDING, S.RUNNING), (S.PENDING, S.FAILED), (S.PENDING, S.TIMEOUT),
        (S.PENDING, S.CANCELED),
        (S.RUNNING, S.PENDING), (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED),
        (S.RUNNING, S.TIMEOUT), (S.RUNNING, S.CANCELED),
    }
    for src in S:
        for dst in S:
            if (src, dst) in allowed:
                check_transition(src, dst)
            else:
                with pytest.raises(InvalidState):
                    check_transition(src, dst)


def test_start_dispatches_attempt_one_with_a_deadline():
    tr = lc.start(queued(timeout_sec=30), 100.0)
    assert tr.task.state == S.PENDING and tr.task.attempt == 1
    assert tr.commands == (Dispatch("t", 1), ArmTimeout("t", 1, 130.0))


def test_zero_timeout_means_no_deadline():
    assert lc.start(queued(timeout_sec=0), 100.0).commands == (Dispatch("t", 1),)


def test_start_twice_is_refused():
    with pytest.raises(InvalidState):
        lc.start(started(), 101.0)


def test_running_then_success():
    task = running(now=100.0)
    assert task.state == S.RUNNING and task.started_at == 100.0
    tr = lc.finish(task, 1, True, {"x": 1}, None, 105.0)
    assert (tr.task.state, tr.task.result, tr.task.finished_at) == (S.SUCCEEDED, {"x": 1}, 105.0)
    assert tr.attempt.state == S.SUCCEEDED


@pytest.mark.parametrize("retries", [0, 2])
def test_failure_retries_with_exponential_backoff(retries):
    task = running(max_retries=retries, retry_backoff_sec=2.0)
    now = 100.0
    for attempt in range(1, retries + 1):
        tr = lc.finish(task, attempt, False, None, "boom", now)
        assert tr.task.state == S.PENDING and tr.task.attempt == attempt + 1
        assert tr.attempt.state == S.FAILED and tr.attempt.error == "boom"
        assert tr.commands == (ArmRetry("t", attempt + 1, now + 2.0 * 2 ** (attempt - 1)),)
        due = lc.retry_due(tr.task, attempt + 1, now + 100)
        assert due.commands[0] == Dispatch("t", attempt + 1)
        task = lc.mark_running(due.task, attempt + 1, now).task
    final = lc.finish(task, retries + 1, False, None, "boom", now)
    assert final.task.state == S.FAILED and final.task.error == "boom"
    assert final.commands == ()


def test_backoff_is_capped():
    assert backoff_delay(1.0, 1) == 1.0
    assert backoff_delay(1.0, 3) == 4.0
    assert backoff_delay(10.0, 30) == lc.MAX_BACKOFF_SEC


def test_timeout_stops_the_execution_and_retries():
    task = running(max_retries=1, timeout_sec=5)
    tr = lc.time_out(task, 1, 105.0)
    assert tr.commands[0] == StopExecution("t", 1)
    assert tr.task.state == S.PENDING and tr.task.attempt == 2
    assert tr.attempt.state == S.TIMEOUT
    last = lc.time_out(lc.mark_running(tr.task, 2, 110.0).task, 2, 115.0)
    assert last.task.state == S.TIMEOUT and last.commands == (StopExecution("t", 2),)


def test_timeout_while_still_pending():
    tr = lc.time_out(started(timeout_sec=5), 1, 105.0)
    assert tr.task.state == S.TIMEOUT


def test_stale_and_duplicate_events_are_ignored():
    task = running(max_retries=1)
    retried = lc.finish(task, 1, False, None, "x", 101.0).task
    assert lc.finish(retried, 1, True, "late", None, 102.0) is None  # older attempt
    assert lc.time_out(retried, 1, 102.0) is None
    assert lc.mark_running(retried, 1, 102.0) is None
    done = lc.finish(lc.mark_running(retried, 2, 103.0).task, 2, True, "ok", None, 104.0).task
    assert lc.finish(done, 2, True, "again", None, 105.0) is None  # duplicate
    assert lc.cancel(done, 105.0) is None


def test_cancel_never_retries_and_stops_active_work():
    tr = lc.cancel(running(max_retries=5), 101.0)
    assert tr.task.state == S.CANCELED
    assert tr.commands == (StopExecution("t", 1),)
    queued_cancel = lc.cancel(queued(), 101.0)
    assert queued_cancel.task.state == S.CANCELED and queued_cancel.commands == ()


def test_lost_executor_retries_or_fails():
    retried = lc.lost(running(max_retries=1), 101.0, "controller restarted")
    assert retried.task.state == S.PENDING and retried.attempt.error == "controller restarted"
    failed = lc.lost(running(), 101.0, "controller restarted")
    assert failed.task.state == S.FAILED and failed.task.error == "controller restarted"


def test_a_restart_waits_out_the_rest_of_a_retry_backoff():
    retried = lc.finish(running(max_retries=1, retry_backoff_sec=30.0), 1, False, None, "x",
                        100.0).task
    assert retried.retry_at == 130.0
    waiting = lc.resume(retried, 110.0)  # restarted 10 s into the 30 s backoff
    assert waiting.commands == (ArmRetry("t", 2, 130.0),)
    overdue = lc.resume(retried, 140.0)  # restarted after the backoff ended
    assert overdue.commands[0] == Dispatch("t", 2)
    dispatched = lc.retry_due(retried, 2, 130.0)
    assert dispatched.task.retry_at is None and dispatched.commands[0] == Dispatch("t", 2)
