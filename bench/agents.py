"""Agent figures: deployment start-up over real agents, and the controller's cost per agent.

    .venv/bin/python bench/agents.py [--instances 50] [--links 200] [--window 30]

(a) Start-up: a controller (`--role controller`) and three agents (`--role agent` on
    127.0.0.2-4), all real processes. A deployment of `--instances` instances of a tiny app
    (`exec sleep`, no service, so Running means started) spread over the three nodes; the
    time from `POST ?action=start` to every instance reported `Running` on the SSE stream.
    Twice: cold (each agent downloads and unpacks the zip) and warm (after a stop: the zip is
    cached). Then the time from `?action=stop` to every instance `Stopped`.

(b) Controller cost: a fresh controller and `--links` simulated agents, each a websocket on
    `/v1/agents/connect` from this process that says `hello` and then heartbeats every
    `--heartbeat` seconds (spread evenly), answering the controller's pings. Over a window
    of `--window` seconds once all are linked: the controller process's CPU (utime + stime
    from /proc/<pid>/stat, all its threads; 100% = one core) and its RSS (VmRSS, and the
    peak VmHWM), against the same window length idle before the links open.

Loopback only; every process and link is bounded and stopped at the end, and app
processes left behind are killed by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plum.agent.protocol import Heartbeat, Hello, encode
from plum.engine.model import Usage
from tests.support.procs import PlumProcess, launch_plum
from tests.support.sse import EventStream, open_stream, read_event

AGENT_IPS = {"nodeA": "127.0.0.2", "nodeB": "127.0.0.3", "nodeC": "127.0.0.4"}
DEADLINE = 120.0  # for any one wait; never reached when all is well
QUIET = {"PLUM_LOG_LEVEL": "warning"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def sleep_app() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("start.sh", "#!/bin/sh\nexec sleep 3600\n")
        archive.writestr("meta.ini", "name=bench-sleep\nversion=1.0.0\n")
    return buf.getvalue()


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs) -> object:
    async with http.request(method, url, **kwargs) as response:
        body = await response.json()
        assert response.status in (200, 201), body
        return body


async def until(events: EventStream, fold: Callable[[str, dict], bool], what: str) -> None:
    """Feed stream events to `fold` until it says done."""
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                event = await read_event(events.response)
                if event.event == "resync":
                    raise RuntimeError("the stream was resynced; rerun on a quieter machine")
                if event.data and fold(event.event, event.json()):
                    return
    except TimeoutError:
        raise RuntimeError(f"not within {DEADLINE}s: {what}") from None


# -- (a) start-up over real agents ------------------------------------------------------------
async def startup_figures(folder: Path, instances: int) -> None:
    app_pids: set[int] = set()
    async with AsyncExitStack() as stack:
        controller = await launch_plum(folder / "controller", "--role", "controller",
                                       env=QUIET, name="controller")
        agents: list[PlumProcess] = []
        stack.push_async_callback(stop_all, controller, agents, app_pids, folder)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        url = controller.url
        events = await stack.enter_async_context(
            open_stream(http, f"{url}/v1/stream?topics=instances,nodes"))
        for node_id, ip in AGENT_IPS.items():
            agents.append(await launch_plum(
                folder / node_id, "--role", "agent", "--controller", url, "--node-id", node_id,
                "--agent-ip", ip, env={**QUIET, "PLUM_STOP_APPS_ON_EXIT": "true"}, name=node_id))
        healthy: set[str] = set()

        def linked(topic: str, data: dict) -> bool:
            if topic == "nodes" and data.get("health") == "Healthy":
                healthy.add(data["nodeId"])
            return healthy >= set(AGENT_IPS)

        await until(events, linked, "three agents linked")

        form = aiohttp.FormData()
        form.add_field("file", sleep_app(), filename="app.zip", content_type="application/zip")
        app = await call(http, "POST", f"{url}/v1/apps/upload", data=form)
        nodes = list(AGENT_IPS)
        replicas = {n: instances // 3 + (i < instances % 3) for i, n in enumerate(nodes)}
        created = await call(http, "POST", f"{url}/v1/deployments", json={
            "name": "bench", "entries": [{"artifactId": app["artifactId"],
                                          "replicas": replicas}]})
        deployment = f"{url}/v1/deployments/{created['deploymentId']}"
        print(f"(a) {instances} instances of an `exec sleep` app over 3 agent processes "
              f"({', '.join(f'{n}: {c}' for n, c in replicas.items())})")
        for round_ in ("cold", "warm"):
            ticks = await time_phase(http, events, f"{deployment}?action=start", "Running",
                                     instances, app_pids)
            running = sum(1 for pid in app_pids if is_app(pid, folder))
            print(f"    start -> all Running ({round_}): {ticks[-1]:.2f} s "
                  f"(first {ticks[0]:.2f} s, median {statistics.median(ticks):.2f} s; "
                  f"{running} app processes running)")
            ticks = await time_phase(http, events, f"{deployment}?action=stop", "Stopped",
                                     instances, app_pids)
            print(f"    stop -> all Stopped ({round_}):  {ticks[-1]:.2f} s")


async def time_phase(http: aiohttp.ClientSession, events: EventStream, action: str,
                     phase: str, count: int, app_pids: set[int]) -> list[float]:
    """Seconds from `action` until each of `count` instances reports `phase`, sorted."""
    reached: dict[str, float] = {}
    start = time.perf_counter()
    await call(http, "POST", action)

    def fold(topic: str, data: dict) -> bool:
        if topic == "instances" and data.get("pid"):
            app_pids.add(data["pid"])
        if topic == "instances" and data.get("phase") == phase:
            reached.setdefault(data["instanceId"], time.perf_counter() - start)
        return len(reached) >= count

    await until(events, fold, f"{count} instances {phase}")
    return sorted(reached.values())


async def stop_all(controller: PlumProcess, agents: list[PlumProcess], app_pids: set[int],
                   folder: Path) -> None:
    """The controller first (nothing is re-placed meanwhile), then the agents (which stop
    their apps), then any app process still running under `folder`."""
    for process in (controller, *agents):
        if process.proc.returncode is None:
            await process.terminate()
    for pid in app_pids:
        if is_app(pid, folder):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def is_app(pid: int, folder: Path) -> bool:
    """A live process (not a zombie) working under `folder`: one of our app instances."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in "ZX" and Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(folder)
    except OSError:
        return False


