"""`plum.sdk.Worker`: first message by message against a fake controller (registration on
every stream, results, errors, cancel, capacity, reconnects with an outbox, drain), then
against a real `plum serve` (tasks created over REST run on the worker; a controller
restart on the same gRPC port is survived)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator

import aiohttp
import pytest

from plum.engine.tasks import TaskState
from plum.sdk import Backoff, Client, TaskContext, Worker
from tests.sdk.fake_controller import WAIT, Conn, FakeController, fake_controller
from tests.support.procs import PlumProcess, free_port, start_plum

pytestmark = pytest.mark.timeout(60)

FAST = Backoff(initial=0.01, maximum=0.05)


@contextlib.asynccontextmanager
async def serving(worker: Worker) -> AsyncIterator[asyncio.Task]:
    """Run the worker for the block; stop it (drain) and wait for `run()` to return."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        worker.stop()
        async with asyncio.timeout(WAIT):
            await task


def demo_worker(controller: FakeController, **options) -> Worker:
    worker = Worker(controller.addr, backoff=FAST, environ={}, **options)

    @worker.task("add")
    async def add(payload):
        return {"sum": payload["a"] + payload["b"]}

    @worker.task("shout")
    def shout(payload, ctx):  # sync, with a context
        return {"text": payload["text"].upper(), "task": ctx.task_id, "attempt": ctx.attempt}

    @worker.task("boom")
    async def boom(payload):
        raise ValueError(f"bad input {payload['n']}")

    return worker


async def result_of(conn: Conn) -> tuple[str, int, object, str]:
    message = (await conn.next("result")).result
    value = json.loads(message.result) if message.result else None
    return message.task_id, message.attempt, value, message.error


# --- against a fake controller ---------------------------------------------------------------


async def test_registers_with_the_env_the_agent_gives_apps():
    env = {"PLUM_INSTANCE_ID": "dep1-abcd1234", "PLUM_APP_NAME": "worker-demo",
           "PLUM_APP_VERSION": "1.0.0", "WORKER_NODE_ID": "node-7"}
    async with fake_controller() as controller:
        env["CONTROLLER_GRPC_ADDR"] = controller.addr
        worker = Worker(environ=env, capacity=3, labels={"zone": "a"}, backoff=FAST)
        worker.task("b.second")(lambda payload: None)
        worker.task("a.first")(lambda payload: None)
        async with serving(worker):
            conn = await controller.accept()
            register = (await conn.next()).register
    assert register is not None
    assert (register.worker_id, register.instance_id) == ("dep1-abcd1234", "dep1-abcd1234")
    assert (register.app_name, register.app_version, register.node_id) == (
        "worker-demo", "1.0.0", "node-7")
    assert (register.tasks, register.labels, register.capacity) == (
        ["a.first", "b.second"], {"zone": "a"}, 3)


async def test_results_errors_and_unknown_tasks():
    async with fake_controller() as controller:
        worker = demo_worker(controller)
        async with serving(worker):
            conn = await controller.accept()
            await conn.next()  # register
            await conn.send(task_id="t1", name="add", payload='{"a": 2, "b": 3}', attempt=1)
            assert await result_of(conn) == ("t1", 1, {"sum": 5}, "")
            await conn.send(task_id="t2", name="shout", payload='{"text": "hi"}', attempt=2)
            assert await result_of(conn) == (
                "t2", 2, {"text": "HI", "task": "t2", "attempt": 2}, "")
            await conn.send(task_id="t3", name="boom", payload='{"n": 4}', attempt=1)
            assert await result_of(conn) == ("t3", 1, None, "bad input 4")
            await conn.send(task_id="t4", name="nope", payload="{}", attempt=1)
            assert await result_of(conn) == ("t4", 1, None, "Unknown task: nope")
            await conn.send(task_id="t5", name="add", payload="{not json", attempt=1)
            _, _, _, error = await result_of(conn)
            assert error.startswith("payload is not JSON")


async def test_cancel_reaches_an_async_handler_and_sends_no_result():
    started, saw_cancel = asyncio.Event(), asyncio.Event()
    async with fake_controller() as controller:
        worker = demo_worker(controller)

        @worker.task("wait")
        async def wait(payload):
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                saw_cancel.set()
                raise

        async with serving(worker):
            conn = await controller.accept()
            await conn.next()
            await conn.send(task_id="w1", name="wait", payload="{}", attempt=1)
            await asyncio.wait_for(started.wait(), WAIT)
            await conn.send(task_id="w1", attempt=1, cancel=True)
            await asyncio.wait_for(saw_cancel.wait(), WAIT)
            # the next answer on the stream is the next task's, not w1's
            await conn.send(task_id="a1", name="add", payload='{"a": 1, "b": 1}', attempt=1)
            assert (await result_of(conn))[0] == "a1"
            assert worker.running_tasks == 0


