"""The `service` executor against real HTTP services on 127.0.0.1, registered over REST."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess

import pytest

from plum.bus import ServiceChanged
from plum.discovery.registry import DiscoveryQuery
from plum.errors import Unavailable
from plum.executors.base import ExecutionRequest, ExecutorKind, SimpleContext
from plum.executors.service import ServiceExecutor
from tests.discovery.fakes import FakeService, http_endpoint, register

pytestmark = pytest.mark.timeout(20)


def task(service: str = "echo", n: int = 0, **labels: str) -> ExecutionRequest:
    return ExecutionRequest(
        task_id=f"t{n}",
        attempt=1,
        name="call-echo",
        executor=ExecutorKind.SERVICE,
        payload={"n": n},
        target_kind="service",
        target_ref=service,
        labels=labels,
    )


@pytest.fixture
async def executor(controller):
    _, svc = controller
    async with ServiceExecutor(svc.discovery) as executor:
        yield executor


@pytest.fixture
async def two(controller, fake_services):
    """Services `a` and `b` registered as two instances of `echo`."""
    client, _ = controller
    a, b = await fake_services("a"), await fake_services("b")
    await register(client, "i-a", http_endpoint("echo", a.port))
    await register(client, "i-b", http_endpoint("echo", b.port))
    return a, b


def all_endpoints(svc, service: str):
    return svc.discovery.discover(DiscoveryQuery(service, include_all=True))


async def served_by(executor, request: ExecutionRequest) -> str:
    result = await executor.run(request, SimpleContext())
    assert result.ok, result.error
    return result.result["servedBy"]


async def test_posts_the_task_and_returns_the_json_body(executor, controller, fake_services):
    client, _ = controller
    a = await fake_services("a")
    await register(client, "i-a", http_endpoint("echo", a.port))
    ctx = SimpleContext()
    result = await executor.run(task(n=7), ctx)
    assert result.ok
    assert result.result == {"servedBy": "a", "taskId": "t7"}
    assert a.calls == [{"taskId": "t7", "name": "call-echo", "payload": {"n": 7}}]
    assert ctx.running


async def test_round_robin_alternates(executor, two):
    picks = [await served_by(executor, task(n=i)) for i in range(4)]
    assert set(picks) == {"a", "b"}
    assert picks[0] != picks[1]
    assert picks[0::2] == [picks[0]] * 2 and picks[1::2] == [picks[1]] * 2


async def test_random_picks_registered_endpoints(executor, two):
    picks = {await served_by(executor, task(n=i, lbStrategy="random")) for i in range(10)}
    assert picks <= {"a", "b"}


async def test_least_inflight_avoids_the_busy_endpoint(executor, two):
    a, b = two
    a.hold = b.hold = True
    first = asyncio.create_task(
        executor.run(task(n=0, lbStrategy="least_inflight"), SimpleContext())
    )
    arrived = {asyncio.ensure_future(s.arrived.wait()): s for s in (a, b)}
    done, pending = await asyncio.wait(arrived, return_when=asyncio.FIRST_COMPLETED)
    for future in pending:
        future.cancel()
    busy = arrived[done.pop()]
    idle = b if busy is a else a
    idle.hold = False
    # Round robin alone would come back to the busy endpoint on the third call.
    for n in (1, 2):
        assert await served_by(executor, task(n=n, lbStrategy="least_inflight")) == idle.name
    busy.release.set()
    assert (await first).result["servedBy"] == busy.name


async def test_failover_to_the_next_endpoint_marks_the_dead_one(executor, controller, two):
    client, svc = controller
    a, _ = two
    await a.stop()
    unhealthy = svc.bus.wait_for(lambda e: isinstance(e, ServiceChanged) and not e.endpoint.healthy)
    picks = [await served_by(executor, task(n=i)) for i in range(3)]
    assert picks == ["b", "b", "b"]
    event = await asyncio.wait_for(unhealthy, 5)
    assert event.endpoint.instance_id == "i-a"
    listing = await (await client.get("/v1/discovery?service=echo&all=true")).json()
    assert {e["instanceId"]: e["healthy"] for e in listing} == {"i-a": False, "i-b": True}
    healthy = await (await client.get("/v1/discovery?service=echo")).json()
    assert [e["instanceId"] for e in healthy] == ["i-b"]


async def test_every_endpoint_dead_then_none_healthy(executor, two):
    for service in two:
        await service.stop()
    result = await executor.run(task(), SimpleContext())
    assert not result.ok
    assert result.error.startswith("no reachable endpoint for service 'echo' (127.0.0.1:")
    again = await executor.run(task(), SimpleContext())
    assert again.error == "no healthy endpoint for service 'echo'"


async def test_non_2xx_is_a_failure_result_not_retried(executor, controller, two):
    _, svc = controller
    a, b = two
    ctx = SimpleContext()
    result = await executor.run(task(servicePath="/fail"), ctx)
    assert not result.ok
    assert result.error == "service answered HTTP 500: boom: the disk is on fire"
    assert len(a.calls) + len(b.calls) == 1
    assert ctx.running
    assert all(e.healthy for e in all_endpoints(svc, "echo"))


async def test_text_body_is_the_result(executor, controller, fake_services):
    client, _ = controller
    a = await fake_services("a")
    await register(client, "i-a", http_endpoint("echo", a.port))
    result = await executor.run(task(servicePath="text"), SimpleContext())
    assert (result.ok, result.result) == (True, "plain words")


async def test_empty_big_and_long_answers(controller, fake_services):
    client, svc = controller
    a = await fake_services("a")
    await register(client, "i-a", http_endpoint("echo", a.port))
    async with ServiceExecutor(svc.discovery, max_response_bytes=20) as executor:
        empty = await executor.run(task(servicePath="/empty"), SimpleContext())
        assert (empty.ok, empty.result) == (True, None)
        big = await executor.run(task(), SimpleContext())
        assert not big.ok and big.error.startswith("service answered more than 20 bytes")
    async with ServiceExecutor(svc.discovery) as executor:
        long = await executor.run(task(servicePath="/long-fail"), SimpleContext())
    assert long.error == "service answered HTTP 502: " + "x" * 197 + "..."


async def test_labels_choose_version_and_port(executor, controller, fake_services):
    client, _ = controller
    a, b = await fake_services("a"), await fake_services("b")
    await register(client, "i-a", http_endpoint("echo", a.port, version="v1"))
    await register(client, "i-b", http_endpoint("echo", b.port, version="v2"))
    assert {await served_by(executor, task(n=i, serviceVersion="v2")) for i in range(3)} == {"b"}
    by_port = {await served_by(executor, task(n=i, servicePort=str(a.port))) for i in range(3)}
    assert by_port == {"a"}
    none = await executor.run(task(serviceVersion="v9"), SimpleContext())
    assert none.error == "no healthy endpoint for service 'echo'"


async def test_unknown_service_grpc_and_bad_labels_are_failures(executor, two):
    unnamed = await executor.run(task(""), SimpleContext())
    assert not unnamed.ok and "targetRef" in unnamed.error
    missing = await executor.run(task("nope"), SimpleContext())
    assert missing.error == "no healthy endpoint for service 'nope'"
    grpc = await executor.run(task(serviceProtocol="grpc"), SimpleContext())
    assert not grpc.ok and "servicePath" in grpc.error  # /task is no gRPC method
    bad_port = await executor.run(task(servicePort="http"), SimpleContext())
    assert not bad_port.ok and "servicePort" in bad_port.error
    bad_strategy = await executor.run(task(lbStrategy="fastest"), SimpleContext())
    assert not bad_strategy.ok and "lbStrategy" in bad_strategy.error
    assert [len(s.calls) for s in two] == [0, 0]


async def test_cancellation_propagates_and_releases_the_inflight_count(executor, controller, two):
    _, svc = controller
    a, b = two
    a.hold = b.hold = True
    running = asyncio.create_task(executor.run(task(), SimpleContext()))
    await asyncio.wait(
        [asyncio.ensure_future(s.arrived.wait()) for s in two],
        return_when=asyncio.FIRST_COMPLETED,
    )
    endpoints = all_endpoints(svc, "echo")
    assert sum(svc.discovery.balancer.inflight(e) for e in endpoints) == 1
    running.cancel()
    await asyncio.wait([running])
    assert running.cancelled()  # the executor did not swallow the cancellation
    assert sum(svc.discovery.balancer.inflight(e) for e in endpoints) == 0


async def test_closed_executor_refuses(controller, two):
    _, svc = controller
    executor = ServiceExecutor(svc.discovery)
    assert await served_by(executor, task()) in {"a", "b"}
    await executor.close()
    await executor.close()  # twice is harmless
    with pytest.raises(Unavailable):
        await executor.run(task(), SimpleContext())


@pytest.fixture
def tls(tmp_path):
    """A self-signed certificate for 127.0.0.1: (server context, client context)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = (
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
        f"-addext subjectAltName=IP:127.0.0.1 -keyout {key} -out {cert}"
    )
    subprocess.run(command.split(), check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


async def test_https_endpoint(controller, tls):
    client, svc = controller
    server_ctx, client_ctx = tls
    secure = await FakeService("secure").start(ssl_context=server_ctx)
    try:
        endpoint = {"serviceName": "vault", "port": secure.port, "protocol": "https"}
        await register(client, "i-s", endpoint)
        async with ServiceExecutor(svc.discovery, ssl_context=client_ctx) as executor:
            result = await executor.run(task("vault", serviceProtocol="https"), SimpleContext())
        assert result.ok, result.error
        assert result.result["servedBy"] == "secure"
        await svc.discovery.check_now()  # the probe does not verify the certificate
        assert all(e.healthy for e in all_endpoints(svc, "vault"))
    finally:
        await secure.stop()
