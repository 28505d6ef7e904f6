"""What handlers reach: the controller's services, stored on the aiohttp app."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from plum.bus import Bus
from plum.clock import Clock
from plum.config import Config
from plum.nodes import NodeRegistry
from plum.store.base import Store


@dataclass(frozen=True, slots=True)
class Services:
    config: Config
    clock: Clock
    bus: Bus
    store: Store
    nodes: NodeRegistry
    version: str
    started_at: float


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
