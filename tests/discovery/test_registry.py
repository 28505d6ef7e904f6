"""The service registry: REST routes, discovery filters, background health checks, TTL."""

from __future__ import annotations

import asyncio
import random

import pytest

from plum.bus import Bus, ServiceChanged
from plum.discovery.balancer import Balancer, Strategy
from plum.discovery.model import Endpoint, EndpointSpec, Registration, ServiceProtocol
from plum.discovery.registry import DiscoveryQuery, ServiceRegistry
from plum.store.sqlite import SqliteStore
from plum.testing import FakeClock
from plum.testing.memory_store import MemoryStore
from tests.discovery.fakes import FakeService, http_endpoint, register
from tests.support.sse import EventStream

pytestmark = pytest.mark.timeout(20)


def error_of(body: dict) -> tuple[str, str | None]:
    return body["error"]["code"], body["error"].get("field")


async def listing(client, url: str = "/v1/services") -> list[dict]:
    response = await client.get(url)
    assert response.status == 200, await response.text()
    return await response.json()


# Registration, heartbeat, deregistration.


async def test_register_lists_newest_first_with_every_field(controller, clock):
    client, _ = controller
    registered = await register(
        client,
        "i-a",
        http_endpoint("echo", 8001, version="v1", labels={"zone": "a"}),
        {"serviceName": "rpc", "port": 9001, "protocol": "grpc"},
        ip="10.0.0.5",
    )
    assert [e["serviceName"] for e in registered] == ["echo", "rpc"]
    clock.advance(1)
    await register(client, "i-b", http_endpoint("echo", 8002), ip="10.0.0.6")
    response = await client.get("/v1/services?limit=2")
    assert response.headers["X-Total-Count"] == "3"
    page = await response.json()
    assert [(e["instanceId"], e["port"]) for e in page] == [("i-b", 8002), ("i-a", 9001)]
    echo = (await listing(client, "/v1/services?offset=2"))[0]
    assert echo == {
        "serviceName": "echo",
        "instanceId": "i-a",
        "nodeId": "",
        "ip": "10.0.0.5",
        "port": 8001,
        "protocol": "http",
        "version": "v1",
        "labels": {"zone": "a"},
        "healthy": True,
        "lastSeen": clock.now() - 1,
        "registeredAt": clock.now() - 1,
    }
    only_rpc = await listing(client, "/v1/services?service=rpc")
    assert [e["port"] for e in only_rpc] == [9001]


async def test_register_replaces_the_instances_endpoints_idempotently(controller, clock):
    client, _ = controller
    first = await register(client, "i-a", http_endpoint("echo", 8001), http_endpoint("x", 8002))
    clock.advance(5)
    again = await register(client, "i-a", http_endpoint("echo", 8001, version="v2"))
    assert again[0]["registeredAt"] == first[0]["registeredAt"]
    assert again[0]["lastSeen"] == first[0]["lastSeen"] + 5
    endpoints = await listing(client)
    assert [(e["serviceName"], e["version"]) for e in endpoints] == [("echo", "v2")]
    await register(client, "i-a", http_endpoint("echo", 8001, version="v2"))
    assert len(await listing(client)) == 1


async def test_heartbeat_refreshes_and_unknown_is_404(controller, clock):
    client, _ = controller
    await register(client, "i-a", http_endpoint("echo", 8001), http_endpoint("x", 8002))
    clock.advance(7)
    response = await client.post("/v1/services/heartbeat", json={"instanceId": "i-a"})
    assert response.status == 200
    assert {e["lastSeen"] for e in await response.json()} == {clock.now()}
    assert {e["lastSeen"] for e in await listing(client)} == {clock.now()}
    unknown = await client.post("/v1/services/heartbeat", json={"instanceId": "ghost"})
    assert unknown.status == 404
    assert error_of(await unknown.json()) == ("not_found", "instanceId")


