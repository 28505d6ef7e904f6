"""Failover: instances leave a node that stays Unhealthy past the grace period, for the least
loaded healthy nodes their selector allows; the node's leftovers are stopped when it returns.

Time is a FakeClock: node ttl 15 s, grace 5 s. Nothing sleeps; each step awaits its fact.
"""

from __future__ import annotations

import pytest

from plum.agent.protocol import DesiredState, InstancePhase
from plum.bus import NodeChanged
from plum.config import load_config
from plum.deployments import DeploymentDetail, NewDeployment, NewEntry
from plum.engine.model import Health
from plum.nodes import NodeHeartbeat
from tests.deployments.conftest import GRACE, World

pytestmark = pytest.mark.timeout(10)

LABELS = {"n1": {"zone": "a"}, "n2": {"zone": "b"}, "n3": {"zone": "a"}, "n4": {"zone": "a"}}
ALIVE = ("n2", "n3", "n4")


async def beat(world: World, *node_ids: str) -> None:
    for node_id in node_ids:
        await world.nodes.heartbeat(NodeHeartbeat(node_id=node_id, ip=f"10.0.0.{node_id[1:]}",
                                                  labels=LABELS[node_id]))


async def deploy(world: World, replicas: dict[str, int], *, selector=None,
                 start: bool = True) -> DeploymentDetail:
    body = NewDeployment(name="web", node_selector=selector or {}, entries=[
        NewEntry(artifact_url="https://files.example/web.zip", replicas=replicas)])
    created = await world.deployments.create(body)
    if not start:
        return created
    return await world.deployments.start(created.deployment_id)


async def setup(world: World, **kw) -> DeploymentDetail:
    world.hub.connected = set(ALIVE)
    await beat(world, "n1", *ALIVE)
    await deploy(world, {"n3": 1}, start=False)  # n3 is busier than n4
    web = await deploy(world, {"n1": 2}, **kw)
    world.hub.take()
    return web


async def take_down(world: World, node_id: str = "n1") -> None:
    """The node stops heartbeating, the others beat on; returns once failover saw it."""
    world.clock.advance(10)
    await beat(world, *ALIVE)
    down = world.bus.wait_for(lambda e: isinstance(e, NodeChanged)
                              and e.node.node_id == node_id
                              and e.node.health == Health.UNHEALTHY)
    world.clock.advance(5)  # the node's ttl runs out
    await down
    await world.failover.wait_idle()


async def instances(world: World, deployment_id: str):
    return (await world.deployments.get(deployment_id)).instances


async def fail_over(world: World, web: DeploymentDetail) -> None:
    await take_down(world)
    assert world.failover.armed_nodes() == {"n1"}
    world.clock.advance(GRACE - 0.5)
    assert {i.node_id for i in await instances(world, web.deployment_id)} == {"n1"}
    last_push = world.hub.next_push("n4")
    world.clock.advance(0.5)
    await last_push


async def test_instances_move_to_the_least_loaded_matching_nodes_after_the_grace(make_world):
    world = await make_world()
    web = await setup(world, selector={"zone": "a"})
    old = {i.instance_id for i in web.instances}
    await fail_over(world, web)

    now = await instances(world, web.deployment_id)
    live = [i for i in now if i.live]
    stale = [i for i in now if not i.live]
    assert sorted(i.node_id for i in live) == ["n3", "n4"]  # n2 is zone b
    assert {(i.desired, i.phase) for i in live} == {(DesiredState.RUNNING, InstancePhase.PENDING)}
    assert {i.instance_id for i in stale} == old
    assert {i.desired for i in stale} == {DesiredState.STOPPED}
    assert {i.replaced_by for i in stale} == {i.instance_id for i in live}
    detail = await world.deployments.get(web.deployment_id)
    assert detail.entries[0].replicas == {"n3": 1, "n4": 1}
    assert world.failover.armed_nodes() == set()

    pushed = world.hub.take()
    assert sorted(pushed) == ["n3", "n4"]
    for node_id in ("n3", "n4"):
        (message,) = pushed[node_id]
        assert [(a.node_id, a.desired) for a in message.items] == [
            (node_id, DesiredState.RUNNING)]
    assert await world.deployments.assignments_for("n1") == []  # the full set on hello


async def test_a_node_that_comes_back_has_its_stale_instances_stopped(make_world):
    world = await make_world()
    web = await setup(world, selector={"zone": "a"})
    old = {i.instance_id for i in web.instances}
    await fail_over(world, web)

    world.hub.connected.add("n1")
    told = world.hub.next_push("n1")
    await beat(world, "n1")
    message = await told
    assert set(message.removed) == old and message.items == []
    remaining = await instances(world, web.deployment_id)
    assert sorted(i.node_id for i in remaining) == ["n3", "n4"]
    assert all(i.live for i in remaining)
    assert await world.hub.hello("n1") == []


async def test_a_heartbeat_within_the_grace_moves_nothing(make_world):
    world = await make_world()
    web = await setup(world)
    await take_down(world)
    assert world.failover.armed_nodes() == {"n1"}
    await beat(world, "n1", *ALIVE)
    await world.failover.wait_idle()
    assert world.failover.armed_nodes() == set()
    world.clock.advance(GRACE * 2)
    assert {i.node_id for i in await instances(world, web.deployment_id)} == {"n1"}
    assert world.hub.take() == {}


async def test_disabled_by_default_nothing_moves(make_world):
    config = load_config(None, environ={}, dotenv=None)
    assert config.controller.auto_migration_enabled is False
    assert config.controller.migration_grace_sec == 30.0
    assert load_config(None, environ={"AUTO_MIGRATION_ENABLED": "true"},
                       dotenv=None).controller.auto_migration_enabled is True

    world = await make_world(enabled=False)
    web = await setup(world)
    await take_down(world)
    assert world.failover.armed_nodes() == set()
    world.clock.advance(GRACE + 1)
    now = await instances(world, web.deployment_id)
    assert {(i.node_id, i.desired, i.live) for i in now} == {("n1", DesiredState.RUNNING, True)}
    assert world.hub.take() == {}


async def test_no_matching_node_or_a_stopped_deployment_stays_put(make_world):
    world = await make_world(enabled=False)  # driven by hand here
    web = await setup(world, selector={"zone": "nowhere"})
    stopped = await deploy(world, {"n1": 1}, start=False)
    await take_down(world)
    assert await world.deployments.migrate_off("n1") == 0
    for deployment in (web, stopped):
        now = await instances(world, deployment.deployment_id)
        assert {(i.node_id, i.live) for i in now} == {("n1", True)}


async def test_a_healthy_node_is_not_migrated(make_world):
    world = await make_world(enabled=False)
    await setup(world)
    assert await world.deployments.migrate_off("n1") == 0


async def test_a_removed_node_fails_over_at_once(make_world):
    world = await make_world()
    web = await setup(world)
    last_push = world.hub.next_push("n4")
    await world.nodes.remove("n1")
    await last_push
    await world.failover.wait_idle()
    now = await instances(world, web.deployment_id)
    assert all(i.live for i in now)  # the leftovers went with the node
    assert sorted(i.node_id for i in now) == ["n2", "n4"]  # no selector: n2 may take one