async def test_cancel_of_a_sync_handler_marks_it_and_drops_its_result():
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []
    async with fake_controller() as controller:
        worker = demo_worker(controller)

        @worker.task("block")
        def block(payload, ctx: TaskContext):
            entered.set()
            release.wait(WAIT)
            seen.append(ctx.canceled)
            returned.set()
            return {"late": True}

        async with serving(worker):
            conn = await controller.accept()
            await conn.next()
            await conn.send(task_id="s1", name="block", payload="{}", attempt=1)
            await asyncio.to_thread(entered.wait, WAIT)
            await conn.send(task_id="s1", attempt=1, cancel=True)
            await conn.send(task_id="a1", name="add", payload='{"a": 1, "b": 2}', attempt=1)
            assert (await result_of(conn))[0] == "a1"  # s1 is no longer in the way
            release.set()
            await asyncio.to_thread(returned.wait, WAIT)
            await conn.send(task_id="a2", name="add", payload='{"a": 1, "b": 2}', attempt=1)
            assert (await result_of(conn))[0] == "a2"  # and s1's late result never came
    assert seen == [True]


async def test_capacity_bounds_concurrent_handlers():
    running, peak = 0, 0
    gate = asyncio.Event()
    reached = asyncio.Event()
    async with fake_controller() as controller:
        worker = demo_worker(controller, capacity=2)

        @worker.task("slow")
        async def slow(payload):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running == 2:
                reached.set()
            await gate.wait()
            running -= 1
            return payload["i"]

        async with serving(worker):
            conn = await controller.accept()
            assert (await conn.next()).register.capacity == 2
            for i in range(5):
                await conn.send(task_id=f"c{i}", name="slow", payload=json.dumps({"i": i}),
                                attempt=1)
            await asyncio.wait_for(reached.wait(), WAIT)
            assert running == 2 and conn.received.empty()
            gate.set()
            results = {(await result_of(conn))[2] for _ in range(5)}
    assert results == {0, 1, 2, 3, 4}
    assert peak == 2


async def test_heartbeats_and_log_lines():
    async with fake_controller() as controller:
        worker = demo_worker(controller, heartbeat_sec=0.05)

        @worker.task("chatty")
        async def chatty(payload, ctx: TaskContext):
            ctx.log("first line")
            await asyncio.to_thread(ctx.log, "from a thread", "stderr")
            return None

        async with serving(worker):
            conn = await controller.accept()
            await conn.next()
            beat = (await conn.next("heartbeat")).heartbeat
            assert beat.worker_id == worker.worker_id
            await conn.send(task_id="l1", name="chatty", payload="", attempt=3)
            lines = [(await conn.next("log")).log for _ in range(2)]
            assert [(x.task_id, x.attempt, x.stream, x.line) for x in lines] == [
                ("l1", 3, "stdout", "first line"), ("l1", 3, "stderr", "from a thread")]
            assert await result_of(conn) == ("l1", 3, None, "")


async def test_reconnects_registers_again_and_sends_what_finished_meanwhile():
    release = asyncio.Event()
    async with fake_controller() as controller:
        worker = demo_worker(controller)

        @worker.task("gate")
        async def gate(payload):
            await release.wait()
            return {"done": payload["n"]}

        async with serving(worker):
            first = await controller.accept()
            await first.next()
            await first.send(task_id="g1", name="gate", payload='{"n": 1}', attempt=1)
            await controller.stop()  # the controller goes away with g1 running
            release.set()            # g1 finishes while nobody listens
            await controller.start()  # same port
            second = await controller.accept()
            assert (await second.next()).register.worker_id == worker.worker_id
            assert await result_of(second) == ("g1", 1, {"done": 1}, "")
            # a re-delivery of an answered request is answered again, not run again
            await second.send(task_id="g1", name="gate", payload='{"n": 2}', attempt=1)
            assert await result_of(second) == ("g1", 1, {"done": 1}, "")
            await second.send(task_id="a1", name="add", payload='{"a": 4, "b": 4}', attempt=1)
            assert await result_of(second) == ("a1", 1, {"sum": 8}, "")


