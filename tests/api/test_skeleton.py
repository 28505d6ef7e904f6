import json

import pytest


def assert_error(body: dict, code: str, field: str | None = None):
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field


async def test_healthz(api):
    response = await api.get("/healthz")
    assert response.status == 200
    assert await response.text() == "ok"


async def test_malformed_json_is_400_with_error_shape(api):
    response = await api.post("/v1/nodes/heartbeat", data=b"{not json")
    assert response.status == 400
    assert_error(await response.json(), "invalid")


async def test_wrong_field_is_422_naming_the_field(api):
    response = await api.post("/v1/nodes/heartbeat", json={"nodeId": 42, "ip": "127.0.0.1"})
    assert response.status == 422
    assert_error(await response.json(), "invalid", "nodeId")
    missing = await api.post("/v1/nodes/heartbeat", json={"ip": "127.0.0.1"})
    assert missing.status == 422
    assert_error(await missing.json(), "invalid", "nodeId")
    nested = await api.post(
        "/v1/nodes/heartbeat", json={"nodeId": "n", "usage": {"cpuPercent": "x"}}
    )
    assert_error(await nested.json(), "invalid", "usage.cpuPercent")


async def test_rejected_request_changes_nothing(api):
    await api.post("/v1/nodes/heartbeat", json={"nodeId": "bad", "capacity": "lots"})
    listing = await api.get("/v1/nodes")
    assert await listing.json() == []


async def test_unknown_api_route_is_404_json(api):
    response = await api.get("/v1/no/such/thing")
    assert response.status == 404
    assert_error(await response.json(), "not_found")
    missing_node = await api.get("/v1/nodes/ghost")
    assert missing_node.status == 404
    assert_error(await missing_node.json(), "not_found")


async def test_body_over_the_limit_is_413(make_client):
    client, _ = await make_client(PLUM_MAX_BODY_MB="1")
    response = await client.post("/v1/nodes/heartbeat", data=b" " * (1024 * 1024 + 10))
    assert response.status == 413
    assert_error(await response.json(), "too_large")


async def test_list_conventions(api):
    for i in range(3):
        await api.post("/v1/nodes/heartbeat", json={"nodeId": f"n{i}", "ip": "127.0.0.1"})
    response = await api.get("/v1/nodes?limit=2")
    assert response.headers["X-Total-Count"] == "3"
    assert [n["nodeId"] for n in await response.json()] == ["n2", "n1"]
    bad = await api.get("/v1/nodes?limit=5000")
    assert bad.status == 400
    assert_error(await bad.json(), "invalid", "limit")


async def test_node_heartbeat_get_and_delete(api):
    response = await api.post(
        "/v1/nodes/heartbeat", json={"nodeId": "edge-1", "ip": "127.0.0.2", "labels": {"zone": "a"}}
    )
    assert response.status == 200
    node = await response.json()
    assert node["health"] == "Healthy"
    assert set(node) >= {"nodeId", "ip", "labels", "lastSeen", "health", "capacity", "usage"}
    assert (await (await api.get("/v1/nodes/edge-1")).json())["labels"] == {"zone": "a"}
    assert (await api.delete("/v1/nodes/edge-1")).status == 204
    assert (await api.get("/v1/nodes/edge-1")).status == 404


async def test_node_goes_unhealthy_after_ttl(api_services, clock):
    client, svc = api_services
    await client.post("/v1/nodes/heartbeat", json={"nodeId": "n1", "ip": "127.0.0.1"})
    became_unhealthy = svc.bus.wait_for(
        lambda e: getattr(getattr(e, "node", None), "health", None) == "Unhealthy"
    )
    clock.advance(svc.config.controller.heartbeat_ttl_sec - 1)
    assert not became_unhealthy.done()
    clock.advance(1)
    await became_unhealthy
    assert (await (await client.get("/v1/nodes/n1")).json())["health"] == "Unhealthy"
    info = await (await client.get("/v1/system/info")).json()
    assert (info["nodeCount"], info["healthyNodeCount"]) == (1, 0)


async def test_system_info(api_services, clock):
    client, svc = api_services
    clock.advance(42)
    info = await (await client.get("/v1/system/info")).json()
    assert info["version"] == svc.version
    assert info["role"] == "all"
    assert info["now"] - info["startedAt"] == pytest.approx(42, abs=0.01)


async def test_openapi_document_describes_every_route(api):
    response = await api.get("/v1/openapi.json")
    doc = await response.json()
    assert doc["openapi"].startswith("3.")
    assert {
        "/healthz",
        "/v1/nodes",
        "/v1/nodes/heartbeat",
        "/v1/nodes/{nodeId}",
        "/v1/stream",
        "/v1/system/info",
    } <= set(doc["paths"])
    body = doc["paths"]["/v1/nodes/heartbeat"]["post"]["requestBody"]["content"]
    ref = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = doc["components"]["schemas"][ref]
    assert "nodeId" in schema["properties"]
    assert "nodeId" in schema["required"]
    # every $ref resolves
    text = json.dumps(doc)
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in doc["components"]["schemas"]


async def test_metrics(api):
    await api.post("/v1/nodes/heartbeat", json={"nodeId": "n1", "ip": "127.0.0.1"})
    text = await (await api.get("/metrics")).text()
    assert "plum_up 1" in text
    assert 'plum_nodes{health="Healthy"} 1' in text


async def test_auth_tokens_guard_the_api(make_client):
    client, _ = await make_client(PLUM_AUTH_TOKENS="s3cret")
    assert (await client.get("/healthz")).status == 200
    denied = await client.get("/v1/nodes")
    assert denied.status == 401
    assert_error(await denied.json(), "unauthorized")
    ok = await client.get("/v1/nodes", headers={"Authorization": "Bearer s3cret"})
    assert ok.status == 200
    wrong = await client.get("/v1/nodes", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401


async def test_dashboard_spa_fallback(make_client, tmp_path):
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>plum-dashboard</html>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    client, _ = await make_client(dist=dist)
    assert "plum-dashboard" in await (await client.get("/")).text()
    assert "plum-dashboard" in await (await client.get("/workflows/abc")).text()
    assert await (await client.get("/assets/app.js")).text() == "console.log(1)"
    escape = await client.get("/assets/../../../etc/passwd")
    assert "root:" not in await escape.text()


async def test_dashboard_missing_explains_how_to_build(make_client, tmp_path):
    client, _ = await make_client(dist=tmp_path / "nothing")
    text = await (await client.get("/")).text()
    assert "npm run build" in text and "make run" in text
