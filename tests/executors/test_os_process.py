"""The os_process executor against real processes: output, limits, errors, cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from plum.clock import SystemClock
from plum.errors import Invalid
from plum.executors.base import ExecutionRequest, ExecutorKind, LogStream, SimpleContext
from plum.executors.os_process import (
    MAX_LOG_LINE,
    OsProcessExecutor,
    OsProcessPayload,
    parse_os_process_payload,
    run_process,
)
from tests.support.pids import alive, wait_gone

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0  # generous: the machine may be loaded; never reached when all is well


async def run(command: str, *args: str, **options):
    fields = {k: options.pop(k) for k in ("working_dir", "env", "input", "shell") if k in options}
    spec = OsProcessPayload(command=command, args=list(args), **fields)
    return await asyncio.wait_for(run_process(spec, clock=SystemClock(), **options), DEADLINE)


def sh(script: str, *args: str, **options):
    return run("/bin/sh", "-c", script, *args, **options)




# --- results -------------------------------------------------------------------------------


async def test_success_captures_stdout_and_stderr():
    result = await sh("echo out; echo err >&2")
    assert result.ok and result.error is None
    assert result.result == {
        "command": "/bin/sh",
        "args": ["-c", "echo out; echo err >&2"],
        "workingDir": None,
        "exitCode": 0,
        "durationMs": result.result["durationMs"],
        "stdout": "out\n",
        "stderr": "err\n",
    }


async def test_duration_is_measured_on_the_clock():
    result = await run("sleep", "0.05")
    assert 0 < result.result["durationMs"] < 10_000


async def test_non_zero_exit_is_a_failure_result():
    result = await sh("echo partial; exit 3")
    assert not result.ok
    assert result.error == "process exited with code 3"
    assert result.result["exitCode"] == 3
    assert result.result["stdout"] == "partial\n"


async def test_death_by_signal_is_a_failure_with_negative_exit_code():
    result = await sh("kill -KILL $$")
    assert result.error == "process killed by signal SIGKILL"
    assert result.result["exitCode"] == -signal.SIGKILL


async def test_input_goes_to_stdin():
    result = await run("cat", input="hello\nworld")
    assert result.result["stdout"] == "hello\nworld"


async def test_without_input_stdin_is_empty():
    result = await run("cat")
    assert result.ok and result.result["stdout"] == ""


async def test_input_to_a_process_that_never_reads_it():
    result = await run("true", input="x" * 1_000_000)
    assert result.ok


async def test_env_layers_payload_over_extra_over_inherited():
    result = await sh(
        'printf "%s %s %s" "$A" "$B" "${PATH:+path}"',
        env={"A": "payload"},
        extra_env={"A": "extra", "B": "extra"},
    )
    assert result.result["stdout"] == "payload extra path"


async def test_working_dir(tmp_path: Path):
    result = await run("pwd", working_dir=str(tmp_path))
    assert os.path.realpath(result.result["stdout"].strip()) == os.path.realpath(tmp_path)
    assert result.result["workingDir"] == str(tmp_path)


async def test_shell_runs_command_with_quoted_args():
    result = await run("echo hi | tr a-z A-Z; echo", "a  b", "$HOME", "'q'", shell=True)
    assert result.result["stdout"] == "HI\na  b $HOME 'q'\n"


async def test_output_that_is_not_utf8_is_replaced():
    result = await sh(r"printf 'ok\377'")
    assert result.result["stdout"] == "ok\ufffd"


# --- output limits -------------------------------------------------------------------------


@pytest.mark.parametrize("redirect, stream", [("", "stdout"), (">&2", "stderr")])
async def test_output_beyond_the_cap_is_dropped_and_flagged(redirect: str, stream: str):
    result = await sh(f"yes x | head -c 300000 {redirect}; echo done", output_cap=100_000)
    assert result.ok
    assert len(result.result[stream]) == 100_000
    assert result.result[stream].startswith("x\nx\n")
    assert result.result["truncated"] is True


async def test_output_within_the_cap_has_no_truncated_flag():
    result = await sh("yes x | head -c 1000", output_cap=1000)
    assert len(result.result["stdout"]) == 1000
    assert "truncated" not in result.result


async def test_cap_in_the_middle_of_a_character_drops_that_character():
    result = await run("printf", "\u00e9\u00e9\u00e9", output_cap=5)
    assert result.result["stdout"] == "\u00e9\u00e9"
    assert result.result["truncated"] is True


async def test_very_long_line_without_newline():
    lines: list[str] = []
    code = "import sys; sys.stdout.write('a' * 1_000_000)"
    result = await run(sys.executable, "-c", code, log=lambda _s, line: lines.append(line))
    assert result.ok
    assert result.result["stdout"] == "a" * 1_000_000
    assert "truncated" not in result.result
    assert all(len(line) <= MAX_LOG_LINE for line in lines)
    assert "".join(lines) == result.result["stdout"]


# --- log lines -----------------------------------------------------------------------------


async def test_log_gets_each_line_of_each_stream_in_order():
    lines: list[tuple[LogStream, str]] = []
    await sh("echo a; echo b >&2; echo c; printf tail", log=lambda s, ln: lines.append((s, ln)))
    assert [ln for s, ln in lines if s is LogStream.STDOUT] == ["a", "c", "tail"]
    assert [ln for s, ln in lines if s is LogStream.STDERR] == ["b"]


async def test_a_failing_log_callback_is_a_bug_and_propagates():
    def log(stream: LogStream, line: str) -> None:
        raise RuntimeError("log broke")

    with pytest.raises(RuntimeError, match="log broke"):
        await sh("echo hi; sleep 300", log=log, kill_grace=0.5)


# --- user errors ---------------------------------------------------------------------------


async def test_command_not_found():
    result = await run("nosuchcmd-plum")
    assert not result.ok
    assert result.error == "command not found: nosuchcmd-plum"


async def test_command_not_executable(tmp_path: Path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    result = await run(str(script))
    assert result.error == f"permission denied: {script}"


async def test_working_dir_missing(tmp_path: Path):
    result = await run("pwd", working_dir=str(tmp_path / "missing"))
    assert result.error == f"working directory not found: {tmp_path / 'missing'}"


# --- payload validation --------------------------------------------------------------------


def test_parse_full_payload():
    spec = parse_os_process_payload({
        "command": "ls", "args": ["-l"], "workingDir": "/tmp", "env": {"A": "1"},
        "input": "x", "shell": True,
    })
    assert spec == OsProcessPayload(
        command="ls", args=["-l"], working_dir="/tmp", env={"A": "1"}, input="x", shell=True
    )
    assert parse_os_process_payload({"command": "ls"}) == OsProcessPayload(command="ls")


@pytest.mark.parametrize(
    "payload, field",
    [
        (None, "payload"),
        ("ls", "payload"),
        ([], "payload"),
        ({}, "payload.command"),
        ({"command": ""}, "payload.command"),
        ({"command": "  "}, "payload.command"),
        ({"command": 5}, "payload.command"),
        ({"command": "l\0s"}, "payload.command"),
        ({"command": "ls", "args": "-l"}, "payload.args"),
        ({"command": "ls", "args": ["-l", 1]}, "payload.args"),
        ({"command": "ls", "args": ["a\0"]}, "payload.args"),
        ({"command": "ls", "workingDir": 3}, "payload.workingDir"),
        ({"command": "ls", "env": []}, "payload.env"),
        ({"command": "ls", "env": {"A": 1}}, "payload.env"),
        ({"command": "ls", "env": {"A=B": "1"}}, "payload.env"),
        ({"command": "ls", "env": {"": "1"}}, "payload.env"),
        ({"command": "ls", "input": 5}, "payload.input"),
        ({"command": "ls", "shell": "yes"}, "payload.shell"),
    ],
)
def test_invalid_payload_names_the_field(payload, field: str):
    with pytest.raises(Invalid) as caught:
        parse_os_process_payload(payload)
    assert caught.value.field == field
    assert caught.value.message


def test_invalid_payload_message_points_at_the_element():
    with pytest.raises(Invalid, match=r"invalid payload\.args\[1\]: Expected `str`, got `int`"):
        parse_os_process_payload({"command": "ls", "args": ["-l", 1]})
    with pytest.raises(Invalid, match=r"payload\.command is required"):
        parse_os_process_payload({})


# --- the executor --------------------------------------------------------------------------


def request(payload) -> ExecutionRequest:
    return ExecutionRequest(
        task_id="t1", attempt=1, name="p", executor=ExecutorKind.OS_PROCESS, payload=payload
    )


async def test_executor_marks_running_and_logs():
    executor = OsProcessExecutor(SystemClock(), extra_env={"GREETING": "hi"})
    ctx = SimpleContext()
    result = await executor.run(request({"command": "sh", "args": ["-c", "echo $GREETING"]}), ctx)
    assert executor.kind is ExecutorKind.OS_PROCESS
    assert result.ok and result.result["stdout"] == "hi\n"
    assert ctx.running
    assert ctx.lines == [(LogStream.STDOUT, "hi")]


async def test_executor_turns_an_invalid_payload_into_a_failure():
    ctx = SimpleContext()
    result = await OsProcessExecutor(SystemClock()).run(request({"args": []}), ctx)
    assert not result.ok
    assert result.error == "payload.command is required"
    assert not ctx.running


# --- background children and cancellation --------------------------------------------------


async def test_background_child_of_a_finished_process_is_left_alone():
    result = await sh("sleep 300 >/dev/null 2>&1 & echo $!")
    child = int(result.result["stdout"])
    try:
        assert result.ok and alive(child)
    finally:
        os.kill(child, signal.SIGKILL)


async def test_background_child_holding_the_pipes_does_not_hold_the_result():
    result = await sh("sleep 300 & echo $!", drain_grace=0.2)
    child = int(result.result["stdout"])
    try:
        assert result.ok and alive(child)
    finally:
        os.kill(child, signal.SIGKILL)


async def start_cancellable(script: str, *args: str, kill_grace: float):
    """Start `script`; return its task, the leader pid and its first stdout line."""
    loop = asyncio.get_running_loop()
    leader, first_line = loop.create_future(), loop.create_future()

    async def on_spawn(pid: int) -> None:
        leader.set_result(pid)

    def log(stream: LogStream, line: str) -> None:
        if not first_line.done():
            first_line.set_result(line)

    spec = OsProcessPayload(command="/bin/sh", args=["-c", script, *args])
    task = asyncio.create_task(run_process(
        spec, clock=SystemClock(), log=log, on_spawn=on_spawn, kill_grace=kill_grace
    ))
    return task, await asyncio.wait_for(leader, DEADLINE), await asyncio.wait_for(
        first_line, DEADLINE
    )


async def cancel(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)


async def test_cancel_kills_the_whole_group():
    task, leader, line = await start_cancellable("sleep 300 & echo $!; wait", kill_grace=5.0)
    child = int(line)
    await cancel(task)
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)  # gone and reaped
    assert await wait_gone(child)


async def test_cancel_sends_sigterm_first_and_waits_for_a_clean_exit(tmp_path: Path):
    marker = tmp_path / "marker"
    script = """trap 'echo bye > "$0"; exit 0' TERM; echo ready; sleep 300 & wait"""
    task, leader, _ = await start_cancellable(script, str(marker), kill_grace=5.0)
    await cancel(task)
    assert marker.read_text() == "bye\n"
    assert not alive(leader)


async def test_cancel_sigkills_a_group_that_ignores_sigterm():
    loop = asyncio.get_running_loop()
    script = "trap '' TERM; sleep 300 & echo $!; wait"
    task, leader, line = await start_cancellable(script, kill_grace=0.3)
    started = loop.time()
    await cancel(task)
    assert loop.time() - started < DEADLINE
    assert not alive(leader)
    assert await wait_gone(int(line))


async def test_a_second_cancel_does_not_cut_the_cleanup_short():
    task, leader, line = await start_cancellable(
        "trap '' TERM; sleep 300 & echo $!; wait", kill_grace=0.5
    )
    task.cancel()
    await asyncio.sleep(0)  # let the first cancellation reach the cleanup
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)
    assert not alive(leader)
    assert await wait_gone(int(line))
