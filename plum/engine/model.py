"""Plum's values: what the store returns and the API serialises. No I/O here.

Field names are snake_case in Python and camelCase on the wire (`rename="camel"`).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Model(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=False):
    """Base of wire-visible values."""


class Health(StrEnum):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


class Usage(Model, frozen=True):
    cpu_percent: float = 0.0
    mem_percent: float = 0.0
    mem_used_bytes: int = 0
    mem_total_bytes: int = 0


class Node(Model, frozen=True):
    node_id: str
    ip: str
    labels: dict[str, str] = {}
    last_seen: float = 0.0
    health: Health = Health.UNHEALTHY
    capacity: int = 0
    usage: Usage = Usage()
    version: str = ""