# -- (b) the controller's cost per agent ------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def memory_mib(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


async def measure_cpu(pid: int, seconds: float) -> float:
    """Percent of one core the process used over the next `seconds`."""
    used, start = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)  # a fixed measurement window, not a wait for a condition
    return (cpu_seconds(pid) - used) / (time.perf_counter() - start) * 100


@dataclass
class Links:
    """The simulated agents' shared state."""

    count: int
    welcomed: int = 0
    all_welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def welcome(self) -> None:
        self.welcomed += 1
        if self.welcomed == self.count:
            self.all_welcomed.set()


async def simulated_agent(http: aiohttp.ClientSession, url: str, n: int, heartbeat: float,
                          links: Links) -> None:
    """One agent's link: hello, then a heartbeat every `heartbeat` seconds (the first spread
    over one period by `n`), reading (and so answering pings) until `links.done`."""
    hello = Hello(node_id=f"sim-{n:04d}", ip=f"127.0.{1 + n // 250}.{1 + n % 250}",
                  labels={"bench": "yes"}, capacity=8, version="bench")
    usage = Usage(cpu_percent=3.5, mem_percent=21.0, mem_used_bytes=1 << 30,
                  mem_total_bytes=5 << 30)
    async with http.ws_connect(f"{url}/v1/agents/connect", heartbeat=None) as ws:
        await ws.send_str(encode(hello).decode())

        async def read() -> None:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT and '"type":"welcome"' in frame.data:
                    links.welcome()

        async def beat() -> None:
            beat_json = encode(Heartbeat(usage=usage)).decode()
            await asyncio.sleep(heartbeat * n / links.count)
            while True:
                await ws.send_str(beat_json)
                await asyncio.sleep(heartbeat)  # periodic by nature: a heartbeat

        async with asyncio.TaskGroup() as tg:
            reader, beats = tg.create_task(read()), tg.create_task(beat())
            await links.done.wait()
            beats.cancel()
            reader.cancel()


async def controller_figures(folder: Path, links: int, window: float, heartbeat: float) -> None:
    env = {**QUIET, "AGENT_HEARTBEAT_SEC": str(heartbeat),
           "HEARTBEAT_TTL_SEC": str(max(15.0, 3 * heartbeat))}
    controller = await launch_plum(folder / "load", "--role", "controller", env=env,
                                   name="controller")
    try:
        url, pid = controller.url, controller.pid
        idle = await measure_cpu(pid, window)
        idle_mem = memory_mib(pid)
        state = Links(links)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http, \
                asyncio.TaskGroup() as tg:
            start = time.perf_counter()
            agents = [tg.create_task(simulated_agent(http, url, n, heartbeat, state))
                      for n in range(links)]
            await asyncio.wait_for(state.all_welcomed.wait(), DEADLINE)
            connect_time = time.perf_counter() - start
            busy = await measure_cpu(pid, window)
            busy_mem = memory_mib(pid)
            async with http.get(f"{url}/v1/nodes?limit=1000") as response:
                nodes = await response.json()
            state.done.set()
            await asyncio.gather(*agents)
        healthy = sum(1 for n in nodes if n["health"] == "Healthy")
        print(f"(b) controller with {links} simulated agents heartbeating every {heartbeat:g} s "
              f"(windows of {window:g} s)")
        print(f"    {links} links said hello and were welcomed in {connect_time:.2f} s; "
              f"{healthy}/{links} nodes Healthy at the end of the window")
        print(f"    CPU: idle {idle:.1f}% of a core, with {links} agents {busy:.1f}% "
              f"({links / heartbeat:.0f} heartbeats/s)")
        print(f"    RSS: idle {idle_mem['VmRSS']:.0f} MiB, with {links} agents "
              f"{busy_mem['VmRSS']:.0f} MiB (peak {busy_mem['VmHWM']:.0f} MiB)")
    finally:
        await controller.terminate()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="plum-bench-agents-") as tmp:
        folder = Path(tmp).resolve()
        await startup_figures(folder, args.instances)
        await controller_figures(folder, args.links, args.window, args.heartbeat)


def bounded(low: float, high: float, kind: type = int) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = kind(raw)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {low}..{high}")
        return value
    return parse


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=bounded(3, 300), default=50)
    parser.add_argument("--links", type=bounded(1, 1000), default=200)
    parser.add_argument("--window", type=bounded(5, 120, float), default=30.0)
    parser.add_argument("--heartbeat", type=bounded(1, 30, float), default=5.0)
    uvloop.run(main(parser.parse_args()))