async def test_deregister(controller):
    client, _ = controller
    await register(client, "i-a", http_endpoint("echo", 8001))
    await register(client, "i-b", http_endpoint("echo", 8002))
    assert (await client.delete("/v1/services?instanceId=i-a")).status == 204
    assert [e["instanceId"] for e in await listing(client)] == ["i-b"]
    again = await client.delete("/v1/services?instanceId=i-a")
    assert again.status == 404
    missing = await client.delete("/v1/services")
    assert missing.status == 400
    assert error_of(await missing.json()) == ("invalid", "instanceId")


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"serviceName": "echo", "port": 0, "protocol": "http"}, "endpoints[0].port"),
        ({"serviceName": "echo", "port": 65536, "protocol": "http"}, "endpoints[0].port"),
        ({"serviceName": "echo", "port": 80, "protocol": "ftp"}, "endpoints[0].protocol"),
        ({"serviceName": "echo", "port": 80}, "endpoints[0].protocol"),
        ({"serviceName": "", "port": 80, "protocol": "http"}, "endpoints[0].serviceName"),
        ({"port": 80, "protocol": "http"}, "endpoints[0].serviceName"),
    ],
)
async def test_invalid_endpoint_is_422_naming_the_field(controller, endpoint, field):
    client, _ = controller
    await register(client, "i-a", http_endpoint("echo", 8001))
    before = await listing(client)
    response = await client.post(
        "/v1/services/register",
        json={"instanceId": "i-a", "ip": "127.0.0.1", "endpoints": [endpoint]},
    )
    assert response.status == 422
    assert error_of(await response.json()) == ("invalid", field)
    assert await listing(client) == before


async def test_invalid_registration_fields(controller):
    client, _ = controller
    ok = http_endpoint("echo", 8001)
    cases = [
        ({"ip": "127.0.0.1", "endpoints": [ok]}, "instanceId"),
        ({"instanceId": "i", "endpoints": [ok]}, "ip"),
        ({"instanceId": "i", "ip": "not an ip/", "endpoints": [ok]}, "ip"),
        ({"instanceId": "i", "ip": "127.0.0.1", "endpoints": []}, "endpoints"),
        ({"instanceId": "i", "ip": "127.0.0.1", "endpoints": [ok, ok]}, "endpoints[1]"),
    ]
    for body, field in cases:
        response = await client.post("/v1/services/register", json=body)
        assert response.status == 422, body
        assert error_of(await response.json()) == ("invalid", field)
    assert await listing(client) == []


# Discovery.


async def test_discovery_filters(controller):
    client, svc = controller
    await register(client, "i-a", http_endpoint("echo", 8001, version="v1"))
    await register(
        client, "i-b", {"serviceName": "echo", "port": 8002, "protocol": "https", "version": "v2"}
    )
    await register(client, "i-c", {"serviceName": "echo", "port": 9000, "protocol": "grpc"})
    await register(client, "i-d", http_endpoint("other", 8003))
    found = await listing(client, "/v1/discovery?service=echo")
    assert [e["instanceId"] for e in found] == ["i-c", "i-b", "i-a"]
    v1 = await listing(client, "/v1/discovery?service=echo&version=v1")
    assert [e["instanceId"] for e in v1] == ["i-a"]
    https = await listing(client, "/v1/discovery?service=echo&protocol=https")
    assert [e["instanceId"] for e in https] == ["i-b"]
    endpoint = svc.discovery.discover(DiscoveryQuery("echo", version="v1"))[0]
    await svc.discovery.mark_unhealthy(endpoint, "test")
    healthy = await listing(client, "/v1/discovery?service=echo")
    assert [e["instanceId"] for e in healthy] == ["i-c", "i-b"]
    everything = await listing(client, "/v1/discovery?service=echo&all=true")
    assert [(e["instanceId"], e["healthy"]) for e in everything][-1] == ("i-a", False)


async def test_discovery_query_errors(controller):
    client, _ = controller
    for url, field in [
        ("/v1/discovery", "service"),
        ("/v1/discovery?service=", "service"),
        ("/v1/discovery?service=echo&protocol=ftp", "protocol"),
        ("/v1/discovery?service=echo&all=maybe", "all"),
        ("/v1/discovery/one?service=echo&strategy=fastest", "strategy"),
        ("/v1/discovery/one", "service"),
    ]:
        response = await client.get(url)
        assert response.status == 400, url
        assert error_of(await response.json()) == ("invalid", field)


async def test_discovery_one_balances_and_404s(controller):
    client, _ = controller
    missing = await client.get("/v1/discovery/one?service=echo")
    assert missing.status == 404
    assert error_of(await missing.json()) == ("not_found", "service")
    await register(client, "i-a", http_endpoint("echo", 8001))
    await register(client, "i-b", http_endpoint("echo", 8002))
    picks = []
    for _ in range(4):
        picks.append((await listing(client, "/v1/discovery/one?service=echo"))["instanceId"])
    assert picks[0] != picks[1] and picks[:2] == picks[2:]
    for strategy in ("random", "least_inflight"):
        one = await listing(client, f"/v1/discovery/one?service=echo&strategy={strategy}")
        assert one["instanceId"] in {"i-a", "i-b"}


