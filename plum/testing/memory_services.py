"""In-memory service endpoints (the `MemoryStore` mixin)."""

from __future__ import annotations

import itertools

import msgspec

from plum.discovery.model import Endpoint, EndpointKey
from plum.errors import NotFound
from plum.store.base import Page


def _missing_instance(instance_id: str) -> NotFound:
    return NotFound(f"no endpoints registered for instance {instance_id!r}", field="instanceId")


class MemoryServices:
    def _init_services(self) -> None:
        # key -> (insertion order, endpoint); a replaced endpoint keeps its order, as in SQLite.
        self._endpoints: dict[EndpointKey, tuple[int, Endpoint]] = {}
        self._endpoint_order = itertools.count(1)

    def _instance_keys(self, instance_id: str) -> list[EndpointKey]:
        return [key for key in self._endpoints if key.instance_id == instance_id]

    async def replace_endpoints(self, instance_id: str, endpoints: list[Endpoint]) -> None:
        keep = {e.key for e in endpoints}
        for key in self._instance_keys(instance_id):
            if key not in keep:
                del self._endpoints[key]
        for endpoint in endpoints:
            order = self._endpoints.get(endpoint.key, (None,))[0]
            self._endpoints[endpoint.key] = (order or next(self._endpoint_order), endpoint)

    async def touch_endpoints(self, instance_id: str, last_seen: float) -> None:
        keys = self._instance_keys(instance_id)
        if not keys:
            raise _missing_instance(instance_id)
        for key in keys:
            order, endpoint = self._endpoints[key]
            self._endpoints[key] = (order, msgspec.structs.replace(endpoint, last_seen=last_seen))

    async def set_endpoint_health(self, key: EndpointKey, healthy: bool) -> None:
        if key not in self._endpoints:
            raise NotFound(f"endpoint {tuple(key)!r} not found", field="instanceId")
        order, endpoint = self._endpoints[key]
        self._endpoints[key] = (order, msgspec.structs.replace(endpoint, healthy=healthy))

    async def delete_endpoints(self, instance_id: str) -> None:
        keys = self._instance_keys(instance_id)
        if not keys:
            raise _missing_instance(instance_id)
        for key in keys:
            del self._endpoints[key]

    async def list_endpoints(
        self, *, service_name: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Endpoint]:
        rows = [
            (order, e)
            for order, e in self._endpoints.values()
            if service_name is None or e.service_name == service_name
        ]
        rows.sort(key=lambda row: (-row[1].registered_at, -row[0]))
        return Page([e for _, e in rows[offset : offset + limit]], len(rows))
