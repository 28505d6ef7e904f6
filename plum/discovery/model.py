"""Discovery values: what instances register, what the store keeps, what clients read.

No I/O here; `plum.bus` and `plum.store` import these, so this module imports only the
engine's model.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, NamedTuple

import msgspec

from plum.engine.model import Model

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
Host = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._:%-]+$")]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class ServiceProtocol(StrEnum):
    HTTP = "http"
    HTTPS = "https"
    GRPC = "grpc"


class EndpointKey(NamedTuple):
    """What identifies an endpoint: one instance serves a service on one port."""

    instance_id: str
    service_name: str
    port: int


class EndpointSpec(Model, frozen=True, forbid_unknown_fields=False):
    service_name: Name
    port: Port
    protocol: ServiceProtocol
    version: str = ""
    labels: dict[str, str] = {}


class Registration(Model, frozen=True, forbid_unknown_fields=False):
    """`POST /v1/services/register`: the instance's endpoints become exactly these."""

    instance_id: Name
    ip: Host
    endpoints: Annotated[list[EndpointSpec], msgspec.Meta(min_length=1)]
    node_id: str = ""


class InstanceRef(Model, frozen=True, forbid_unknown_fields=False):
    instance_id: Name


class Endpoint(Model, frozen=True):
    service_name: str
    instance_id: str
    ip: str
    port: int
    protocol: ServiceProtocol
    node_id: str = ""
    version: str = ""
    labels: dict[str, str] = {}
    healthy: bool = True
    last_seen: float = 0.0
    registered_at: float = 0.0

    @property
    def key(self) -> EndpointKey:
        return EndpointKey(self.instance_id, self.service_name, self.port)

    @property
    def address(self) -> str:
        """`ip:port`, with an IPv6 address in brackets."""
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    def url(self, path: str) -> str:
        scheme = "https" if self.protocol == ServiceProtocol.HTTPS else "http"
        return f"{scheme}://{self.address}{path}"


class ServiceSummary(Model, frozen=True):
    service_name: str
    endpoints: int
    healthy: int
    versions: list[str]
    protocols: list[ServiceProtocol]