async def test_service_summaries(controller):
    client, svc = controller
    await register(
        client,
        "i-a",
        http_endpoint("echo", 8001, version="v2"),
        {"serviceName": "rpc", "port": 9000, "protocol": "grpc"},
    )
    await register(
        client, "i-b", {"serviceName": "echo", "port": 8002, "protocol": "https", "version": "v1"}
    )
    endpoint = svc.discovery.discover(DiscoveryQuery("echo", version="v1"))[0]
    await svc.discovery.mark_unhealthy(endpoint, "test")
    response = await client.get("/v1/services/list")
    assert response.headers["X-Total-Count"] == "2"
    assert await response.json() == [
        {
            "serviceName": "echo",
            "endpoints": 2,
            "healthy": 1,
            "versions": ["v1", "v2"],
            "protocols": ["http", "https"],
        },
        {"serviceName": "rpc", "endpoints": 1, "healthy": 1, "versions": [], "protocols": ["grpc"]},
    ]


async def test_changes_are_published_on_the_services_topic(controller):
    client, _ = controller
    async with client.get("/v1/stream?topics=services") as stream:
        events = EventStream(stream)
        await register(client, "i-a", http_endpoint("echo", 8001))
        registered = await events.next()
        assert registered.event == "services"
        assert registered.json()["instanceId"] == "i-a"
        assert registered.json()["healthy"] is True
        await client.delete("/v1/services?instanceId=i-a")
        removed = await events.next()
        assert removed.json()["deleted"] is True
        assert removed.json()["port"] == 8001


async def test_openapi_describes_the_routes(controller):
    client, _ = controller
    doc = await (await client.get("/v1/openapi.json")).json()
    assert {
        "/v1/services/register",
        "/v1/services/heartbeat",
        "/v1/services",
        "/v1/services/list",
        "/v1/discovery",
        "/v1/discovery/one",
    } <= set(doc["paths"])
    assert set(doc["paths"]["/v1/services"]) == {"get", "delete"}


# Health checks (never inside a request).


async def test_health_check_marks_dead_unhealthy_and_recovered_healthy(controller, fake_services):
    client, svc = controller
    alive, dying = await fake_services("alive"), await fake_services("dying")
    await register(client, "i-alive", http_endpoint("echo", alive.port))
    await register(client, "i-dying", http_endpoint("echo", dying.port))
    await dying.stop()
    await svc.discovery.check_now()
    health = {e["instanceId"]: e["healthy"] for e in await listing(client)}
    assert health == {"i-alive": True, "i-dying": False}
    assert [e["instanceId"] for e in await listing(client, "/v1/discovery?service=echo")] == [
        "i-alive"
    ]
    await dying.start()  # same port
    recovered = svc.bus.wait_for(lambda e: isinstance(e, ServiceChanged) and e.endpoint.healthy)
    await svc.discovery.check_now()
    assert (await asyncio.wait_for(recovered, 5)).endpoint.instance_id == "i-dying"
    assert all(e["healthy"] for e in await listing(client))


async def test_health_check_5xx_is_unhealthy_4xx_is_up(controller, fake_services):
    client, svc = controller
    sick, no_route = await fake_services("sick"), await fake_services("no-route")
    sick.health_status, no_route.health_status = 503, 404
    await register(client, "i-sick", http_endpoint("echo", sick.port))
    await register(client, "i-404", http_endpoint("echo", no_route.port))
    await svc.discovery.check_now()
    assert {e["instanceId"]: e["healthy"] for e in await listing(client)} == {
        "i-sick": False,
        "i-404": True,
    }


async def test_grpc_endpoint_is_probed_by_tcp_connect(controller, fake_services):
    client, svc = controller
    listening, gone = await fake_services("listening"), await fake_services("gone")
    await gone.stop()
    for instance, port in (("i-up", listening.port), ("i-down", gone.port)):
        await register(client, instance, {"serviceName": "rpc", "port": port, "protocol": "grpc"})
    await svc.discovery.check_now()
    assert {e["instanceId"]: e["healthy"] for e in await listing(client)} == {
        "i-up": True,
        "i-down": False,
    }


async def test_health_checks_run_periodically_on_the_clock(controller, fake_services, clock):
    client, svc = controller
    service = await fake_services("a")
    await register(client, "i-a", http_endpoint("echo", service.port))
    await service.stop()
    unhealthy = svc.bus.wait_for(lambda e: isinstance(e, ServiceChanged) and not e.endpoint.healthy)
    clock.advance(9)
    assert not unhealthy.done()
    clock.advance(1)
    assert (await asyncio.wait_for(unhealthy, 5)).endpoint.instance_id == "i-a"


async def test_probe_without_an_answer_times_out(fake_services):
    clock = FakeClock()
    registry = ServiceRegistry(MemoryStore(), Bus(clock), clock, probe_timeout=0.2)
    silent = await fake_services("silent")
    silent.hold_health = True
    await registry.register(registration("i-silent", silent.port))
    await registry.check_now()
    assert registry.discover(DiscoveryQuery("echo")) == []


