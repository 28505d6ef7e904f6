"""A real HTTP service for discovery tests, and registration helpers."""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web


class FakeService:
    """An aiohttp app with `/task` (echoes who served it), `/fail` (500), `/text`,
    `/empty` (204), `/long-fail` (502 with a long body) and `/healthz`.

    With `hold` set, `/task` waits for `release` after setting `arrived`; with `hold_health`,
    `/healthz` waits for `release` (a server that accepts but never answers).
    """

    def __init__(self, name: str):
        self.name = name
        self.calls: list[dict] = []
        self.health_status = 200
        self.hold = False
        self.hold_health = False
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/task", self._task)
        app.router.add_post("/fail", self._fail)
        app.router.add_post("/text", self._text)
        app.router.add_post("/empty", self._empty)
        app.router.add_post("/long-fail", self._long_fail)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> FakeService:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _task(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        if self.hold:
            self.arrived.set()
            await self.release.wait()
        return web.json_response({"servedBy": self.name, "taskId": body["taskId"]})

    async def _fail(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        return web.Response(status=500, text="boom:\n  the disk is on fire")

    async def _text(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        return web.Response(text="plain words")

    async def _empty(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _long_fail(self, request: web.Request) -> web.Response:
        return web.Response(status=502, text="x" * 1000)

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.hold_health:
            await self.release.wait()
        return web.Response(status=self.health_status, text="ok")


async def register(client, instance_id: str, *endpoints: dict, ip: str = "127.0.0.1") -> list:
    response = await client.post(
        "/v1/services/register",
        json={"instanceId": instance_id, "ip": ip, "endpoints": list(endpoints)},
    )
    assert response.status == 200, await response.text()
    return await response.json()


def http_endpoint(service: str, port: int, **extra) -> dict:
    return {"serviceName": service, "port": port, "protocol": "http", **extra}
