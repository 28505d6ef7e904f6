"""Apps, deployments and their instances: what the store keeps and the API shows, plus the
pure rules that place instances on nodes. No I/O, no clock reads.

An *app* is an uploaded zip (stored by content hash) or a container image. A *deployment*
runs apps on nodes: each entry names an app and how many replicas run on which node. Each
replica is an *instance* with the state the controller wants (`desired`) and the state its
agent last reported (`phase`). A failed-over instance keeps its record, marked
`replacedBy`, until its node comes back and is told to drop it.

The instance enums and the endpoint shape are the agent link's (`plum.agent.protocol`, a
leaf module), so that what is stored is exactly what travels to agents.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated

import msgspec

from plum.agent.protocol import Assignment, DesiredState, InstancePhase, ServiceEndpoint
from plum.engine.model import Health, Model, Node

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class AppKind(StrEnum):
    ZIP = "zip"
    IMAGE = "image"


class PortMapping(Model, frozen=True, forbid_unknown_fields=False):
    container_port: Port
    host_port: Port | None = None
    protocol: str = "tcp"


class App(Model, frozen=True):
    artifact_id: str
    name: str
    version: str
    kind: AppKind = AppKind.ZIP
    url: str = ""  # `/artifacts/<sha256>.zip`, relative to the controller's base URL
    sha256: str = ""
    size_bytes: int = 0
    services: list[ServiceEndpoint] = []
    image_repository: str = ""
    image_tag: str = ""
    port_mappings: list[PortMapping] = []
    created_at: float = 0.0

    @property
    def image(self) -> str:
        if self.kind != AppKind.IMAGE:
            return ""
        return f"{self.image_repository}:{self.image_tag}"


class DeploymentState(StrEnum):
    STOPPED = "Stopped"
    RUNNING = "Running"


DESIRED_FOR = {
    DeploymentState.STOPPED: DesiredState.STOPPED,
    DeploymentState.RUNNING: DesiredState.RUNNING,
}


class DeploymentEntry(Model, frozen=True):
    """One app of a deployment, with its replicas per node (nodes with none are left out)."""

    artifact_url: str
    replicas: dict[str, int]
    artifact_id: str = ""
    artifact_sha256: str = ""
    app_name: str = ""
    app_version: str = ""
    start_cmd: str = ""
    image: str = ""
    services: list[ServiceEndpoint] = []


class Deployment(Model, frozen=True):
    deployment_id: str
    name: str
    state: DeploymentState
    entries: list[DeploymentEntry]
    labels: dict[str, str] = {}
    node_selector: dict[str, str] = {}
    created_at: float = 0.0
    updated_at: float = 0.0


class Instance(Model, frozen=True):
    instance_id: str
    deployment_id: str
    node_id: str
    desired: DesiredState
    phase: InstancePhase
    entry: int = 0
    restarts: int = 0
    exit_code: int | None = None
    pid: int | None = None
    healthy: bool = False
    message: str = ""
    last_report_at: float | None = None
    replaced_by: str = ""  # set when failover moved this instance elsewhere
    created_at: float = 0.0

    @property
    def live(self) -> bool:
        """Still part of its deployment (not a failed-over leftover)."""
        return not self.replaced_by

    @property
    def serving(self) -> bool:
        """Its endpoints belong in discovery."""
        return (
            self.live
            and self.desired == DesiredState.RUNNING
            and self.phase == InstancePhase.RUNNING
            and self.healthy
        )


def assignment_of(deployment: Deployment, instance: Instance) -> Assignment:
    entry = deployment.entries[instance.entry]
    return Assignment(
        instance_id=instance.instance_id,
        deployment_id=deployment.deployment_id,
        node_id=instance.node_id,
        desired=instance.desired,
        artifact_url=entry.artifact_url,
        artifact_sha256=entry.artifact_sha256,
        app_name=entry.app_name,
        app_version=entry.app_version,
        start_cmd=entry.start_cmd,
        services=entry.services,
        image=entry.image,
    )


def new_instance(
    instance_id: str, deployment: Deployment, entry: int, node_id: str, now: float
) -> Instance:
    desired = DESIRED_FOR[deployment.state]
    running = desired == DesiredState.RUNNING
    return Instance(
        instance_id=instance_id,
        deployment_id=deployment.deployment_id,
        node_id=node_id,
        desired=desired,
        phase=InstancePhase.PENDING if running else InstancePhase.STOPPED,
        entry=entry,
        created_at=now,
    )


def with_desired(instance: Instance, desired: DesiredState) -> Instance:
    """The instance wanting `desired`; one that is to run again shows `Pending` until its
    agent reports."""
    if instance.desired == desired:
        return instance
    phase = instance.phase
    if desired == DesiredState.RUNNING and phase != InstancePhase.RUNNING:
        phase = InstancePhase.PENDING
    return msgspec.structs.replace(instance, desired=desired, phase=phase)


def with_replicas(entry: DeploymentEntry, changes: dict[str, int]) -> DeploymentEntry:
    replicas = {**entry.replicas, **changes}
    return msgspec.structs.replace(entry, replicas={n: c for n, c in replicas.items() if c > 0})


def scale_down_order(instances: Iterable[Instance]) -> list[Instance]:
    """Which instances go first when a node has too many: those not running, then newest."""
    return sorted(instances, key=lambda i: (i.phase == InstancePhase.RUNNING, -i.created_at))


def matches_selector(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pick_node(
    nodes: Iterable[Node], load: dict[str, int], selector: dict[str, str], *, avoid: str
) -> Node | None:
    """The healthy node matching `selector` with the fewest instances (ties: by id)."""
    fits = [
        n
        for n in nodes
        if n.node_id != avoid
        and n.health == Health.HEALTHY
        and matches_selector(selector, n.labels)
    ]
    if not fits:
        return None
    return min(fits, key=lambda n: (load.get(n.node_id, 0), n.node_id))


def load_by_node(instances: Iterable[Instance]) -> dict[str, int]:
    """Live instances per node (what placement balances)."""
    load: dict[str, int] = {}
    for instance in instances:
        if instance.live:
            load[instance.node_id] = load.get(instance.node_id, 0) + 1
    return load