async def test_probes_are_bounded(fake_services):
    """With one probe slot, a round still checks every endpoint."""
    registry = ServiceRegistry(MemoryStore(), Bus(FakeClock()), FakeClock(), probe_concurrency=1)
    services = [await fake_services(f"s{i}") for i in range(3)]
    for service in services[:2]:
        await service.stop()
    for i, service in enumerate(services):
        await registry.register(registration(f"i-{i}", service.port))
    await registry.check_now()
    everything = registry.discover(DiscoveryQuery("echo", include_all=True))
    assert sorted((e.instance_id, e.healthy) for e in everything) == [
        ("i-0", False),
        ("i-1", False),
        ("i-2", True),
    ]


# Freshness, persistence, balancing (no sockets needed).


def registration(instance_id: str, port: int, **spec) -> Registration:
    return Registration(
        instance_id=instance_id,
        ip="127.0.0.1",
        endpoints=[
            EndpointSpec(service_name="echo", port=port, protocol=ServiceProtocol.HTTP, **spec)
        ],
    )


async def test_stale_endpoints_are_hidden_until_they_heartbeat():
    clock = FakeClock()
    registry = ServiceRegistry(MemoryStore(), Bus(clock), clock, ttl=30)
    await registry.register(registration("i-a", 8001))
    clock.advance(30)
    assert len(registry.discover(DiscoveryQuery("echo"))) == 1
    clock.advance(0.5)
    assert registry.discover(DiscoveryQuery("echo")) == []
    assert len(registry.discover(DiscoveryQuery("echo", include_all=True))) == 1
    assert registry.summaries()[0].healthy == 0
    await registry.heartbeat("i-a")
    assert len(registry.discover(DiscoveryQuery("echo"))) == 1


async def test_concurrent_registrations_of_one_instance_end_as_the_last_one(tmp_path):
    """On SQLite both writes are queued before either commits, so the two interleave."""
    clock = FakeClock()
    async with SqliteStore(tmp_path / "plum.db") as store:
        registry = ServiceRegistry(store, Bus(clock), clock)
        await registry.register(registration("i-a", 8001))
        await asyncio.gather(
            registry.register(registration("i-a", 8002)),
            registry.register(registration("i-a", 8003)),
        )
        indexed = registry.discover(DiscoveryQuery("echo", include_all=True))
        stored = (await store.list_endpoints()).items
    assert [e.port for e in indexed] == [e.port for e in stored] == [8003]


async def test_registry_reloads_what_the_store_kept():
    clock = FakeClock()
    store = MemoryStore()
    first = ServiceRegistry(store, Bus(clock), clock)
    await first.register(registration("i-a", 8001))
    await first.register(registration("i-b", 8002))
    await first.mark_unhealthy(first.discover(DiscoveryQuery("echo"))[0], "test")
    second = ServiceRegistry(store, Bus(clock), clock, check_period=3600)
    async with second.running():
        everything = second.discover(DiscoveryQuery("echo", include_all=True))
    assert [(e.instance_id, e.healthy) for e in everything] == [("i-b", False), ("i-a", True)]


def endpoint(instance_id: str, port: int = 80) -> Endpoint:
    return Endpoint(
        service_name="echo",
        instance_id=instance_id,
        ip="127.0.0.1",
        port=port,
        protocol=ServiceProtocol.HTTP,
    )


def test_balancer_round_robin_random_least_inflight():
    balancer = Balancer(random.Random(7))
    a, b, c = endpoint("a"), endpoint("b"), endpoint("c")
    picks = [balancer.pick("echo", [c, a, b]).instance_id for _ in range(4)]
    assert picks == ["a", "b", "c", "a"]
    assert balancer.order("echo", [c, a, b])[1:] == [c, a]  # the rest, in failover order
    assert {balancer.pick("echo", [a, b], Strategy.RANDOM).instance_id for _ in range(20)} == {
        "a",
        "b",
    }
    with balancer.track(a), balancer.track(a), balancer.track(b):
        assert (balancer.inflight(a), balancer.inflight(b)) == (2, 1)
        for _ in range(3):
            assert balancer.pick("echo", [a, b, c], Strategy.LEAST_INFLIGHT) is c
    assert balancer.inflight(a) == 0
    assert balancer.pick("echo", [], Strategy.LEAST_INFLIGHT) is None


async def test_fake_service_restarts_on_its_port(fake_services):
    service: FakeService = await fake_services("a")
    port = service.port
    await service.stop()
    await service.start()
    assert service.port == port
