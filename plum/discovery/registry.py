"""The service registry: endpoints that instances register, and whether they answer.

An instance registers its endpoints (replacing what it registered before) and heartbeats;
discovery returns the endpoints of a service that are healthy and fresh (heartbeat within
`ttl`). Health is checked in the background, never inside a request: every `check_period`
seconds on the clock, each HTTP(S) endpoint gets `GET /healthz` and each gRPC endpoint a TCP
connect, concurrently but bounded. Any HTTP answer below 500 means the server is up; a
connection error, a timeout or a 5xx means it is not. The `service` executor also marks an
endpoint unhealthy when it cannot connect to it. Every change is stored, then kept in
memory (discovery never reads the store), then published.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import msgspec

from plum.bus import Bus, ServiceChanged
from plum.clock import Clock
from plum.discovery.balancer import Balancer, Strategy
from plum.discovery.model import (
    Endpoint,
    EndpointKey,
    Registration,
    ServiceProtocol,
    ServiceSummary,
)
from plum.errors import Invalid, NotFound, Unavailable
from plum.logging import get_logger
from plum.store.base import Page, ServiceRepo

log = get_logger(__name__)

HEALTH_PATH = "/healthz"


@dataclass(frozen=True, slots=True)
class DiscoveryQuery:
    service: str
    version: str | None = None
    protocol: ServiceProtocol | None = None
    port: int | None = None
    include_all: bool = False


class ServiceRegistry:
    def __init__(
        self,
        store: ServiceRepo,
        bus: Bus,
        clock: Clock,
        *,
        ttl: float = 30.0,
        check_period: float = 10.0,
        probe_timeout: float = 2.0,
        probe_concurrency: int = 32,
        balancer: Balancer | None = None,
    ):
        self._store = store
        self._bus = bus
        self._clock = clock
        self._ttl = ttl
        self._check_period = check_period
        self._probe_timeout = probe_timeout
        self._probe_slots = asyncio.Semaphore(probe_concurrency)
        self._round_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.balancer = balancer or Balancer()
        # service name -> key -> endpoint, in registration order (oldest first).
        self._services: dict[str, dict[EndpointKey, Endpoint]] = {}
        self._instances: dict[str, list[EndpointKey]] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ServiceRegistry]:
        await self._load()
        async with self._probe_session() as session, asyncio.TaskGroup() as tg:
            self._session = session
            checker = tg.create_task(self._check_periodically(session), name="service-health")
            try:
                yield self
            finally:
                checker.cancel()
                self._session = None

    async def _load(self) -> None:
        loaded: list[Endpoint] = []
        while True:
            page = await self._store.list_endpoints(limit=1000, offset=len(loaded))
            loaded += page.items
            if not page.items or len(loaded) >= page.total:
                break
        for endpoint in reversed(loaded):
            self._put(endpoint)

    # Registration.

    async def register(self, registration: Registration) -> list[Endpoint]:
        _check_unique(registration)
        now = self._clock.now()
        old = {
            key: self._services[key.service_name][key]
            for key in self._instances.get(registration.instance_id, [])
        }
        endpoints = []
        for spec in registration.endpoints:
            key = EndpointKey(registration.instance_id, spec.service_name, spec.port)
            previous = old.get(key)
            endpoints.append(
                Endpoint(
                    service_name=spec.service_name,
                    instance_id=registration.instance_id,
                    ip=registration.ip,
                    port=spec.port,
                    protocol=spec.protocol,
                    node_id=registration.node_id,
                    version=spec.version,
                    labels=spec.labels,
                    healthy=True,
                    last_seen=now,
                    registered_at=previous.registered_at if previous else now,
                )
            )
        await self._store.replace_endpoints(registration.instance_id, endpoints)
        kept = {e.key for e in endpoints}
        # What is indexed now, not `old`: another registration may have finished meanwhile.
        for key in list(self._instances.get(registration.instance_id, [])):
            if key not in kept:
                self._bus.publish(ServiceChanged(self._drop(key), removed=True))
        for endpoint in endpoints:
            self._put(endpoint)
            self._bus.publish(ServiceChanged(endpoint))
        log.info(
            "service_instance_registered",
            instance_id=registration.instance_id,
            ip=registration.ip,
            services=sorted({e.service_name for e in endpoints}),
        )
        return endpoints

    async def heartbeat(self, instance_id: str) -> list[Endpoint]:
        now = self._clock.now()
        await self._store.touch_endpoints(instance_id, now)
        refreshed = []
        for key in self._instances.get(instance_id, []):
            endpoint = msgspec.structs.replace(self._services[key.service_name][key], last_seen=now)
            self._put(endpoint)
            self._bus.publish(ServiceChanged(endpoint))
            refreshed.append(endpoint)
        return refreshed

    async def deregister(self, instance_id: str) -> None:
        await self._store.delete_endpoints(instance_id)
        for key in list(self._instances.get(instance_id, [])):
            endpoint = self._drop(key)
            self._bus.publish(ServiceChanged(endpoint, removed=True))
        log.info("service_instance_deregistered", instance_id=instance_id)

    async def mark_unhealthy(self, endpoint: Endpoint, reason: str) -> None:
        await self._set_health(endpoint.key, False, reason)

    # Reading.

    async def list_endpoints(
        self, *, service: str | None = None, limit: int, offset: int
    ) -> Page[Endpoint]:
        return await self._store.list_endpoints(service_name=service, limit=limit, offset=offset)

    def summaries(self) -> list[ServiceSummary]:
        out = []
        for name in sorted(self._services):
            endpoints = self._services[name].values()
            out.append(
                ServiceSummary(
                    service_name=name,
                    endpoints=len(endpoints),
                    healthy=sum(1 for e in endpoints if self._usable(e)),
                    versions=sorted({e.version for e in endpoints if e.version}),
                    protocols=sorted({e.protocol for e in endpoints}),
                )
            )
        return out

    def discover(self, query: DiscoveryQuery) -> list[Endpoint]:
        """The service's endpoints matching the query, newest first; only the healthy and
        fresh ones unless `query.include_all`."""
        return [
            e
            for e in reversed(self._services.get(query.service, {}).values())
            if (query.version is None or e.version == query.version)
            and (query.protocol is None or e.protocol == query.protocol)
            and (query.port is None or e.port == query.port)
            and (query.include_all or self._usable(e))
        ]

    def pick(self, query: DiscoveryQuery, strategy: Strategy = Strategy.ROUND_ROBIN) -> Endpoint:
        chosen = self.balancer.pick(query.service, self.discover(query), strategy)
        if chosen is None:
            raise NotFound(f"no healthy endpoint for service {query.service!r}", field="service")
        return chosen

    def _usable(self, endpoint: Endpoint) -> bool:
        return endpoint.healthy and self._clock.now() - endpoint.last_seen <= self._ttl

    # Health checks.

    async def check_now(self) -> None:
        """Probe every endpoint once and store the health flips (tests call this)."""
        if self._session is not None:
            await self._check_round(self._session)
            return
        async with self._probe_session() as session:
            await self._check_round(session)

    async def _check_periodically(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self._clock.sleep(self._check_period)
            await self._check_round(session)

    async def _check_round(self, session: aiohttp.ClientSession) -> None:
        async with self._round_lock, asyncio.TaskGroup() as tg:
            for endpoints in list(self._services.values()):
                for endpoint in list(endpoints.values()):
                    tg.create_task(self._check_one(session, endpoint))

    async def _check_one(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> None:
        async with self._probe_slots:
            healthy, detail = await self._probe(session, endpoint)
        try:
            await self._set_health(endpoint.key, healthy, detail)
        except Unavailable as exc:  # the store is failing; the next round tries again
            log.error("service_health_not_stored", address=endpoint.address, error=str(exc))

    async def _probe(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self._probe_timeout):
                if endpoint.protocol == ServiceProtocol.GRPC:
                    _, writer = await asyncio.open_connection(endpoint.ip, endpoint.port)
                    writer.close()
                    await writer.wait_closed()
                    return True, "connected"
                async with session.get(endpoint.url(HEALTH_PATH)) as response:
                    return response.status < 500, f"HTTP {response.status}"
        except TimeoutError:
            return False, f"no answer within {self._probe_timeout:g}s"
        except (OSError, aiohttp.ClientError) as exc:
            return False, str(exc) or type(exc).__name__

    def _probe_session(self) -> aiohttp.ClientSession:
        # Probes only ask "is it up": certificates are not verified and every probe connects
        # anew, so a pooled connection never hides a port that stopped accepting.
        connector = aiohttp.TCPConnector(ssl=False, force_close=True)
        return aiohttp.ClientSession(connector=connector)

    async def _set_health(self, key: EndpointKey, healthy: bool, reason: str) -> None:
        current = self._get(key)
        if current is None or current.healthy == healthy:
            return
        try:
            await self._store.set_endpoint_health(key, healthy)
        except NotFound:
            return  # deregistered meanwhile
        current = self._get(key)
        if current is None:
            return
        endpoint = msgspec.structs.replace(current, healthy=healthy)
        self._put(endpoint)
        event = "service_endpoint_healthy" if healthy else "service_endpoint_unhealthy"
        log.info(
            event,
            service=key.service_name,
            instance_id=key.instance_id,
            address=endpoint.address,
            reason=reason,
        )
        self._bus.publish(ServiceChanged(endpoint))

    # The in-memory index.

    def _get(self, key: EndpointKey) -> Endpoint | None:
        return self._services.get(key.service_name, {}).get(key)

    def _put(self, endpoint: Endpoint) -> None:
        key = endpoint.key
        self._services.setdefault(key.service_name, {})[key] = endpoint
        keys = self._instances.setdefault(key.instance_id, [])
        if key not in keys:
            keys.append(key)

    def _drop(self, key: EndpointKey) -> Endpoint:
        endpoints = self._services[key.service_name]
        endpoint = endpoints.pop(key)
        if not endpoints:
            del self._services[key.service_name]
        keys = self._instances[key.instance_id]
        keys.remove(key)
        if not keys:
            del self._instances[key.instance_id]
        return endpoint


def _check_unique(registration: Registration) -> None:
    seen: set[tuple[str, int]] = set()
    for i, spec in enumerate(registration.endpoints):
        if (spec.service_name, spec.port) in seen:
            raise Invalid(
                f"endpoints[{i}]: {spec.service_name!r} on port {spec.port} is listed twice",
                field=f"endpoints[{i}]",
            )
        seen.add((spec.service_name, spec.port))
