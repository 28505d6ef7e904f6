"""Workers over real gRPC on 127.0.0.1: the controller against a worker built from the raw
generated messages (wire compatibility), HTTP workers against a real aiohttp server, and
the unary `ExecuteTask` and `HealthCheck`. The clock is fake; every wait is on a future."""

from __future__ import annotations

import asyncio
import socket

import msgspec
import pytest
from aiohttp import web
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from plum.bus import TaskChanged, WorkerChanged, WorkerRemoved
from plum.engine.model import Health
from plum.engine.tasks import TaskState
from plum.rpc._proto.plum.task import (
    HealthRequest,
    Heartbeat,
    TaskAck,
    TaskRequest,
    TaskServiceStub,
    WorkerRegister,
)
from tests.rpc.conftest import running_controller
from tests.rpc.rawworker import SAFETY, TASK_STREAM, RawWorker

pytestmark = pytest.mark.timeout(30)

S = TaskState


async def settle(future: asyncio.Future):
    return await asyncio.wait_for(future, SAFETY)


def task_reaches(bus, *states: TaskState, task_id: str | None = None, **want) -> asyncio.Future:
    def match(event) -> bool:
        if not isinstance(event, TaskChanged) or event.task.state not in states:
            return False
        task = event.task
        return task_id in (None, task.task_id) and all(
            getattr(task, key) == value for key, value in want.items())

    return bus.wait_for(match)


def worker_is(bus, worker_id: str, health: Health) -> asyncio.Future:
    return bus.wait_for(lambda e: isinstance(e, WorkerChanged)
                        and e.worker.worker_id == worker_id and e.worker.health == health)


async def connected(ctl, worker_id: str, tasks: list[str], **kw) -> RawWorker:
    """A raw worker whose registration the controller has taken."""
    healthy = worker_is(ctl.svc.bus, worker_id, Health.HEALTHY)
    worker = await (await ctl.worker(worker_id, tasks, **kw)).connect()
    await settle(healthy)
    return worker


async def create(ctl, name: str, status: int = 201, **body) -> dict:
    response = await ctl.client.post(
        "/v1/tasks", json={"name": name, "executor": "embedded", "autoStart": True, **body})
    assert response.status == status, await response.text()
    return await response.json()


async def get_json(ctl, path: str, status: int = 200):
    response = await ctl.client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


async def run_on(ctl, worker: RawWorker, name: str, **body) -> tuple[dict, TaskRequest]:
    """Start a task and return it with the request the worker received for it."""
    running = task_reaches(ctl.svc.bus, S.RUNNING, name=name)
    task = await create(ctl, name, **body)
    request = await worker.next_request()
    assert request.task_id == task["taskId"]
    await settle(running)
    return task, request


# --- registration and results -------------------------------------------------------------


async def test_register_shows_a_healthy_grpc_worker_in_rest(controller):
    ctl = controller
    await connected(ctl, "w-1", ["sum", "echo"], node_id="n1", instance_id="i-1",
                    app_name="calc", app_version="1.2.0", labels={"zone": "a"})
    listed = await get_json(ctl, "/v1/embedded-workers")
    assert len(listed) == 1
    worker = listed[0]
    assert {k: worker[k] for k in (
        "workerId", "nodeId", "instanceId", "appName", "appVersion", "tasks", "labels",
        "capacity", "inflight", "health", "transport")} == {
        "workerId": "w-1", "nodeId": "n1", "instanceId": "i-1", "appName": "calc",
        "appVersion": "1.2.0", "tasks": ["sum", "echo"], "labels": {"zone": "a"},
        "capacity": 8, "inflight": 0, "health": "Healthy", "transport": "grpc"}
    assert worker["lastSeen"] == pytest.approx(ctl.clock.now(), abs=0.01)
    assert await get_json(ctl, "/v1/embedded-workers/w-1") == worker
    assert await get_json(ctl, "/v1/workers") == []  # HTTP workers only
    await get_json(ctl, "/v1/workers/w-1", status=404)


