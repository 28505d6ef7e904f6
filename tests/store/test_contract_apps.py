"""The store contract for apps, deployments and instances: every implementation passes."""

import msgspec
import pytest

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


def app(artifact_id: str = "a1", name: str = "web", version: str = "1.0", **kw) -> App:
    return App(artifact_id=artifact_id, name=name, version=version,
               sha256=kw.pop("sha256", artifact_id * 8), created_at=kw.pop("created_at", 1.0),
               **kw)


def deployment(deployment_id: str = "d1", *artifact_ids: str, **kw) -> Deployment:
    entries = [DeploymentEntry(artifact_url=f"/artifacts/{a}.zip", artifact_id=a,
                               replicas={"n1": 1}) for a in artifact_ids]
    return Deployment(deployment_id=deployment_id, name=kw.pop("name", "dep"),
                      state=kw.pop("state", DeploymentState.STOPPED), entries=entries,
                      created_at=1.0, updated_at=1.0, **kw)


def instance(instance_id: str, deployment_id: str = "d1", node_id: str = "n1", **kw) -> Instance:
    return Instance(instance_id=instance_id, deployment_id=deployment_id, node_id=node_id,
                    desired=kw.pop("desired", DesiredState.STOPPED),
                    phase=kw.pop("phase", InstancePhase.STOPPED), created_at=1.0, **kw)


async def test_apps_round_trip_every_field(store):
    zipped = app("a1", services=[ServiceEndpoint(service_name="web", protocol="http", port=80,
                                                 version="1.0")],
                 url="/artifacts/x.zip", size_bytes=123, created_at=2.5)
    image = app("a2", "nginx", "1.27", kind=AppKind.IMAGE, sha256="",
                image_repository="docker.io/nginx", image_tag="alpine",
                port_mappings=[PortMapping(container_port=80, host_port=8080)])
    await store.insert_app(zipped)
    await store.insert_app(image)
    assert await store.get_app("a1") == zipped
    assert await store.get_app("a2") == image
    assert await store.get_app_by_sha256(zipped.sha256) == zipped
    assert await store.get_app_by_sha256("f" * 64) is None
    with pytest.raises(NotFound):
        await store.get_app("nope")


async def test_app_name_and_version_are_unique(store):
    await store.insert_app(app("a1"))
    with pytest.raises(Conflict) as caught:
        await store.insert_app(app("a2"))
    assert caught.value.field == "name"
    await store.insert_app(app("a3", version="1.1"))
    await store.insert_app(app("a4", name="other"))


async def test_apps_list_newest_first_and_pages(store):
    for i in range(4):
        await store.insert_app(app(f"a{i}", version=str(i)))
    page = await store.list_apps(limit=2, offset=1)
    assert page.total == 4
    assert [a.artifact_id for a in page.items] == ["a2", "a1"]


async def test_an_app_cannot_be_deleted_while_a_deployment_uses_it(store):
    await store.insert_app(app("a1"))
    await store.insert_app(app("a2", version="2"))
    await store.insert_deployment(deployment("d1", "a1"), [])
    with pytest.raises(Conflict):
        await store.delete_app("a1")
    assert await store.delete_app("a2") == app("a2", version="2")
    await store.delete_deployment("d1")
    await store.delete_app("a1")
    with pytest.raises(NotFound):
        await store.delete_app("a1")


async def test_a_deployment_of_a_deleted_app_is_refused(store):
    with pytest.raises(Conflict):
        await store.insert_deployment(deployment("d1", "gone"), [instance("i1")])
    with pytest.raises(NotFound):
        await store.get_deployment("d1")
    assert await store.list_instances() == []


async def test_deployments_round_trip_and_list_newest_first(store):
    await store.insert_app(app("a1"))
    first = deployment("d1", "a1", labels={"team": "x"}, node_selector={"zone": "a"})
    await store.insert_deployment(first, [instance("i1"), instance("i2", node_id="n2")])
    await store.insert_deployment(deployment("d2"), [])
    assert await store.get_deployment("d1") == first
    page = await store.list_deployments()
    assert (page.total, [d.deployment_id for d in page.items]) == (2, ["d2", "d1"])
    assert [d.deployment_id for d in (await store.list_deployments(offset=1)).items] == ["d1"]
    with pytest.raises(NotFound):
        await store.get_deployment("nope")


async def test_save_deployment_replaces_upserts_and_removes_in_one_go(store):
    await store.insert_deployment(deployment("d1"), [instance("i1"), instance("i2")])
    running = msgspec.structs.replace(await store.get_deployment("d1"),
                                      state=DeploymentState.RUNNING, updated_at=5.0)
    moved = instance("i1", desired=DesiredState.RUNNING, replaced_by="i3")
    await store.save_deployment(running, [moved, instance("i3", node_id="n2")], ["i2"])
    assert await store.get_deployment("d1") == running
    assert await store.list_instances(deployment_id="d1") == [moved, instance("i3", node_id="n2")]
    await store.save_deployment(None, [], ["i3"])
    assert [i.instance_id for i in await store.list_instances()] == ["i1"]


async def test_instances_filter_by_deployment_and_node_oldest_first(store):
    await store.insert_deployment(deployment("d1"), [instance("i1"), instance("i2", node_id="n2")])
    await store.insert_deployment(deployment("d2"), [instance("i3", "d2")])
    assert [i.instance_id for i in await store.list_instances()] == ["i1", "i2", "i3"]
    assert [i.instance_id for i in await store.list_instances(node_id="n1")] == ["i1", "i3"]
    assert [i.instance_id for i in await store.list_instances(deployment_id="d1",
                                                              node_id="n2")] == ["i2"]
    assert await store.get_instance("i3") == instance("i3", "d2")
    with pytest.raises(NotFound):
        await store.get_instance("nope")


async def test_status_updates_only_the_reported_fields(store):
    stored = instance("i1", desired=DesiredState.RUNNING, phase=InstancePhase.PENDING, entry=0)
    await store.insert_deployment(deployment("d1"), [stored])
    report = msgspec.structs.replace(
        stored, phase=InstancePhase.FAILED, restarts=3, exit_code=2, pid=99, healthy=True,
        message="boom", last_report_at=7.5,
        desired=DesiredState.STOPPED, node_id="elsewhere",  # not status: left as stored
    )
    await store.save_instance_status(report)
    assert await store.get_instance("i1") == msgspec.structs.replace(
        report, desired=DesiredState.RUNNING, node_id="n1")
    with pytest.raises(NotFound):
        await store.save_instance_status(instance("gone"))


async def test_deleting_a_deployment_deletes_its_instances(store):
    await store.insert_deployment(deployment("d1"), [instance("i1"), instance("i2")])
    await store.insert_deployment(deployment("d2"), [instance("i3", "d2")])
    await store.delete_deployment("d1")
    assert [i.instance_id for i in await store.list_instances()] == ["i3"]
    with pytest.raises(NotFound):
        await store.delete_deployment("d1")
