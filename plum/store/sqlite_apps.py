"""Apps, deployments and their instances."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from plum.agent.protocol import DesiredState, InstancePhase, ServiceEndpoint
from plum.engine.deployments import (
    App,
    AppKind,
    Deployment,
    DeploymentEntry,
    DeploymentState,
    Instance,
    PortMapping,
)
from plum.errors import Conflict, NotFound
from plum.store.base import Page

_encode = msgspec.json.encode
_services = msgspec.json.Decoder(list[ServiceEndpoint])
_ports = msgspec.json.Decoder(list[PortMapping])
_entries = msgspec.json.Decoder(list[DeploymentEntry])
_labels = msgspec.json.Decoder(dict[str, str])


def _json(value) -> str:
    return _encode(value).decode()


_APP_COLUMNS = (
    "artifact_id, name, version, kind, url, sha256, size_bytes, services, image_repository, "
    "image_tag, port_mappings, created_at"
)
_DEPLOYMENT_COLUMNS = (
    "deployment_id, name, state, labels, node_selector, entries, created_at, updated_at"
)
_INSTANCE_COLUMNS = (
    "instance_id, deployment_id, entry, node_id, desired, phase, restarts, exit_code, pid, "
    "healthy, message, last_report_at, replaced_by, created_at"
)
_UPSERT_DEPLOYMENT = (
    f"INSERT INTO deployments ({_DEPLOYMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(deployment_id) DO UPDATE SET name = excluded.name, state = excluded.state, "
    "labels = excluded.labels, node_selector = excluded.node_selector, "
    "entries = excluded.entries, updated_at = excluded.updated_at"
)
_UPSERT_INSTANCE = (
    f"INSERT INTO instances ({_INSTANCE_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(instance_id) DO UPDATE SET "
    + ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _INSTANCE_COLUMNS.split(",")[1:])
)


def _app_params(a: App) -> tuple:
    return (
        a.artifact_id, a.name, a.version, a.kind.value, a.url, a.sha256, a.size_bytes,
        _json(a.services), a.image_repository, a.image_tag, _json(a.port_mappings), a.created_at,
    )


def _app(row: tuple) -> App:
    (artifact_id, name, version, kind, url, sha256, size_bytes, services, image_repository,
     image_tag, port_mappings, created_at) = row
    return App(
        artifact_id=artifact_id, name=name, version=version, kind=AppKind(kind), url=url,
        sha256=sha256, size_bytes=size_bytes, services=_services.decode(services),
        image_repository=image_repository, image_tag=image_tag,
        port_mappings=_ports.decode(port_mappings), created_at=created_at,
    )


def _deployment_params(d: Deployment) -> tuple:
    return (
        d.deployment_id, d.name, d.state.value, _json(d.labels), _json(d.node_selector),
        _json(d.entries), d.created_at, d.updated_at,
    )


def _deployment(row: tuple) -> Deployment:
    deployment_id, name, state, labels, selector, entries, created_at, updated_at = row
    return Deployment(
        deployment_id=deployment_id, name=name, state=DeploymentState(state),
        entries=_entries.decode(entries), labels=_labels.decode(labels),
        node_selector=_labels.decode(selector), created_at=created_at, updated_at=updated_at,
    )


def _instance_params(i: Instance) -> tuple:
    return (
        i.instance_id, i.deployment_id, i.entry, i.node_id, i.desired.value, i.phase.value,
        i.restarts, i.exit_code, i.pid, int(i.healthy), i.message, i.last_report_at,
        i.replaced_by, i.created_at,
    )


def _instance(row: tuple) -> Instance:
    (instance_id, deployment_id, entry, node_id, desired, phase, restarts, exit_code, pid,
     healthy, message, last_report_at, replaced_by, created_at) = row
    return Instance(
        instance_id=instance_id, deployment_id=deployment_id, entry=entry, node_id=node_id,
        desired=DesiredState(desired), phase=InstancePhase(phase), restarts=restarts,
        exit_code=exit_code, pid=pid, healthy=bool(healthy), message=message,
        last_report_at=last_report_at, replaced_by=replaced_by, created_at=created_at,
    )


def _app_ids(deployment: Deployment) -> set[str]:
    return {e.artifact_id for e in deployment.entries if e.artifact_id}


class SqliteApps:
    # -- apps
    async def insert_app(self, app: App) -> None:
        params = _app_params(app)

        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute(f"INSERT INTO apps ({_APP_COLUMNS}) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", params)
            except sqlite3.IntegrityError:
                raise Conflict(f"app {app.name!r} version {app.version!r} exists",
                               field="name") from None

        await self._write(insert)

    async def get_app(self, artifact_id: str) -> App:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE artifact_id = ?", (artifact_id,)).fetchone())
        if row is None:
            raise NotFound(f"app {artifact_id!r} not found", field="artifactId")
        return _app(row)

    async def get_app_by_sha256(self, sha256: str) -> App | None:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE sha256 = ? ORDER BY seq LIMIT 1",
            (sha256,)).fetchone())
        return _app(row) if row else None

    async def list_apps(self, *, limit: int = 100, offset: int = 0) -> Page[App]:
        def query(c: sqlite3.Connection) -> Page[App]:
            rows = c.execute(f"SELECT {_APP_COLUMNS} FROM apps ORDER BY seq DESC "
                             "LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            total = c.execute("SELECT count(*) FROM apps").fetchone()[0]
            return Page([_app(r) for r in rows], total)

        return await self._read(query)

    async def delete_app(self, artifact_id: str) -> App:
        def delete(c: sqlite3.Connection) -> App:
            row = c.execute(f"SELECT {_APP_COLUMNS} FROM apps WHERE artifact_id = ?",
                            (artifact_id,)).fetchone()
            if row is None:
                raise NotFound(f"app {artifact_id!r} not found", field="artifactId")
            users = c.execute("SELECT count(*) FROM deployment_apps WHERE artifact_id = ?",
                              (artifact_id,)).fetchone()[0]
            if users:
                raise Conflict(f"{users} deployment(s) use this app; delete them first",
                               details={"deployments": users})
            c.execute("DELETE FROM apps WHERE artifact_id = ?", (artifact_id,))
            return _app(row)

        return await self._write(delete)

    # -- deployments
    async def insert_deployment(self, deployment: Deployment, instances: list[Instance]) -> None:
        params = _deployment_params(deployment)
        rows = [_instance_params(i) for i in instances]
        apps = [(deployment.deployment_id, a) for a in sorted(_app_ids(deployment))]

        def insert(c: sqlite3.Connection) -> None:
            for _, artifact_id in apps:
                if c.execute("SELECT 1 FROM apps WHERE artifact_id = ?",
                             (artifact_id,)).fetchone() is None:
                    raise Conflict(f"app {artifact_id!r} was deleted", field="artifactId")
            c.execute(f"INSERT INTO deployments ({_DEPLOYMENT_COLUMNS}) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", params)
            c.executemany("INSERT INTO deployment_apps (deployment_id, artifact_id) "
                          "VALUES (?, ?)", apps)
            c.executemany(_UPSERT_INSTANCE, rows)

        await self._write(insert)

    async def save_deployment(
        self,
        deployment: Deployment | None,
        instances: Sequence[Instance] = (),
        removed: Sequence[str] = (),
    ) -> None:
        params = _deployment_params(deployment) if deployment is not None else None
        rows = [_instance_params(i) for i in instances]
        gone = [(instance_id,) for instance_id in removed]

        def save(c: sqlite3.Connection) -> None:
            if params is not None:
                c.execute(_UPSERT_DEPLOYMENT, params)
            c.executemany("DELETE FROM instances WHERE instance_id = ?", gone)
            c.executemany(_UPSERT_INSTANCE, rows)

        await self._write(save)

    async def get_deployment(self, deployment_id: str) -> Deployment:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE deployment_id = ?",
            (deployment_id,)).fetchone())
        if row is None:
            raise NotFound(f"deployment {deployment_id!r} not found", field="deploymentId")
        return _deployment(row)

    async def list_deployments(self, *, limit: int = 100, offset: int = 0) -> Page[Deployment]:
        def query(c: sqlite3.Connection) -> Page[Deployment]:
            rows = c.execute(f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments ORDER BY seq DESC "
                             "LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            total = c.execute("SELECT count(*) FROM deployments").fetchone()[0]
            return Page([_deployment(r) for r in rows], total)

        return await self._read(query)

    async def delete_deployment(self, deployment_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            cursor = c.execute("DELETE FROM deployments WHERE deployment_id = ?",
                               (deployment_id,))
            if cursor.rowcount == 0:
                raise NotFound(f"deployment {deployment_id!r} not found", field="deploymentId")
            c.execute("DELETE FROM instances WHERE deployment_id = ?", (deployment_id,))
            c.execute("DELETE FROM deployment_apps WHERE deployment_id = ?", (deployment_id,))

        await self._write(delete)

    # -- instances
    async def get_instance(self, instance_id: str) -> Instance:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?",
            (instance_id,)).fetchone())
        if row is None:
            raise NotFound(f"instance {instance_id!r} not found", field="instanceId")
        return _instance(row)

    async def list_instances(
        self, *, deployment_id: str | None = None, node_id: str | None = None
    ) -> list[Instance]:
        clauses, args = [], []
        for column, value in (("deployment_id", deployment_id), ("node_id", node_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances{where} ORDER BY seq", args).fetchall())
        return [_instance(r) for r in rows]

    async def save_instance_status(self, instance: Instance) -> None:
        i = instance
        params = (i.phase.value, i.restarts, i.exit_code, i.pid, int(i.healthy), i.message,
                  i.last_report_at, i.instance_id)

        def update(c: sqlite3.Connection) -> None:
            cursor = c.execute(
                "UPDATE instances SET phase = ?, restarts = ?, exit_code = ?, pid = ?, "
                "healthy = ?, message = ?, last_report_at = ? WHERE instance_id = ?", params)
            if cursor.rowcount == 0:
                raise NotFound(f"instance {i.instance_id!r} not found", field="instanceId")

        await self._write(update)
