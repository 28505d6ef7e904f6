"""SSE: live events, resume with Last-Event-ID, keep-alive comments."""

import asyncio

from plum.api.stream import OpenStreams, pump
from plum.bus import END, Bus, NodeChanged
from plum.engine.model import Node
from plum.testing import FakeClock
from tests.support.sse import EventStream


async def test_stream_delivers_node_events(api):
    async with api.get("/v1/stream?topics=nodes") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        await api.post("/v1/nodes/heartbeat", json={"nodeId": "edge-1", "ip": "127.0.0.2"})
        event = await EventStream(stream).next()
        assert event.event == "nodes"
        assert event.json()["nodeId"] == "edge-1"
        assert int(event.id) > 0


async def test_last_event_id_resumes_without_gaps(api_services):
    client, svc = api_services
    ids = [svc.bus.publish(NodeChanged(Node(node_id=f"n{i}", ip="x"))) for i in range(4)]
    async with client.get("/v1/stream?topics=nodes", headers={"Last-Event-ID": str(ids[1])}) as s:
        got = [await EventStream(s).next() for _ in range(2)]
    assert [int(e.id) for e in got] == ids[2:]


async def test_unknown_topic_is_rejected(api):
    response = await api.get("/v1/stream?topics=nodes,bogus")
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "topics"


async def test_keepalive_comment_on_idle_stream():
    """An idle stream gets a comment line each keep-alive period (15 s in production)."""

    class Sink:
        def __init__(self):
            self.frames = []

        async def write(self, data):
            self.frames.append(data)
            if len(self.frames) == 2:
                sub.end()

    bus = Bus(FakeClock())
    sub = bus.subscribe()
    sink = Sink()
    await asyncio.wait_for(pump(sub, sink, keepalive=0.01), 5)
    assert sink.frames[:2] == [b": keep-alive\n\n", b": keep-alive\n\n"]


async def test_a_stream_opened_during_shutdown_ends_at_once():
    bus = Bus(FakeClock())
    streams = OpenStreams()
    early = bus.subscribe()
    streams.add(early)
    streams.end_all()
    late = bus.subscribe()
    streams.add(late)  # raced the shutdown: must not hold the server open
    assert await early.get() is END
    assert await late.get() is END
