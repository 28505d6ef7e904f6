"""Worker values: what workers register, what the store keeps, what clients read.

No I/O here; `plum.bus` and `plum.store` import these, so this module imports only the
engine's model.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

from plum.engine.model import Health, Model

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
Capacity = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", max_length=2048)]


class Transport(StrEnum):
    GRPC = "grpc"
    HTTP = "http"


class Worker(Model, frozen=True):
    """A registered worker. `capacity` is the effective one (the default when it declared
    none); `inflight` is how many tasks it has been sent and not answered yet."""

    worker_id: str
    transport: Transport
    node_id: str = ""
    instance_id: str = ""
    app_name: str = ""
    app_version: str = ""
    url: str = ""
    tasks: list[str] = []
    labels: dict[str, str] = {}
    capacity: int = 0
    inflight: int = 0
    health: Health = Health.UNHEALTHY
    last_seen: float = 0.0
    registered_at: float = 0.0


class WorkerRegistration(Model, frozen=True, forbid_unknown_fields=False):
    """`POST /v1/embedded-workers/register` (and the gRPC `WorkerRegister` message)."""

    worker_id: Name
    node_id: str = ""
    instance_id: str = ""
    app_name: str = ""
    app_version: str = ""
    tasks: list[str] = []
    labels: dict[str, str] = {}
    capacity: Capacity = 0


class HttpWorkerRegistration(Model, frozen=True, forbid_unknown_fields=False):
    """`POST /v1/workers/register`: the controller POSTs `{taskId, name, payload}` to `url`."""

    worker_id: Name
    url: Url
    node_id: str = ""
    tasks: list[str] = []
    labels: dict[str, str] = {}
    capacity: Capacity = 0


class WorkerRef(Model, frozen=True, forbid_unknown_fields=False):
    worker_id: Name
