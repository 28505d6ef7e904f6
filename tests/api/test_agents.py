"""`GET /v1/agents/connect`: the websocket agent link, in-process with aiohttp's client."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from plum.agent.protocol import (
    Assignments,
    Heartbeat,
    Hello,
    Welcome,
    decode_from_controller,
    encode,
)

pytestmark = pytest.mark.timeout(30)

SAFETY = 5.0  # never reached when all is well


async def receive(ws):
    frame = await ws.receive(timeout=SAFETY)
    assert frame.type == WSMsgType.TEXT, frame
    return decode_from_controller(frame.data)


async def test_hello_gets_welcome_and_the_full_assignment_set(api_services):
    client, svc = api_services
    async with client.ws_connect("/v1/agents/connect") as ws:
        await ws.send_str(encode(Hello(node_id="edge-1", ip="127.0.0.7", capacity=2)).decode())
        welcome = await receive(ws)
        assert isinstance(welcome, Welcome)
        assert welcome.heartbeat_sec == svc.config.agent.heartbeat_sec
        assert await receive(ws) == Assignments(items=[], full=True)
        await ws.send_str(encode(Heartbeat()).decode())
        node = await (await client.get("/v1/nodes/edge-1")).json()
        assert (node["health"], node["ip"], node["capacity"]) == ("Healthy", "127.0.0.7", 2)
        assert svc.agents_hub.connected_nodes() == {"edge-1"}
    unhealthy = svc.bus.wait_for(lambda e: getattr(getattr(e, "node", None), "health", "")
                                 == "Unhealthy")
    await unhealthy  # the link dropped: at once, no TTL to wait for
    assert svc.agents_hub.connected_nodes() == set()


async def test_a_malformed_frame_closes_the_link(api):
    async with api.ws_connect("/v1/agents/connect") as ws:
        await ws.send_str('{"type": "hello"}')  # nodeId missing
        frame = await ws.receive(timeout=SAFETY)
        assert frame.type == WSMsgType.CLOSE
        assert frame.data == WSCloseCode.UNSUPPORTED_DATA


async def test_a_message_before_hello_closes_the_link(api):
    async with api.ws_connect("/v1/agents/connect") as ws:
        await ws.send_str(encode(Heartbeat()).decode())
        frame = await ws.receive(timeout=SAFETY)
        assert frame.type == WSMsgType.CLOSE
        assert frame.data == WSCloseCode.POLICY_VIOLATION
        assert "before hello" in frame.extra


async def test_a_plain_get_is_a_400(api):
    response = await api.get("/v1/agents/connect")
    assert response.status == 400


async def test_the_link_needs_the_token_when_tokens_are_set(make_client):
    client, _ = await make_client(PLUM_AUTH_TOKENS="s3cret")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/agents/connect")
    assert refused.value.status == 401
    headers = {"Authorization": "Bearer s3cret"}
    async with client.ws_connect("/v1/agents/connect", headers=headers) as ws:
        await ws.send_str(encode(Hello(node_id="edge-1", ip="127.0.0.7")).decode())
        assert isinstance(await receive(ws), Welcome)