async def test_a_controller_that_is_down_at_first_is_waited_for():
    controller = FakeController()
    await controller.start()
    await controller.stop()  # the port is known, nobody listens
    worker = demo_worker(controller)
    async with serving(worker):
        await controller.start()
        try:
            conn = await controller.accept()
            assert (await conn.next()).register is not None
            await asyncio.wait_for(worker.wait_connected(), WAIT)
        finally:
            await controller.stop()


async def test_drain_refuses_new_work_and_finishes_running_tasks():
    release, started = asyncio.Event(), asyncio.Event()
    async with fake_controller() as controller:
        worker = demo_worker(controller)

        @worker.task("gate")
        async def gate(payload):
            started.set()
            await release.wait()
            return "finished"

        run = asyncio.create_task(worker.run())
        conn = await controller.accept()
        await conn.next()
        await conn.send(task_id="d1", name="gate", payload="{}", attempt=1)
        await asyncio.wait_for(started.wait(), WAIT)
        worker.stop()
        worker.stop()  # twice is harmless
        await conn.send(task_id="d2", name="add", payload='{"a": 1, "b": 1}', attempt=1)
        task_id, _, _, error = await result_of(conn)
        assert task_id == "d2" and "shutting down" in error
        assert not run.done()
        release.set()
        assert await result_of(conn) == ("d1", 1, "finished", "")
        await asyncio.wait_for(run, WAIT)
        await asyncio.wait_for(conn.ended.wait(), WAIT)  # the worker hung up


async def test_drain_grace_cancels_what_does_not_finish():
    started = asyncio.Event()
    async with fake_controller() as controller:
        worker = demo_worker(controller, drain_grace_sec=0.05)

        @worker.task("forever")
        async def forever(payload):
            started.set()
            await asyncio.Event().wait()

        run = asyncio.create_task(worker.run())
        conn = await controller.accept()
        await conn.next()
        await conn.send(task_id="f1", name="forever", payload="{}", attempt=1)
        await asyncio.wait_for(started.wait(), WAIT)
        worker.stop()
        task_id, _, _, error = await result_of(conn)
        assert task_id == "f1" and "stopped before the task finished" in error
        await asyncio.wait_for(run, WAIT)


def test_worker_arguments_are_checked():
    with pytest.raises(ValueError):
        Worker("127.0.0.1:1", capacity=0, environ={})
    with pytest.raises(Exception, match="HOST:PORT"):
        Worker("no-port", environ={})
    worker = Worker(environ={})
    assert worker.controller == "127.0.0.1:9090" and len(worker.worker_id) == 32
    worker.task("x")(lambda: 1)
    with pytest.raises(ValueError):
        worker.task("x")(lambda: 2)


# --- against a real `plum serve` -------------------------------------------------------------

DEADLINE = 30.0  # generous; never reached when all is well


@contextlib.asynccontextmanager
async def plum_with_grpc(tmp_path, grpc_addr: str) -> AsyncIterator[tuple[PlumProcess, Client]]:
    async with start_plum(tmp_path, "--grpc-addr", grpc_addr) as plum, \
            Client(plum.url) as client:
        yield plum, client


def sdk_worker(grpc_addr: str, **options) -> Worker:
    worker = Worker(grpc_addr, backoff=FAST, environ={}, **options)

    @worker.task("sdk.add")
    async def add(payload, ctx: TaskContext):
        ctx.log(f"adding {payload['a']} and {payload['b']}")
        return {"sum": payload["a"] + payload["b"]}

    @worker.task("sdk.shout")
    def shout(payload):
        return payload["text"].upper()

    @worker.task("sdk.boom")
    async def boom(payload):
        raise RuntimeError("the handler broke")

    return worker