async def test_first_message_must_be_register(controller):
    host, _, port = controller.grpc_addr.rpartition(":")
    channel = Channel(host, int(port))
    try:
        with pytest.raises(GRPCError) as caught:
            async with channel.request(TASK_STREAM, Cardinality.STREAM_STREAM,
                                       TaskAck, TaskRequest) as stream:
                await stream.send_message(TaskAck(heartbeat=Heartbeat(worker_id="w-1")))
                await stream.recv_message()
        assert caught.value.status == Status.FAILED_PRECONDITION
        assert "register" in caught.value.message
    finally:
        channel.close()


async def test_dispatched_task_result_is_stored(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["sum"])
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, name="sum")
    task, request = await run_on(ctl, worker, "sum", payload={"a": 1, "b": 2})
    assert (request.name, request.attempt, request.cancel) == ("sum", 1, False)
    assert msgspec.json.decode(request.payload) == {"a": 1, "b": 2}
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["inflight"] == 1
    running = await get_json(ctl, f"/v1/tasks/{task['taskId']}")
    assert (running["state"], running["scheduledOn"]) == ("Running", "w-1")
    await worker.log(task["taskId"], "adding up")
    await worker.answer(task["taskId"], '{"sum": 3}', attempt=request.attempt)
    await settle(done)
    stored = await get_json(ctl, f"/v1/tasks/{task['taskId']}")
    assert (stored["state"], stored["result"], stored["error"]) == ("Succeeded", {"sum": 3}, None)
    logs = await get_json(ctl, f"/v1/tasks/{task['taskId']}/logs")
    assert [(line["stream"], line["text"]) for line in logs["lines"]] == [("stdout", "adding up")]
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["inflight"] == 0


async def test_result_that_is_not_json_is_kept_as_a_string(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["greet"])
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, name="greet")
    task, _ = await run_on(ctl, worker, "greet")
    await worker.answer(task["taskId"], "hello, world")  # an original worker: no attempt
    assert (await settle(done)).task.result == "hello, world"


async def test_error_result_fails_the_task_with_its_message(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["boom"])
    failed = task_reaches(ctl.svc.bus, S.FAILED, name="boom")
    task, request = await run_on(ctl, worker, "boom")
    await worker.answer(task["taskId"], error="Unknown task: boom", attempt=request.attempt)
    assert (await settle(failed)).task.error == "Unknown task: boom"


async def test_answer_for_an_older_attempt_is_ignored(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["job"])
    task, request = await run_on(ctl, worker, "job")
    await worker.answer(task["taskId"], '"stale"', attempt=request.attempt + 5)
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, task_id=task["taskId"])
    await worker.answer(task["taskId"], '"fresh"', attempt=request.attempt)
    assert (await settle(done)).task.result == "fresh"


# --- liveness -----------------------------------------------------------------------------


async def test_heartbeats_keep_a_quiet_worker_alive_and_silence_ends_its_stream(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["job"])
    for _ in range(3):
        ctl.clock.advance(60)  # under the 90 s idle timeout since the last message
        beat = worker_is(ctl.svc.bus, "w-1", Health.HEALTHY)
        await worker.heartbeat()
        await settle(beat)
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["health"] == "Healthy"
    assert not worker.ended.done()

    unhealthy = worker_is(ctl.svc.bus, "w-1", Health.UNHEALTHY)
    ctl.clock.advance(89.9)
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["health"] == "Healthy"
    ctl.clock.advance(0.2)
    await settle(unhealthy)
    # The controller ended the stream: status UNAVAILABLE in the trailers, then (as gRPC
    # servers do for a client that has not half-closed) RST_STREAM with NO_ERROR, which
    # grpclib's client may report instead of the status.
    ended = await settle(worker.ended)
    assert isinstance(ended, GRPCError | StreamTerminatedError), ended
    if isinstance(ended, GRPCError):
        assert ended.status == Status.UNAVAILABLE
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["health"] == "Unhealthy"


async def test_stream_end_makes_the_worker_unhealthy_at_once(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["job"])
    unhealthy = worker_is(ctl.svc.bus, "w-1", Health.UNHEALTHY)
    worker.drop()
    await settle(unhealthy)
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["health"] == "Unhealthy"
    healthy = worker_is(ctl.svc.bus, "w-1", Health.HEALTHY)
    await worker.connect()  # reconnects: healthy again
    await settle(healthy)


