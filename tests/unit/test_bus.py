import asyncio

from plum.bus import END, RESYNC, Bus, NodeChanged, NodeRemoved, topic_matches
from plum.engine.model import Node
from plum.testing import FakeClock


def changed(node_id: str) -> NodeChanged:
    return NodeChanged(Node(node_id=node_id, ip="127.0.0.1"))


async def test_subscriber_gets_events_in_order_with_increasing_ids():
    bus = Bus(FakeClock())
    with bus.subscribe(["nodes"]) as sub:
        first = bus.publish(changed("a"))
        second = bus.publish(changed("b"))
        one, two = await sub.get(), await sub.get()
    assert (one.seq, two.seq) == (first, second)
    assert second == first + 1
    assert one.event.node.node_id == "a"


async def test_topic_filter():
    bus = Bus(FakeClock())
    with bus.subscribe(["tasks"]) as sub:
        bus.publish(changed("a"))
        assert sub.pending() == 0
    assert topic_matches(frozenset({"kv"}), "kv:app")
    assert not topic_matches(frozenset({"kv:other"}), "kv:app")
    assert topic_matches(None, "anything")


async def test_slow_subscriber_is_resynced_and_never_blocks_publish():
    bus = Bus(FakeClock(), queue_size=3)
    with bus.subscribe() as slow:
        for i in range(10):
            bus.publish(changed(str(i)))  # never blocks, never raises
        items = [slow.get_nowait() for _ in range(slow.pending())]
    assert RESYNC in items
    after = items[items.index(RESYNC) + 1 :]
    assert [e.event.node.node_id for e in after] == [str(i) for i in range(10 - len(after), 10)]
    assert bus.resyncs >= 1


async def test_resume_since_replays_missed_events():
    bus = Bus(FakeClock())
    seqs = [bus.publish(changed(str(i))) for i in range(5)]
    with bus.subscribe(["nodes"], since=seqs[1]) as sub:
        replayed = [sub.get_nowait() for _ in range(sub.pending())]
    assert [e.seq for e in replayed] == seqs[2:]


async def test_resume_from_too_old_or_foreign_id_is_a_resync():
    bus = Bus(FakeClock(), history=3)
    seqs = [bus.publish(changed(str(i))) for i in range(10)]
    with bus.subscribe(since=seqs[0]) as gapped:
        assert gapped.get_nowait() is RESYNC
    with bus.subscribe(since=seqs[-1] + 1000) as future_id:
        assert future_id.get_nowait() is RESYNC


async def test_ids_from_a_later_clock_are_larger():
    early = Bus(FakeClock(start=1000.0))
    late = Bus(FakeClock(start=1001.0))
    assert late.publish(changed("x")) > early.publish(changed("x"))


async def test_wait_for_resolves_on_matching_event():
    bus = Bus(FakeClock())
    waiter = bus.wait_for(lambda e: isinstance(e, NodeRemoved) and e.node_id == "b")
    bus.publish(changed("b"))
    assert not waiter.done()
    bus.publish(NodeRemoved("b"))
    event = await asyncio.wait_for(waiter, 1)
    assert event.node_id == "b"


async def test_end_stops_a_consumer():
    bus = Bus(FakeClock())
    sub = bus.subscribe()
    bus.publish(changed("a"))
    sub.end()
    assert await sub.get() is END


class KvChanged(NodeRemoved, frozen=True):
    """A stand-in event on a namespaced topic."""

    @property
    def topic(self) -> str:
        return f"kv:{self.node_id}"


async def test_publish_routes_by_topic_and_family():
    bus = Bus(FakeClock())
    family, exact, other, everything = (bus.subscribe(["kv"]), bus.subscribe(["kv:app"]),
                                        bus.subscribe(["kv:else"]), bus.subscribe())
    bus.publish(KvChanged("app"))
    bus.publish(changed("n1"))
    assert [s.pending() for s in (family, exact, other, everything)] == [1, 1, 0, 2]
    family.close()
    bus.publish(KvChanged("app"))
    assert (family.pending(), exact.pending()) == (1, 2)  # closed: nothing more arrives