@pytest.mark.integration
async def test_tasks_created_over_rest_run_on_the_worker(tmp_path):
    grpc_addr = f"127.0.0.1:{free_port()}"
    async with plum_with_grpc(tmp_path, grpc_addr) as (_, client):
        worker = sdk_worker(grpc_addr, app_name="sdk-test")
        # created before the worker connects: it waits Pending for a worker serving it
        early = await client.create_task("sdk.add", "embedded", {"a": 1, "b": 2})
        async with serving(worker):
            added = await client.wait_task(early.task_id, DEADLINE)
            assert (added.state, added.result) == (TaskState.SUCCEEDED, {"sum": 3})
            logs = await client.task_logs(early.task_id)
            assert [line.text for line in logs.lines] == ["adding 1 and 2"]

            shout = await client.create_task("sdk.shout", "embedded", {"text": "hey"})
            shouted = await client.wait_task(shout.task_id, DEADLINE)
            assert (shouted.state, shouted.result) == (TaskState.SUCCEEDED, "HEY")

            boom = await client.create_task("sdk.boom", "embedded", {})
            failed = await client.wait_task(boom.task_id, DEADLINE)
            assert (failed.state, failed.error) == (TaskState.FAILED, "the handler broke")

            async with aiohttp.ClientSession() as session:
                async with session.get(f"{client.base_url}/v1/embedded-workers") as response:
                    workers = await response.json()
            [mine] = [w for w in workers if w["workerId"] == worker.worker_id]
            assert mine["appName"] == "sdk-test" and mine["capacity"] == 8
            assert sorted(mine["tasks"]) == ["sdk.add", "sdk.boom", "sdk.shout"]


@pytest.mark.integration
async def test_capacity_is_respected(tmp_path):
    grpc_addr = f"127.0.0.1:{free_port()}"
    running, peak = 0, 0
    gate, full = asyncio.Event(), asyncio.Event()
    async with plum_with_grpc(tmp_path, grpc_addr) as (_, client):
        worker = sdk_worker(grpc_addr, capacity=2)

        @worker.task("sdk.slow")
        async def slow(payload):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running == 2:
                full.set()
            await gate.wait()
            running -= 1
            return payload["i"]

        async with serving(worker):
            tasks = [await client.create_task("sdk.slow", "embedded", {"i": i})
                     for i in range(5)]
            await asyncio.wait_for(full.wait(), DEADLINE)
            states = [(await client.get_task(t.task_id)).state for t in tasks]
            assert states.count(TaskState.RUNNING) == 2, states
            gate.set()
            done = [await client.wait_task(t.task_id, DEADLINE) for t in tasks]
    assert [t.result for t in done] == [0, 1, 2, 3, 4]
    assert peak == 2


@pytest.mark.integration
async def test_cancel_over_rest_reaches_the_handler(tmp_path):
    grpc_addr = f"127.0.0.1:{free_port()}"
    started, saw_cancel = asyncio.Event(), asyncio.Event()
    async with plum_with_grpc(tmp_path, grpc_addr) as (_, client):
        worker = sdk_worker(grpc_addr)

        @worker.task("sdk.wait")
        async def wait(payload):
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                saw_cancel.set()
                raise

        async with serving(worker):
            task = await client.create_task("sdk.wait", "embedded", {})
            await asyncio.wait_for(started.wait(), DEADLINE)
            await client.cancel_task(task.task_id)
            await asyncio.wait_for(saw_cancel.wait(), DEADLINE)
            assert (await client.wait_task(task.task_id, DEADLINE)).state == TaskState.CANCELED
            assert worker.running_tasks == 0


@pytest.mark.integration
async def test_the_worker_reconnects_after_a_controller_restart(tmp_path):
    grpc_addr = f"127.0.0.1:{free_port()}"
    worker = sdk_worker(grpc_addr)
    async with serving(worker):
        async with plum_with_grpc(tmp_path, grpc_addr) as (plum, client):
            task = await client.create_task("sdk.add", "embedded", {"a": 2, "b": 2})
            assert (await client.wait_task(task.task_id, DEADLINE)).result == {"sum": 4}
            assert worker.connected.is_set()
            assert await plum.terminate() == 0
        # same data dir, same gRPC port; the worker finds it again on its own
        async with plum_with_grpc(tmp_path, grpc_addr) as (_, client):
            again = await client.create_task("sdk.add", "embedded", {"a": 20, "b": 22})
            done = await client.wait_task(again.task_id, DEADLINE)
            assert (done.state, done.result) == (TaskState.SUCCEEDED, {"sum": 42})
            old = await client.get_task(task.task_id)  # the first one survived the restart
            assert old.result == {"sum": 4}


@pytest.mark.integration
async def test_bearer_token_on_the_stream(tmp_path):
    grpc_addr = f"127.0.0.1:{free_port()}"
    async with start_plum(tmp_path, "--grpc-addr", grpc_addr,
                          env={"PLUM_AUTH_TOKENS": "s3cret"}) as plum, \
            Client(plum.url, token="s3cret") as client:
        worker = sdk_worker(grpc_addr, token="s3cret")
        async with serving(worker):
            task = await client.create_task("sdk.shout", "embedded", {"text": "auth"})
            assert (await client.wait_task(task.task_id, DEADLINE)).result == "AUTH"