# --- capacity, cancel ---------------------------------------------------------------------


async def test_capacity_bounds_tasks_in_flight_under_100_queued(controller):
    ctl = controller
    capacity, total = 3, 100
    outstanding: list[str] = []
    most = 0
    answered = 0

    def on_request(worker: RawWorker, request: TaskRequest) -> None:
        nonlocal most
        outstanding.append(request.task_id)
        most = max(most, len(outstanding))
        release(worker)

    def release(worker: RawWorker) -> None:
        # Answer only once `capacity` tasks are held (fewer at the very end): a controller
        # that sent more would show it here before any answer could free a slot.
        nonlocal answered
        while outstanding and len(outstanding) >= min(capacity, total - answered):
            task_id = outstanding.pop(0)
            answered += 1
            sends.append(asyncio.ensure_future(worker.answer(task_id, '"ok"')))

    sends: list[asyncio.Future] = []
    worker = await connected(ctl, "w-1", ["job"], capacity=capacity, on_request=on_request)
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["capacity"] == capacity
    all_done = asyncio.get_running_loop().create_future()
    finished: set[str] = set()

    def count(event) -> bool:
        if isinstance(event, TaskChanged) and event.task.state == S.SUCCEEDED:
            finished.add(event.task.task_id)
        return len(finished) == total

    all_done = ctl.svc.bus.wait_for(count)
    for _ in range(total):
        await create(ctl, "job")
    await asyncio.wait_for(all_done, 20)
    await asyncio.gather(*sends)
    assert most == capacity
    assert worker.received.qsize() == total


async def test_cancel_reaches_the_worker(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["slow"])
    task, request = await run_on(ctl, worker, "slow")
    canceled = task_reaches(ctl.svc.bus, S.CANCELED, task_id=task["taskId"])
    response = await ctl.client.post(f"/v1/tasks/{task['taskId']}?action=cancel")
    assert response.status == 200, await response.text()
    await settle(canceled)
    stop = await worker.next_request()
    assert (stop.task_id, stop.attempt, stop.cancel, stop.name) == (
        task["taskId"], request.attempt, True, "")
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["inflight"] == 0


async def test_timeout_sends_cancel_too(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["slow"])
    timed_out = task_reaches(ctl.svc.bus, S.TIMEOUT, name="slow")
    task, _ = await run_on(ctl, worker, "slow", timeoutSec=3)
    ctl.clock.advance(3)
    await settle(timed_out)
    stop = await worker.next_request()
    assert (stop.task_id, stop.cancel) == (task["taskId"], True)


# --- losing a worker ----------------------------------------------------------------------


async def test_stream_closed_mid_task_retries_on_a_second_worker(controller):
    ctl = controller
    first = await connected(ctl, "w-1", ["job"])
    task, _ = await run_on(ctl, first, "job", maxRetries=1)
    unhealthy = worker_is(ctl.svc.bus, "w-1", Health.UNHEALTHY)
    first.drop()
    await settle(unhealthy)
    second = await connected(ctl, "w-2", ["job"])
    retrying = task_reaches(ctl.svc.bus, S.PENDING, task_id=task["taskId"], attempt=2)
    ctl.clock.advance(10)  # the reconnect grace runs out: the task is lost
    lost = await settle(retrying)
    assert lost.task.error == "worker lost"
    ctl.clock.advance(1)  # the retry backoff
    request = await second.next_request()
    assert (request.task_id, request.attempt) == (task["taskId"], 2)
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, task_id=task["taskId"])
    await second.answer(task["taskId"], '"second"', attempt=2)
    assert (await settle(done)).task.result == "second"
    attempts = (await get_json(ctl, f"/v1/tasks/{task['taskId']}"))["attempts"]
    assert [(a["attempt"], a["state"], a["error"]) for a in attempts] == [
        (1, "Failed", "worker lost"), (2, "Succeeded", None)]


