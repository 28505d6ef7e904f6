"""Deployments: apps running as instances on nodes, and what each node's agent is told.

Every change of what an instance should be is stored first, then published on the bus
(`DeploymentChanged`, `InstanceChanged`, `InstanceRemoved`), then pushed at once to the
agents concerned over the agent hub (`Assignments` with the changed items and the removed
ids). A node that is not connected gets nothing pushed: on (re)connect the hub asks
`assignments_for(node)` for its full set. HTTP agents read the same set from
`GET /v1/assignments` or the `GET /v1/stream?nodeId=` SSE stream.

Agents report instance status (over the hub, or `POST /v1/instances/status`); a report is
stored and published, and an instance that reports `Running` and healthy gets its app's
services registered for discovery at its node's address (refreshed on every heartbeat of
its node); one that stops, fails, is stopped or goes away is deregistered.

Changes are serialised by one lock, so a scale, a failover and a report never interleave.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Protocol

import msgspec

from plum.agent.protocol import (
    Assignment,
    Assignments,
    DesiredState,
    InstancePhase,
    InstanceStatus,
)
from plum.apps import AppService
from plum.bus import (
    END,
    Bus,
    DeploymentChanged,
    DeploymentRemoved,
    InstanceChanged,
    InstanceRemoved,
    NodeChanged,
    Subscription,
)
from plum.clock import Clock
from plum.discovery.model import EndpointSpec, Registration, ServiceProtocol
from plum.discovery.registry import ServiceRegistry
from plum.engine.deployments import (
    Deployment,
    DeploymentEntry,
    DeploymentState,
    Instance,
    assignment_of,
    load_by_node,
    new_instance,
    pick_node,
    scale_down_order,
    with_desired,
    with_replicas,
)
from plum.engine.model import Health, Model, Node
from plum.errors import Conflict, Invalid, InvalidState, NotFound, PlumError, Unavailable
from plum.ids import new_id, new_instance_id
from plum.logging import get_logger
from plum.nodes import NodeRegistry
from plum.store.base import Page, Store

log = get_logger(__name__)

MAX_REPLICAS = 1000  # per node and entry
MAX_INSTANCES = 10_000  # per deployment
PUSH_TIMEOUT = 5.0

NodeId = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_REPLICAS)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class AgentHub(Protocol):
    """What deployments need from the agent link (`plum.agenthub.AgentHub`)."""

    def set_assignment_source(
        self, source: Callable[[str], Awaitable[list[Assignment]]]
    ) -> None: ...
    def add_status_listener(self, listener: Callable[[InstanceStatus], None]) -> None: ...
    async def push(self, node_id: str, message: Assignments) -> None: ...
    def connected_nodes(self) -> set[str]: ...


class NewEntry(Model, frozen=True, forbid_unknown_fields=False):
    artifact_id: str = ""
    artifact_url: Annotated[str, msgspec.Meta(max_length=2048)] = ""
    start_cmd: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    replicas: dict[NodeId, Count] = {}


class NewDeployment(Model, frozen=True, forbid_unknown_fields=False):
    name: Name
    entries: Annotated[list[NewEntry], msgspec.Meta(min_length=1, max_length=64)]
    labels: dict[str, str] = {}
    node_selector: dict[str, str] = {}


class DeploymentPatch(Model, frozen=True, forbid_unknown_fields=False):
    """Fields left out (or null) stay as they are."""

    name: Name | None = None
    labels: dict[str, str] | None = None
    node_selector: dict[str, str] | None = None


class ScaleBody(Model, frozen=True, forbid_unknown_fields=False):
    """New replica counts for the listed nodes (0 removes a node's replicas); `entry` picks
    the entry of a deployment that has several."""

    replicas: dict[NodeId, Count]
    entry: Annotated[int, msgspec.Meta(ge=0)] | None = None


class DesiredBody(Model, frozen=True, forbid_unknown_fields=False):
    desired: DesiredState


class DeploymentDetail(Deployment, frozen=True):
    instances: list[Instance] = []


class InstanceLogView(Model, frozen=True):
    instance_id: str
    node_id: str
    text: str
    truncated: bool = False


class DeploymentService:
    def __init__(
        self,
        store: Store,
        apps: AppService,
        nodes: NodeRegistry,
        discovery: ServiceRegistry,
        bus: Bus,
        clock: Clock,
    ):
        self._store = store
        self._apps = apps
        self._nodes = nodes
        self._discovery = discovery
        self._bus = bus
        self._clock = clock
        self._hub: AgentHub | None = None
        self._lock = asyncio.Lock()
        self._reports: asyncio.Queue[InstanceStatus] = asyncio.Queue()

    def attach(self, hub: AgentHub) -> None:
        """Serve the hub's assignment requests and take its status reports."""
        self._hub = hub
        hub.set_assignment_source(self.assignments_for)
        hub.add_status_listener(self._reports.put_nowait)

    async def instance_log(self, instance_id: str, *, tail_bytes: int) -> InstanceLogView:
        """The end of an instance's log, fetched from the agent of its node."""
        instance = await self._store.get_instance(instance_id)
        if self._hub is None:
            raise Unavailable("no agent link on this controller")
        answer = await self._hub.instance_log(instance.node_id, instance_id,
                                              tail_bytes=tail_bytes)
        if not answer.found:
            raise NotFound(f"node {instance.node_id!r} has no log for instance {instance_id!r}",
                           field="instanceId")
        return InstanceLogView(instance_id=instance_id, node_id=instance.node_id,
                               text=answer.text, truncated=answer.truncated)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DeploymentService]:
        with self._bus.subscribe({"nodes"}) as nodes:
            async with asyncio.TaskGroup() as tg:
                workers = [
                    tg.create_task(self._apply_reports(), name="instance-reports"),
                    tg.create_task(self._refresh_on_heartbeat(nodes), name="endpoint-refresh"),
                ]
                try:
                    yield self
                finally:
                    for worker in workers:
                        worker.cancel()

    # -- deployments
    async def create(self, body: NewDeployment) -> DeploymentDetail:
        entries = [await self._entry(i, e) for i, e in enumerate(body.entries)]
        _check_size(entries)
        now = self._now()
        deployment = Deployment(
            deployment_id=new_id(), name=body.name, state=DeploymentState.STOPPED,
            entries=entries, labels=body.labels, node_selector=body.node_selector,
            created_at=now, updated_at=now,
        )
        instances = [
            new_instance(new_instance_id(deployment.deployment_id), deployment, index, node, now)
            for index, entry in enumerate(entries)
            for node, count in entry.replicas.items()
            for _ in range(count)
        ]
        async with self._lock:
            await self._store.insert_deployment(deployment, instances)
            await self._announce(deployment, instances, [])
        log.info("deployment_created", deployment_id=deployment.deployment_id,
                 name=deployment.name, instances=len(instances))
        return DeploymentDetail(**msgspec.structs.asdict(deployment), instances=instances)

    async def _entry(self, index: int, body: NewEntry) -> DeploymentEntry:
        replicas = {node: count for node, count in body.replicas.items() if count > 0}
        app = await self._apps.resolve(body.artifact_id, body.artifact_url,
                                       field=f"entries[{index}]")
        if app is None:
            return DeploymentEntry(artifact_url=body.artifact_url, replicas=replicas,
                                   start_cmd=body.start_cmd)
        return DeploymentEntry(
            artifact_url=app.url, replicas=replicas, artifact_id=app.artifact_id,
            artifact_sha256=app.sha256, app_name=app.name, app_version=app.version,
            start_cmd=body.start_cmd, image=app.image, services=app.services,
        )

    async def get(self, deployment_id: str) -> DeploymentDetail:
        deployment = await self._store.get_deployment(deployment_id)
        instances = await self._store.list_instances(deployment_id=deployment_id)
        return DeploymentDetail(**msgspec.structs.asdict(deployment), instances=instances)

    async def list(self, *, limit: int = 100, offset: int = 0) -> Page[Deployment]:
        return await self._store.list_deployments(limit=limit, offset=offset)

    async def patch(self, deployment_id: str, body: DeploymentPatch) -> DeploymentDetail:
        changes = {k: v for k, v in (("name", body.name), ("labels", body.labels),
                                     ("node_selector", body.node_selector)) if v is not None}
        async with self._lock:
            current = await self._store.get_deployment(deployment_id)
            updated = msgspec.structs.replace(current, **changes, updated_at=self._now())
            await self._apply(updated, [], [])
        return await self.get(deployment_id)

    async def start(self, deployment_id: str) -> DeploymentDetail:
        return await self._set_state(deployment_id, DeploymentState.RUNNING)

    async def stop(self, deployment_id: str) -> DeploymentDetail:
        return await self._set_state(deployment_id, DeploymentState.STOPPED)

    async def _set_state(self, deployment_id: str, state: DeploymentState) -> DeploymentDetail:
        desired = DesiredState(state.value)
        async with self._lock:
            current = await self._store.get_deployment(deployment_id)
            instances = await self._store.list_instances(deployment_id=deployment_id)
            changed = [with_desired(i, desired) for i in instances
                       if i.live and i.desired != desired]
            updated = current
            if current.state != state:
                updated = msgspec.structs.replace(current, state=state, updated_at=self._now())
            if updated is not current or changed:
                await self._apply(updated, changed, [])
        log.info("deployment_state_set", deployment_id=deployment_id, state=state.value,
                 instances=len(changed))
        return await self.get(deployment_id)

    async def scale(self, deployment_id: str, body: ScaleBody) -> DeploymentDetail:
        async with self._lock:
            current = await self._store.get_deployment(deployment_id)
            index = _entry_index(current, body.entry)
            entries = list(current.entries)
            entries[index] = with_replicas(entries[index], body.replicas)
            _check_size(entries)
            updated = msgspec.structs.replace(current, entries=entries, updated_at=self._now())
            live = [i for i in await self._store.list_instances(deployment_id=deployment_id)
                    if i.live and i.entry == index]
            added, removed = [], []
            for node, count in body.replicas.items():
                on_node = [i for i in live if i.node_id == node]
                added += [new_instance(new_instance_id(deployment_id), updated, index, node,
                                       self._now()) for _ in range(count - len(on_node))]
                removed += scale_down_order(on_node)[: max(0, len(on_node) - count)]
            await self._apply(updated, added, removed)
        log.info("deployment_scaled", deployment_id=deployment_id, entry=index,
                 added=len(added), removed=len(removed))
        return await self.get(deployment_id)

    async def delete(self, deployment_id: str) -> None:
        async with self._lock:
            instances = await self._store.list_instances(deployment_id=deployment_id)
            await self._store.delete_deployment(deployment_id)
            self._bus.publish(DeploymentRemoved(deployment_id))
            await self._announce(None, [], instances)
        log.info("deployment_deleted", deployment_id=deployment_id, instances=len(instances))

    # -- assignments (the agents' view)
    async def assignments_for(self, node_id: str) -> list[Assignment]:
        """Every assignment of the node: what its agent should run or keep stopped."""
        instances = [i for i in await self._store.list_instances(node_id=node_id) if i.live]
        deployments = await self._deployments_of(instances)
        return [assignment_of(deployments[i.deployment_id], i)
                for i in instances if i.deployment_id in deployments]

    async def set_desired(self, instance_id: str, desired: DesiredState) -> Instance:
        async with self._lock:
            current = await self._store.get_instance(instance_id)
            if not current.live and desired == DesiredState.RUNNING:
                raise InvalidState(f"instance {instance_id!r} was replaced by "
                                   f"{current.replaced_by!r}; it can only stay stopped")
            updated = with_desired(current, desired)
            if updated is not current:
                await self._apply(None, [updated], [])
        return updated

    async def remove_instance(self, instance_id: str) -> None:
        """Drop one instance; its deployment keeps one replica less on that node."""
        async with self._lock:
            instance = await self._store.get_instance(instance_id)
            deployment = None
            if instance.live:
                current = await self._store.get_deployment(instance.deployment_id)
                entries = list(current.entries)
                entry = entries[instance.entry]
                left = entry.replicas.get(instance.node_id, 0) - 1
                entries[instance.entry] = with_replicas(entry, {instance.node_id: left})
                deployment = msgspec.structs.replace(current, entries=entries,
                                                     updated_at=self._now())
            await self._apply(deployment, [], [instance])

    # -- status reports
    async def report(self, status: InstanceStatus) -> Instance:
        """Record an agent's report on an instance (`NotFound` for an unknown instance,
        `Conflict` when it comes from another node than the instance's)."""
        async with self._lock:
            current = await self._store.get_instance(status.instance_id)
            if status.node_id and status.node_id != current.node_id:
                raise Conflict(f"instance {status.instance_id!r} belongs to node "
                               f"{current.node_id!r}, not {status.node_id!r}", field="nodeId")
            updated = msgspec.structs.replace(
                current, phase=status.phase, restarts=status.restarts,
                exit_code=status.exit_code, pid=status.pid, healthy=status.healthy,
                message=status.message[:2000], last_report_at=self._now(),
            )
            await self._store.save_instance_status(updated)
            self._bus.publish(InstanceChanged(updated))
            if updated.serving:
                await self._register(updated)
            elif current.serving:
                await self._deregister(updated.instance_id)
        return updated

    async def _apply_reports(self) -> None:
        while True:
            status = await self._reports.get()
            try:
                await self.report(status)
            except PlumError as exc:
                log.warning("instance_status_ignored", instance_id=status.instance_id,
                            node_id=status.node_id, reason=exc.message)

    # -- failover (called by `plum.failover.Failover`)
    async def migrate_off(self, node_id: str) -> int:
        """Re-place the live instances of running deployments on `node_id` onto the least
        loaded healthy nodes their node selector allows; returns how many moved."""
        async with self._lock:
            if await self._node_health(node_id) == Health.HEALTHY:
                return 0  # it came back meanwhile
            instances = await self._store.list_instances()
            load = load_by_node(instances)
            nodes = await self._all_nodes()
            moved = 0
            leaving = [i for i in instances if i.node_id == node_id and i.live]
            for deployment_id, group in _by_deployment(leaving).items():
                moved += await self._migrate(deployment_id, group, nodes, load)
            return moved

    async def _migrate(
        self, deployment_id: str, instances: list[Instance], nodes: list[Node],
        load: dict[str, int],
    ) -> int:
        current = await self._store.get_deployment(deployment_id)
        if current.state != DeploymentState.RUNNING:
            return 0
        entries = list(current.entries)
        changed: list[Instance] = []
        now = self._now()
        for old in instances:
            target = pick_node(nodes, load, current.node_selector, avoid=old.node_id)
            if target is None:
                log.warning("instance_not_migrated", instance_id=old.instance_id,
                            node_id=old.node_id, reason="no healthy node matches")
                continue
            new = new_instance(new_instance_id(deployment_id), current, old.entry,
                               target.node_id, now)
            changed += [new, msgspec.structs.replace(
                with_desired(old, DesiredState.STOPPED), replaced_by=new.instance_id)]
            entry = entries[old.entry]
            entries[old.entry] = with_replicas(entry, {
                old.node_id: entry.replicas.get(old.node_id, 0) - 1,
                target.node_id: entry.replicas.get(target.node_id, 0) + 1,
            })
            load[target.node_id] = load.get(target.node_id, 0) + 1
            log.info("instance_migrated", instance_id=old.instance_id, node_id=old.node_id,
                     new_instance_id=new.instance_id, new_node_id=target.node_id)
        if changed:
            updated = msgspec.structs.replace(current, entries=entries, updated_at=now)
            await self._apply(updated, changed, [])
        return len(changed) // 2

    async def retire_stale(self, node_id: str) -> int:
        """Drop the node's failed-over instances and tell its agent to stop them."""
        async with self._lock:
            stale = [i for i in await self._store.list_instances(node_id=node_id) if not i.live]
            if stale:
                await self._apply(None, [], stale)
                log.info("stale_instances_retired", node_id=node_id, instances=len(stale))
            return len(stale)

    # -- storing, announcing, pushing
    async def _apply(
        self, deployment: Deployment | None, changed: list[Instance], removed: list[Instance]
    ) -> None:
        await self._store.save_deployment(deployment, changed,
                                          [i.instance_id for i in removed])
        await self._announce(deployment, changed, removed)

    async def _announce(
        self, deployment: Deployment | None, changed: list[Instance], removed: list[Instance]
    ) -> None:
        """After a change is stored: publish it, fix discovery, push it to the agents."""
        if deployment is not None:
            self._bus.publish(DeploymentChanged(deployment))
        for instance in changed:
            self._bus.publish(InstanceChanged(instance, assignment=True))
        for instance in removed:
            self._bus.publish(InstanceRemoved(instance.instance_id, instance.deployment_id,
                                              instance.node_id))
        leaving = [*(i for i in changed if not i.serving), *removed]
        for instance in leaving:
            # Only an instance last reported running and healthy can have endpoints.
            if instance.phase == InstancePhase.RUNNING and instance.healthy:
                await self._deregister(instance.instance_id)
        await self._push(changed, removed)

    async def _push(self, changed: list[Instance], removed: list[Instance]) -> None:
        hub = self._hub
        if hub is None:
            return
        connected = hub.connected_nodes()
        items: dict[str, list[Instance]] = {}
        gone: dict[str, list[str]] = {}
        for instance in changed:
            if instance.node_id in connected:
                if instance.live:
                    items.setdefault(instance.node_id, []).append(instance)
                else:
                    gone.setdefault(instance.node_id, []).append(instance.instance_id)
        for instance in removed:
            if instance.node_id in connected:
                gone.setdefault(instance.node_id, []).append(instance.instance_id)
        deployments = await self._deployments_of(i for group in items.values() for i in group)
        for node_id in sorted({*items, *gone}):
            message = Assignments(
                items=[assignment_of(deployments[i.deployment_id], i)
                       for i in items.get(node_id, []) if i.deployment_id in deployments],
                removed=gone.get(node_id, []),
            )
            try:
                async with asyncio.timeout(PUSH_TIMEOUT):
                    await hub.push(node_id, message)
            except Exception as exc:  # the agent gets its full set when it reconnects
                log.warning("assignments_not_pushed", node_id=node_id, error=str(exc)
                            or type(exc).__name__)

    async def _deployments_of(self, instances: Iterable[Instance]) -> dict[str, Deployment]:
        found: dict[str, Deployment] = {}
        for deployment_id in dict.fromkeys(i.deployment_id for i in instances):
            try:
                found[deployment_id] = await self._store.get_deployment(deployment_id)
            except NotFound:
                continue  # deleted meanwhile
        return found

    # -- discovery
    async def _register(self, instance: Instance) -> None:
        try:
            deployment = await self._store.get_deployment(instance.deployment_id)
            node = await self._nodes.get(instance.node_id)
        except NotFound:
            return
        services = deployment.entries[instance.entry].services
        if not services or not node.ip:
            return
        registration = Registration(
            instance_id=instance.instance_id, ip=node.ip, node_id=node.node_id,
            endpoints=[EndpointSpec(service_name=s.service_name, port=s.port,
                                    protocol=ServiceProtocol(s.protocol), version=s.version,
                                    labels=deployment.labels) for s in services],
        )
        await self._discovery.register(registration)

    async def _deregister(self, instance_id: str) -> None:
        try:
            await self._discovery.deregister(instance_id)
        except NotFound:
            return  # it had nothing registered

    async def _refresh_on_heartbeat(self, sub: Subscription) -> None:
        """Keep serving instances' endpoints fresh while their node heartbeats."""
        async for item in sub:
            if item is END:
                return
            event = getattr(item, "event", None)
            if isinstance(event, NodeChanged) and event.node.health == Health.HEALTHY:
                for instance in await self._store.list_instances(node_id=event.node.node_id):
                    if instance.serving:
                        try:
                            await self._discovery.heartbeat(instance.instance_id)
                        except NotFound:
                            continue

    # -- helpers
    async def _node_health(self, node_id: str) -> Health | None:
        try:
            return (await self._nodes.get(node_id)).health
        except NotFound:
            return None

    async def _all_nodes(self) -> list[Node]:
        nodes: list[Node] = []
        while True:
            page = await self._nodes.list(limit=1000, offset=len(nodes))
            nodes += page.items
            if not page.items or len(nodes) >= page.total:
                return nodes

    def _now(self) -> float:
        return round(self._clock.now(), 3)


def _entry_index(deployment: Deployment, entry: int | None) -> int:
    if entry is None:
        if len(deployment.entries) != 1:
            raise Invalid("entry: this deployment has several entries; say which to scale",
                          field="entry")
        return 0
    if entry >= len(deployment.entries):
        raise Invalid(f"entry: the deployment has {len(deployment.entries)} entries",
                      field="entry")
    return entry


def _check_size(entries: list[DeploymentEntry]) -> None:
    total = sum(sum(e.replicas.values()) for e in entries)
    if total > MAX_INSTANCES:
        raise Invalid(f"replicas: {total} instances, over the cap of {MAX_INSTANCES}",
                      field="replicas")


def _by_deployment(instances: list[Instance]) -> dict[str, list[Instance]]:
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.deployment_id, []).append(instance)
    return groups
