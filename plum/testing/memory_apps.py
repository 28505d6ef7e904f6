"""In-memory apps, deployments and instances (the `MemoryStore` mixin)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from plum.engine.deployments import App, Deployment, Instance
from plum.errors import Conflict, NotFound
from plum.store.base import Page


class MemoryApps:
    def _init_apps(self) -> None:
        # Dicts keep insertion order: oldest first, as SQLite's `seq`.
        self._apps: dict[str, App] = {}
        self._deployments: dict[str, Deployment] = {}
        self._instances: dict[str, Instance] = {}
        self._deployment_apps: dict[str, set[str]] = {}

    # -- apps
    async def insert_app(self, app: App) -> None:
        if any((a.name, a.version) == (app.name, app.version) for a in self._apps.values()):
            raise Conflict(f"app {app.name!r} version {app.version!r} exists", field="name")
        self._apps[app.artifact_id] = app

    async def get_app(self, artifact_id: str) -> App:
        try:
            return self._apps[artifact_id]
        except KeyError:
            raise NotFound(f"app {artifact_id!r} not found", field="artifactId") from None

    async def get_app_by_sha256(self, sha256: str) -> App | None:
        return next((a for a in self._apps.values() if a.sha256 == sha256), None)

    async def list_apps(self, *, limit: int = 100, offset: int = 0) -> Page[App]:
        items = list(reversed(self._apps.values()))
        return Page(items[offset : offset + limit], len(items))

    async def delete_app(self, artifact_id: str) -> App:
        app = await self.get_app(artifact_id)
        users = sum(1 for ids in self._deployment_apps.values() if artifact_id in ids)
        if users:
            raise Conflict(f"{users} deployment(s) use this app; delete them first",
                           details={"deployments": users})
        del self._apps[artifact_id]
        return app

    # -- deployments
    async def insert_deployment(self, deployment: Deployment, instances: list[Instance]) -> None:
        apps = {e.artifact_id for e in deployment.entries if e.artifact_id}
        for artifact_id in sorted(apps):
            if artifact_id not in self._apps:
                raise Conflict(f"app {artifact_id!r} was deleted", field="artifactId")
        if deployment.deployment_id in self._deployments:
            raise Conflict(f"deployment {deployment.deployment_id!r} exists")
        self._deployments[deployment.deployment_id] = deployment
        self._deployment_apps[deployment.deployment_id] = apps
        for instance in instances:
            self._instances[instance.instance_id] = instance

    async def save_deployment(
        self,
        deployment: Deployment | None,
        instances: Sequence[Instance] = (),
        removed: Sequence[str] = (),
    ) -> None:
        if deployment is not None:
            self._deployments[deployment.deployment_id] = deployment
        for instance_id in removed:
            self._instances.pop(instance_id, None)
        for instance in instances:
            self._instances[instance.instance_id] = instance

    async def get_deployment(self, deployment_id: str) -> Deployment:
        try:
            return self._deployments[deployment_id]
        except KeyError:
            raise NotFound(f"deployment {deployment_id!r} not found",
                           field="deploymentId") from None

    async def list_deployments(self, *, limit: int = 100, offset: int = 0) -> Page[Deployment]:
        items = list(reversed(self._deployments.values()))
        return Page(items[offset : offset + limit], len(items))

    async def delete_deployment(self, deployment_id: str) -> None:
        if self._deployments.pop(deployment_id, None) is None:
            raise NotFound(f"deployment {deployment_id!r} not found", field="deploymentId")
        self._deployment_apps.pop(deployment_id, None)
        for instance_id in [i.instance_id for i in self._instances.values()
                            if i.deployment_id == deployment_id]:
            del self._instances[instance_id]

    # -- instances
    async def get_instance(self, instance_id: str) -> Instance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise NotFound(f"instance {instance_id!r} not found", field="instanceId") from None

    async def list_instances(
        self, *, deployment_id: str | None = None, node_id: str | None = None
    ) -> list[Instance]:
        return [
            i for i in self._instances.values()
            if (deployment_id is None or i.deployment_id == deployment_id)
            and (node_id is None or i.node_id == node_id)
        ]

    async def save_instance_status(self, instance: Instance) -> None:
        stored = await self.get_instance(instance.instance_id)
        self._instances[instance.instance_id] = msgspec.structs.replace(
            stored, phase=instance.phase, restarts=instance.restarts,
            exit_code=instance.exit_code, pid=instance.pid, healthy=instance.healthy,
            message=instance.message, last_report_at=instance.last_report_at,
        )