async def test_stream_closed_mid_task_without_retries_fails_worker_lost(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["job"])
    task, _ = await run_on(ctl, worker, "job")
    unhealthy = worker_is(ctl.svc.bus, "w-1", Health.UNHEALTHY)
    worker.drop()
    await settle(unhealthy)
    failed = task_reaches(ctl.svc.bus, S.FAILED, task_id=task["taskId"])
    ctl.clock.advance(9.9)
    assert (await get_json(ctl, f"/v1/tasks/{task['taskId']}"))["state"] == "Running"
    ctl.clock.advance(0.1)
    assert (await settle(failed)).task.error == "worker lost"


async def test_result_on_a_new_stream_after_reconnect_is_accepted(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["job"])
    task, request = await run_on(ctl, worker, "job")
    unhealthy = worker_is(ctl.svc.bus, "w-1", Health.UNHEALTHY)
    worker.drop()
    await settle(unhealthy)
    healthy = worker_is(ctl.svc.bus, "w-1", Health.HEALTHY)
    await worker.connect()  # same worker id, new stream
    await settle(healthy)
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, task_id=task["taskId"])
    await worker.answer(task["taskId"], '{"late": true}')
    assert (await settle(done)).task.result == {"late": True}
    ctl.clock.advance(10)  # the grace running out later changes nothing
    stored = await get_json(ctl, f"/v1/tasks/{task['taskId']}")
    assert (stored["state"], stored["attempt"]) == ("Succeeded", request.attempt)


async def test_deleting_a_worker_ends_its_stream_and_fails_its_tasks(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["job"])
    failed = task_reaches(ctl.svc.bus, S.FAILED, name="job")
    await run_on(ctl, worker, "job")
    removed = ctl.svc.bus.wait_for(lambda e: isinstance(e, WorkerRemoved))
    assert (await ctl.client.delete("/v1/embedded-workers/w-1")).status == 204
    await settle(removed)
    assert (await settle(failed)).task.error == "worker removed"
    await settle(worker.ended)
    await get_json(ctl, "/v1/embedded-workers/w-1", status=404)


# --- dispatch: waiting and choosing -------------------------------------------------------


async def test_task_waits_pending_until_a_worker_registers(controller):
    ctl = controller
    waiting = task_reaches(ctl.svc.bus, S.PENDING, name="late.job",
                           reason="waiting for a worker serving 'late.job'")
    task = await create(ctl, "late.job")
    await settle(waiting)
    worker = await connected(ctl, "w-1", ["late.job"])
    request = await worker.next_request()
    assert request.task_id == task["taskId"]
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, task_id=task["taskId"])
    await worker.answer(task["taskId"], "1")
    assert (await settle(done)).task.result == 1


async def test_target_picks_the_worker_by_node_app_or_id(controller):
    ctl = controller
    a = await connected(ctl, "w-a", ["job"], node_id="n1", app_name="alpha")
    b = await connected(ctl, "w-b", ["job"], node_id="n2", app_name="beta")
    for kind, ref, worker in (("node", "n2", b), ("app", "alpha", a), ("worker", "w-b", b)):
        task, _ = await run_on(ctl, worker, "job", targetKind=kind, targetRef=ref)
        await worker.answer(task["taskId"], "null")
    waiting = task_reaches(ctl.svc.bus, S.PENDING, name="job",
                           reason="waiting for a worker serving 'job' (node 'n3')")
    await create(ctl, "job", targetKind="node", targetRef="n3")
    await settle(waiting)
    assert a.received.empty() and b.received.empty()


async def test_least_loaded_worker_first(controller):
    ctl = controller
    a = await connected(ctl, "w-a", ["job"], capacity=4)
    b = await connected(ctl, "w-b", ["job"], capacity=4)
    for _ in range(4):
        await create(ctl, "job")
    a_tasks = [await a.next_request() for _ in range(2)]
    b_tasks = [await b.next_request() for _ in range(2)]
    assert len({r.task_id for r in a_tasks + b_tasks}) == 4


# --- HTTP workers -------------------------------------------------------------------------


