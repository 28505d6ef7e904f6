"""The `service` executor calling a real gRPC service (grpclib, JSON codec) on 127.0.0.1."""

from __future__ import annotations

import socket

import grpclib.const
import grpclib.server
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plum.discovery.registry import DiscoveryQuery
from plum.executors.base import ExecutionRequest, ExecutorKind, SimpleContext
from plum.executors.service import ServiceExecutor
from plum.executors.service_grpc import JsonCodec
from tests.discovery.fakes import register

pytestmark = pytest.mark.timeout(20)


class Calc:
    """A service that speaks JSON over gRPC: `/calc.Calc/Add` and `/calc.Calc/Fail`."""

    def __init__(self) -> None:
        self.calls: list = []

    async def add(self, stream: grpclib.server.Stream) -> None:
        request = await stream.recv_message()
        self.calls.append(request)
        await stream.send_message({"sum": request["a"] + request["b"]})

    async def fail(self, stream: grpclib.server.Stream) -> None:
        await stream.recv_message()
        raise GRPCError(Status.INVALID_ARGUMENT, "no such numbers")

    def __mapping__(self) -> dict:
        unary = grpclib.const.Cardinality.UNARY_UNARY
        return {
            "/calc.Calc/Add": grpclib.const.Handler(self.add, unary, object, object),
            "/calc.Calc/Fail": grpclib.const.Handler(self.fail, unary, object, object),
        }


@pytest.fixture
async def calc():
    service = Calc()
    server = grpclib.server.Server([service], codec=JsonCodec())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await server.start(sock=sock)
    service.port = sock.getsockname()[1]
    yield service
    server.close()
    await server.wait_closed()


@pytest.fixture
async def executor(controller):
    _, svc = controller
    async with ServiceExecutor(svc.discovery) as executor:
        yield executor


def task(method: str, payload: dict | None = None, **labels: str) -> ExecutionRequest:
    return ExecutionRequest(
        task_id="t1", attempt=1, name="add", executor=ExecutorKind.SERVICE, payload=payload,
        target_kind="service", target_ref="calc",
        labels={"serviceProtocol": "grpc", "servicePath": method, **labels},
    )


async def test_grpc_call_sends_the_payload_as_json_and_returns_the_reply(
        executor, controller, calc):
    client, _ = controller
    await register(client, "i-calc", {"serviceName": "calc", "port": calc.port,
                                      "protocol": "grpc"})
    ctx = SimpleContext()
    result = await executor.run(task("/calc.Calc/Add", {"a": 2, "b": 3}), ctx)
    assert (result.ok, result.result) == (True, {"sum": 5})
    assert calc.calls == [{"a": 2, "b": 3}]
    assert ctx.running
    again = await executor.run(task("/calc.Calc/Add", {"a": 1, "b": 1}), ctx)  # reused channel
    assert again.result == {"sum": 2}


async def test_grpc_status_is_a_failure_and_bad_methods_are_refused(executor, controller, calc):
    client, _ = controller
    await register(client, "i-calc", {"serviceName": "calc", "port": calc.port,
                                      "protocol": "grpc"})
    failed = await executor.run(task("/calc.Calc/Fail", {}), SimpleContext())
    assert (failed.ok, failed.error) == (False,
                                         "service answered gRPC INVALID_ARGUMENT: no such numbers")
    unknown = await executor.run(task("/calc.Calc/Nope", {}), SimpleContext())
    assert not unknown.ok and unknown.error.startswith("service answered gRPC")
    bad = await executor.run(task("task", {}), SimpleContext())
    assert not bad.ok and "servicePath" in bad.error


async def test_unreachable_grpc_endpoint_moves_on_and_is_marked_unhealthy(
        executor, controller, calc):
    client, svc = controller
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    await register(client, "i-dead", {"serviceName": "calc", "port": dead_port,
                                      "protocol": "grpc"})
    await register(client, "i-calc", {"serviceName": "calc", "port": calc.port,
                                      "protocol": "grpc"})
    results = [await executor.run(task("/calc.Calc/Add", {"a": 1, "b": 2}), SimpleContext())
               for _ in range(2)]
    assert all(r.result == {"sum": 3} for r in results)
    everything = svc.discovery.discover(DiscoveryQuery("calc", include_all=True))
    dead = [e for e in everything if e.port == dead_port]
    assert dead and not dead[0].healthy
