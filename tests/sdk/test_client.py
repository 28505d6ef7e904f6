"""`plum.sdk.Client` against a real `plum serve` process: tasks, waits on the SSE stream,
workflows, discovery, and the JSON error shape mapped onto `PlumApiError`."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from plum.engine.machine import RunState
from plum.engine.rules import NodeState
from plum.engine.tasks import TaskState
from plum.errors import ErrorCode
from plum.sdk import Client, PlumApiError
from tests.support.procs import PlumProcess, free_port, start_plum

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DEADLINE = 30.0  # generous; never reached when all is well


@pytest.fixture
async def plum(tmp_path):
    async with start_plum(tmp_path) as process:
        yield process


@pytest.fixture
async def client(plum: PlumProcess):
    async with Client(plum.url) as sdk:
        yield sdk


async def test_create_and_wait_task(client: Client):
    task = await client.create_task("builtin.echo", "embedded", {"greeting": "hi"})
    assert task.task_id and task.name == "builtin.echo"
    done = await client.wait_task(task.task_id, timeout=DEADLINE)
    assert done.state == TaskState.SUCCEEDED
    assert done.result == {"echo": {"greeting": "hi"}}
    assert [a.state for a in done.attempts] == [TaskState.SUCCEEDED]


async def test_wait_returns_at_once_for_a_finished_task(client: Client):
    task = await client.create_task("builtin.fail", "embedded", {"message": "nope"})
    first = await client.wait_task(task.task_id, timeout=DEADLINE)
    again = await client.wait_task(task.task_id, timeout=DEADLINE)
    assert first.state == again.state == TaskState.FAILED
    assert again.error == "nope"


async def test_wait_times_out_and_cancel_ends_the_wait(client: Client):
    task = await client.create_task("builtin.sleep", "embedded", {"seconds": 60})
    with pytest.raises(TimeoutError):
        await client.wait_task(task.task_id, timeout=0.3)
    waiter = asyncio.create_task(client.wait_task(task.task_id, timeout=DEADLINE))
    canceled = await client.cancel_task(task.task_id)
    assert canceled.state == TaskState.CANCELED
    assert (await waiter).state == TaskState.CANCELED


async def test_queued_task_starts_on_request(client: Client):
    task = await client.create_task("builtin.echo", "embedded", {"n": 1}, auto_start=False)
    assert task.state == TaskState.QUEUED
    assert [t.task_id for t in await client.list_tasks(state="Queued")] == [task.task_id]
    await client.start_task(task.task_id)
    assert (await client.wait_task(task.task_id, DEADLINE)).state == TaskState.SUCCEEDED


async def test_task_defs_run_with_their_default_payload(client: Client):
    definition = await client.create_task_def(
        "sdk.echo", "embedded", default_payload={"a": 1}, description="echo via sdk")
    # an embedded definition whose name is not a builtin needs a worker; run a builtin's
    # definition instead, looked up by name
    assert definition.name == "sdk.echo" and definition.default_payload == {"a": 1}
    [echo] = [d for d in await client.list_task_defs() if d.name == "builtin.echo"]
    assert echo.builtin
    task = await client.run_task_def(echo.def_id, {"b": 2})
    done = await client.wait_task(task.task_id, DEADLINE)
    assert done.def_id == echo.def_id
    assert done.result == {"echo": {"b": 2}}
    listed = await client.list_tasks(def_id=echo.def_id)
    assert [t.task_id for t in listed] == [task.task_id]


async def test_dag_workflow_run_and_wait(client: Client):
    workflow = await client.create_workflow({
        "name": "sdk-dag",
        "params": {"who": "plum"},
        "nodes": [
            {"id": "hello", "type": "task", "taskName": "builtin.echo", "executor": "embedded",
             "payload": {"who": "${params.who}"}},
            {"id": "again", "type": "task", "taskName": "builtin.echo", "executor": "embedded",
             "payload": {"previous": "${nodes.hello.result.echo.who}"}},
        ],
        "edges": [{"from": "hello", "to": "again"}],
    })
    assert workflow.version == 1
    run = await client.run_workflow(workflow.workflow_id, {"who": "sdk"})
    done = await client.wait_run(run.run_id, timeout=DEADLINE)
    assert done.state == RunState.SUCCEEDED
    nodes = {n.node_id: n for n in done.nodes}
    assert nodes["again"].state == NodeState.SUCCEEDED
    assert nodes["again"].result == {"echo": {"previous": "sdk"}}
    assert (await client.get_run(run.run_id)).state == RunState.SUCCEEDED


async def test_failed_run(client: Client):
    workflow = await client.create_workflow({
        "name": "sdk-fails",
        "steps": [{"name": "builtin.fail", "executor": "embedded",
                   "payload": {"message": "step broke"}}],
    })
    run = await client.run_workflow(workflow.workflow_id)
    done = await client.wait_run(run.run_id, timeout=DEADLINE)
    assert done.state == RunState.FAILED
    assert [n.error for n in done.nodes] == ["step broke"]


async def test_errors_map_onto_plum_api_error(client: Client):
    with pytest.raises(PlumApiError) as missing:
        await client.get_task("0" * 32)
    assert missing.value.status == 404
    assert missing.value.code == ErrorCode.NOT_FOUND == "not_found"

    with pytest.raises(PlumApiError) as invalid:
        await client.create_task("", "embedded")
    assert (invalid.value.status, invalid.value.code) == (422, ErrorCode.INVALID)
    assert invalid.value.field == "name"

    with pytest.raises(PlumApiError) as cycle:
        await client.create_workflow({
            "name": "loop",
            "nodes": [{"id": "a", "taskName": "builtin.echo", "executor": "embedded"},
                      {"id": "b", "taskName": "builtin.echo", "executor": "embedded"}],
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}],
        })
    assert cycle.value.status == 422 and cycle.value.message

    finished = await client.create_task("builtin.echo", "embedded")
    await client.wait_task(finished.task_id, DEADLINE)
    with pytest.raises(PlumApiError) as state:
        await client.start_task(finished.task_id)
    assert (state.value.status, state.value.code) == (409, ErrorCode.INVALID_STATE)

    with pytest.raises(ValueError):  # checked before anything is sent
        await client.create_task("x", "no-such-executor")


async def test_discovery(plum: PlumProcess, client: Client):
    assert await client.discover("nothing-here") == []
    with pytest.raises(PlumApiError) as none:
        await client.discover_one("nothing-here", "random")
    assert none.value.status in (404, 503)
    registration = {"instanceId": "inst-1", "ip": "127.0.0.1",
                    "endpoints": [{"serviceName": "scorer", "port": 8123, "protocol": "http",
                                   "version": "2"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{plum.url}/v1/services/register", json=registration) as r:
            assert r.status == 200, await r.text()
    [endpoint] = await client.discover("scorer", include_all=True)
    assert (endpoint.instance_id, endpoint.port, endpoint.version) == ("inst-1", 8123, "2")
    assert await client.discover("scorer", version="1", include_all=True) == []


async def test_bearer_token(tmp_path):
    async with start_plum(tmp_path, env={"PLUM_AUTH_TOKENS": "s3cret"}) as plum:
        async with Client(plum.url) as anonymous:
            with pytest.raises(PlumApiError) as denied:
                await anonymous.list_tasks()
            assert (denied.value.status, denied.value.code) == (401, ErrorCode.UNAUTHORIZED)
        async with Client(plum.url, token="s3cret") as sdk:
            task = await sdk.create_task("builtin.echo", "embedded", {"ok": True})
            done = await sdk.wait_task(task.task_id, DEADLINE)  # the stream is authorized too
            assert done.state == TaskState.SUCCEEDED


async def test_waits_survive_a_controller_restart(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    async with start_plum(tmp_path, "--addr", addr) as first, Client(first.url) as client:
        task = await client.create_task("builtin.echo", "embedded", {"n": 7}, auto_start=False)
        # Whether the stop cuts the waiter's stream or refuses its first connection, it
        # listens again once the controller is back.
        waiter = asyncio.create_task(client.wait_task(task.task_id, timeout=2 * DEADLINE))
        # (a stream that opens just as shutdown begins holds it for the HTTP grace period)
        assert await first.terminate(timeout=DEADLINE) == 0
        assert not waiter.done()
        async with start_plum(tmp_path, "--addr", addr):  # same data dir and address
            await client.start_task(task.task_id)
            done = await waiter
    assert (done.state, done.result) == (TaskState.SUCCEEDED, {"echo": {"n": 7}})