@pytest.fixture
async def http_worker():
    """A real HTTP worker on a free port: it echoes, or fails with HTTP 500 on 'broken'."""
    received: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(body)
        if body["name"] == "broken":
            return web.json_response({"why": "broken"}, status=500)
        if body["name"] == "big":  # several network chunks: all of it must arrive
            return web.json_response({"blob": "x" * (3 * 1024 * 1024)})
        return web.json_response({"echo": body["payload"], "taskId": body["taskId"]})

    app = web.Application()
    app.router.add_post("/task", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/task", received
    await runner.cleanup()


async def test_http_worker_round_trip(controller, http_worker):
    ctl = controller
    url, received = http_worker
    response = await ctl.client.post("/v1/workers/register", json={
        "workerId": "h-1", "nodeId": "n1", "url": url, "tasks": ["web.job", "broken"],
        "labels": {"kind": "http"}, "capacity": 2})
    assert response.status == 200, await response.text()
    worker = await response.json()
    assert (worker["transport"], worker["health"], worker["capacity"]) == ("http", "Healthy", 2)
    assert [w["workerId"] for w in await get_json(ctl, "/v1/workers")] == ["h-1"]
    assert await get_json(ctl, "/v1/embedded-workers") == []

    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, name="web.job")
    task = await create(ctl, "web.job", payload={"n": 1})
    finished = (await settle(done)).task
    assert finished.result == {"echo": {"n": 1}, "taskId": task["taskId"]}
    assert received[0] == {"taskId": task["taskId"], "name": "web.job", "payload": {"n": 1},
                           "attempt": 1}

    failed = task_reaches(ctl.svc.bus, S.FAILED, name="broken")
    await create(ctl, "broken")
    error = (await settle(failed)).task.error
    assert error.startswith("worker answered HTTP 500")

    beat = await ctl.client.post("/v1/workers/heartbeat", json={"workerId": "h-1"})
    assert beat.status == 200
    assert (await ctl.client.delete("/v1/workers/h-1")).status == 204
    await get_json(ctl, "/v1/workers/h-1", status=404)


async def test_http_worker_answer_is_read_whole(controller, http_worker):
    ctl = controller
    url, _ = http_worker
    response = await ctl.client.post("/v1/workers/register", json={
        "workerId": "h-big", "nodeId": "n1", "url": url, "tasks": ["big"], "capacity": 1})
    assert response.status == 200, await response.text()
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, name="big")
    await create(ctl, "big")
    assert len((await settle(done)).task.result["blob"]) == 3 * 1024 * 1024


async def test_http_worker_that_stops_heartbeating_gets_no_tasks(controller, http_worker):
    ctl = controller
    url, _ = http_worker
    await ctl.client.post("/v1/workers/register",
                          json={"workerId": "h-1", "url": url, "tasks": ["web.job"]})
    unhealthy = worker_is(ctl.svc.bus, "h-1", Health.UNHEALTHY)
    ctl.clock.advance(90)
    await settle(unhealthy)
    waiting = task_reaches(ctl.svc.bus, S.PENDING, name="web.job",
                           reason="waiting for a worker serving 'web.job'")
    await create(ctl, "web.job")
    await settle(waiting)
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, name="web.job")
    await ctl.client.post("/v1/workers/heartbeat", json={"workerId": "h-1"})
    await settle(done)


async def test_rest_registration_of_an_embedded_worker(controller):
    ctl = controller
    response = await ctl.client.post("/v1/embedded-workers/register", json={
        "workerId": "e-1", "tasks": ["x"], "capacity": 2})
    assert response.status == 200, await response.text()
    assert (await response.json())["transport"] == "grpc"
    beat = await ctl.client.post("/v1/embedded-workers/heartbeat", json={"workerId": "e-1"})
    assert (await beat.json())["health"] == "Healthy"
    missing = await ctl.client.post("/v1/embedded-workers/heartbeat", json={"workerId": "no"})
    assert missing.status == 404
    conflict = await ctl.client.post("/v1/workers/register", json={
        "workerId": "e-1", "url": "http://127.0.0.1:1/task", "tasks": ["x"]})
    assert conflict.status == 409
    bad = await ctl.client.post("/v1/workers/register", json={"workerId": "z", "url": "ftp:x"})
    assert bad.status == 422


