"""Test apps for the agent: zips built in the test, served over real HTTP, and the helpers
to watch real processes (reports as futures, a TCP listener apps notify, /proc scans)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from plum.agent.protocol import InstancePhase, InstanceStatus
from tests.support.appzips import make_zip
from tests.support.pids import alive

DEADLINE = 10.0  # generous: the machine may be loaded; never reached when all is well
PYTHON = sys.executable


def app_zip(script: str, *, services: tuple[str, ...] = (), **files: str) -> bytes:
    """An app: `start.sh` running `script` under /bin/sh, meta.ini, and any other files."""
    meta = "name=demo-meta\nversion=0.9\n" + "".join(f"service={s}\n" for s in services)
    return make_zip({"start.sh": f"#!/bin/sh\n{script}\n", "meta.ini": meta, **files})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactServer:
    """Serves `/artifacts/<name>` from memory and remembers every request's headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        app = web.Application()
        app.router.add_get("/artifacts/{name}", self._get)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def add(self, name: str, data: bytes) -> tuple[str, str]:
        """Serve `data`; returns its URL and sha256."""
        self.files[name] = data
        return f"{self.base}/artifacts/{name}", sha256(data)

    async def _get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests.append((name, dict(request.headers)))
        if name not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[name], content_type="application/zip")


@asynccontextmanager
async def artifact_server() -> AsyncIterator[ArtifactServer]:
    server = ArtifactServer()
    await server.server.start_server()
    try:
        yield server
    finally:
        await server.server.close()


class Reports:
    """The `report` callback: keeps every status and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.items: list[InstanceStatus] = []
        self._cursor: dict[str, int] = {}
        self._waiters: list[asyncio.Future] = []

    def __call__(self, status: InstanceStatus) -> None:
        self.items.append(status)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def of(self, instance_id: str) -> list[InstanceStatus]:
        return [s for s in self.items if s.instance_id == instance_id]

    async def next(
        self, instance_id: str, phase: InstancePhase | None = None, **fields
    ) -> InstanceStatus:
        """The next report for `instance_id` (past the one returned last) that matches."""
        try:
            async with asyncio.timeout(DEADLINE):
                while True:
                    start = self._cursor.get(instance_id, 0)
                    for index in range(start, len(self.items)):
                        status = self.items[index]
                        if status.instance_id == instance_id and _matches(status, phase, fields):
                            self._cursor[instance_id] = index + 1
                            return status
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            seen = "\n".join(map(repr, self.of(instance_id)))
            message = f"no {phase} {fields} report for {instance_id}; got:\n{seen}"
            raise AssertionError(message) from None


def _matches(status: InstanceStatus, phase: InstancePhase | None, fields: dict) -> bool:
    if phase is not None and status.phase is not phase:
        return False
    return all(getattr(status, key) == value for key, value in fields.items())


class Notifier:
    """A TCP listener; test apps connect and send one word (`ready`, `term`, ...)."""

    def __init__(self) -> None:
        self.words: asyncio.Queue[str] = asyncio.Queue()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.words.put_nowait((await reader.read()).decode())
        writer.close()

    async def next(self) -> str:
        return await asyncio.wait_for(self.words.get(), DEADLINE)


@asynccontextmanager
async def notifier() -> AsyncIterator[Notifier]:
    listener = Notifier()
    server = await asyncio.start_server(listener._on_connect, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()


# Ignores SIGTERM; says `ready` once it is, `term` on SIGTERM, prints and says `usr1` on SIGUSR1.
NOTIFYING_APP = """\
import os, signal, socket, sys
def tell(word):
    with socket.create_connection(("127.0.0.1", int(os.environ["NOTIFY_PORT"]))) as s:
        s.sendall(word.encode())
def on_usr1(*_):
    print("got usr1", flush=True)
    tell("usr1")
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, lambda *_: tell("term"))
signal.signal(signal.SIGUSR1, on_usr1)
print("started", os.getpid(), flush=True)
tell("ready")
while True:
    signal.pause()
"""


def notifying_app() -> bytes:
    return app_zip(f"exec {PYTHON} app.py", **{"app.py": NOTIFYING_APP})


# --- processes ------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if cwd == str(directory) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found