# --- unary methods ------------------------------------------------------------------------


async def test_execute_task_runs_through_the_engine_and_waits(controller):
    ctl = controller

    def answer(worker: RawWorker, request: TaskRequest) -> None:
        total = sum(msgspec.json.decode(request.payload).values())
        answers.append(asyncio.ensure_future(
            worker.answer(request.task_id, str(total), attempt=request.attempt)))

    answers: list[asyncio.Future] = []
    await connected(ctl, "w-1", ["sum"], on_request=answer)
    host, _, port = ctl.grpc_addr.rpartition(":")
    channel = Channel(host, int(port))
    try:
        stub = TaskServiceStub(channel)
        response = await stub.execute_task(TaskRequest(name="sum", payload='{"a": 1, "b": 2}'),
                                           timeout=SAFETY)
        assert (response.result, response.error, response.attempt) == ("3", "", 1)
        stored = await get_json(ctl, f"/v1/tasks/{response.task_id}")
        assert (stored["state"], stored["result"]) == ("Succeeded", 3)

        echoed = await stub.execute_task(TaskRequest(name="builtin.echo", payload='{"x": 1}'),
                                         timeout=SAFETY)
        assert msgspec.json.decode(echoed.result) == {"echo": {"x": 1}}
        failed = await stub.execute_task(
            TaskRequest(name="builtin.fail", payload='{"message": "nope"}'), timeout=SAFETY)
        assert failed.error == "nope"
    finally:
        channel.close()
    await asyncio.gather(*answers)


async def test_health_check(controller):
    ctl = controller
    await connected(ctl, "w-1", ["x"])
    host, _, port = ctl.grpc_addr.rpartition(":")
    channel = Channel(host, int(port))
    try:
        stub = TaskServiceStub(channel)
        ok = await stub.health_check(HealthRequest(), timeout=SAFETY)
        assert (ok.healthy, ok.message) == (True, "ok")
        worker = await stub.health_check(HealthRequest(worker_id="w-1"), timeout=SAFETY)
        assert (worker.healthy, worker.message) == (True, "Healthy")
        unknown = await stub.health_check(HealthRequest(worker_id="nobody"), timeout=SAFETY)
        assert (unknown.healthy, unknown.message) == (False, "unknown worker")
    finally:
        channel.close()


# --- restart and auth ---------------------------------------------------------------------


async def test_workers_survive_a_restart_as_records(tmp_path, http_worker):
    url, _ = http_worker
    async with running_controller(tmp_path / "data") as ctl:
        await connected(ctl, "w-1", ["job"], capacity=2)
        await ctl.client.post("/v1/workers/register",
                              json={"workerId": "h-1", "url": url, "tasks": ["web.job"]})
    async with running_controller(tmp_path / "data") as ctl:
        grpc = await get_json(ctl, "/v1/embedded-workers/w-1")
        assert (grpc["health"], grpc["capacity"], grpc["tasks"]) == ("Unhealthy", 2, ["job"])
        http = await get_json(ctl, "/v1/workers/h-1")
        assert http["health"] == "Healthy"  # until its heartbeats stop
        done = task_reaches(ctl.svc.bus, S.SUCCEEDED, name="web.job")
        await create(ctl, "web.job")
        await settle(done)
        await connected(ctl, "w-1", ["job"])  # the worker reconnects: healthy again


async def test_grpc_needs_the_token_when_tokens_are_configured(tmp_path):
    async with running_controller(tmp_path / "data", PLUM_AUTH_TOKENS="s3cret") as ctl:
        host, _, port = ctl.grpc_addr.rpartition(":")
        channel = Channel(host, int(port))
        try:
            stub = TaskServiceStub(channel)
            with pytest.raises(GRPCError) as caught:
                await stub.health_check(HealthRequest(), timeout=SAFETY)
            assert caught.value.status == Status.UNAUTHENTICATED
            ok = await stub.health_check(HealthRequest(), timeout=SAFETY,
                                         metadata={"authorization": "Bearer s3cret"})
            assert ok.healthy
        finally:
            channel.close()


# --- edges --------------------------------------------------------------------------------


async def test_execute_task_refuses_bad_input(controller):
    host, _, port = controller.grpc_addr.rpartition(":")
    channel = Channel(host, int(port))
    try:
        stub = TaskServiceStub(channel)
        for request in (TaskRequest(name="x", payload="{not json"),
                        TaskRequest(name="", payload="{}"),
                        TaskRequest(name="x", payload="[1, 2]")):
            with pytest.raises(GRPCError) as caught:
                await stub.execute_task(request, timeout=SAFETY)
            assert caught.value.status == Status.INVALID_ARGUMENT, request
    finally:
        channel.close()


async def test_same_stream_may_register_again_but_not_as_another_worker(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["a"])
    changed = worker_is(ctl.svc.bus, "w-1", Health.HEALTHY)
    worker.register.tasks = ["a", "b"]
    await worker.send(TaskAck(register=worker.register))
    assert (await settle(changed)).worker.tasks == ["a", "b"]
    unhealthy = worker_is(ctl.svc.bus, "w-1", Health.UNHEALTHY)
    await worker.send(TaskAck(register=WorkerRegister(worker_id="w-2", tasks=["a"])))
    await settle(unhealthy)
    await settle(worker.ended)


async def test_a_second_stream_replaces_the_first(controller):
    ctl = controller
    first = await connected(ctl, "w-1", ["job"])
    task, request = await run_on(ctl, first, "job")
    second = await connected(ctl, "w-1", ["job"])  # same id, while the first is open
    await settle(first.ended)
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, task_id=task["taskId"])
    await second.answer(task["taskId"], '"via the new stream"', attempt=request.attempt)
    assert (await settle(done)).task.result == "via the new stream"
    assert (await get_json(ctl, "/v1/embedded-workers/w-1"))["health"] == "Healthy"


async def test_grpc_worker_cannot_take_the_id_of_a_healthy_http_worker(controller):
    ctl = controller
    await ctl.client.post("/v1/workers/register", json={
        "workerId": "dup", "url": "http://127.0.0.1:1/task", "tasks": ["x"]})
    worker = await (await ctl.worker("dup", ["x"])).connect()
    ended = await settle(worker.ended)  # refused: ALREADY_EXISTS (or the reset after it)
    assert isinstance(ended, GRPCError | StreamTerminatedError), ended
    if isinstance(ended, GRPCError):
        assert ended.status == Status.ALREADY_EXISTS
    assert (await get_json(ctl, "/v1/workers/dup"))["transport"] == "http"


async def test_unreachable_http_worker_fails_the_task_and_turns_unhealthy(controller):
    ctl = controller
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    await ctl.client.post("/v1/workers/register", json={
        "workerId": "gone", "url": f"http://127.0.0.1:{port}/task", "tasks": ["x"]})
    failed = task_reaches(ctl.svc.bus, S.FAILED, name="x")
    unhealthy = worker_is(ctl.svc.bus, "gone", Health.UNHEALTHY)
    await create(ctl, "x")
    assert "unreachable" in (await settle(failed)).task.error
    await settle(unhealthy)


async def test_log_lines_keep_their_stream(controller):
    ctl = controller
    worker = await connected(ctl, "w-1", ["job"])
    task, request = await run_on(ctl, worker, "job")
    await worker.log(task["taskId"], "oops", stream="stderr", attempt=request.attempt)
    await worker.log(task["taskId"], "note", stream="progress")
    await worker.log(task["taskId"], "stale", attempt=request.attempt + 1)  # not this attempt
    done = task_reaches(ctl.svc.bus, S.SUCCEEDED, task_id=task["taskId"])
    await worker.answer(task["taskId"], "")
    assert (await settle(done)).task.result is None
    logs = await get_json(ctl, f"/v1/tasks/{task['taskId']}/logs")
    assert [(line["stream"], line["text"]) for line in logs["lines"]] == [
        ("stderr", "oops"), ("worker", "note")]
