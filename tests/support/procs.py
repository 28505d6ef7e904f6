"""Real `plum` processes for integration and browser tests.

`start_plum()` launches `python -m plum serve` in its own working directory (so the repo's
plum.toml and .env never leak in), on a free port chosen by the OS, and waits for the line
Plum prints once it is ready; it never sleeps. On exit it sends SIGTERM to that pid, and
SIGKILL only if the process has not gone within the deadline. `plum_with_stream()` adds a
client session and the server's event stream; `launch_agent()` starts `--role agent`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support.sse import EventStream, open_stream

READY = re.compile(r"^Plum \S+ \((\w+)\) (?:listening on (\S+?)/? |node (\S+) ready)")


@dataclass
class PlumProcess:
    proc: asyncio.subprocess.Process
    url: str | None
    log_path: Path
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for exit (SIGKILL after `timeout`); returns the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"plum (pid {self.pid}) ignored SIGTERM for {timeout}s") from None

    async def kill(self) -> None:
        """`kill -9`: the process gets no chance to clean up."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


async def launch_plum(
    workdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 20.0,
    name: str = "plum",
) -> PlumProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    log_path = workdir / f"{name}.log"
    argv = [sys.executable, "-m", "plum", "serve", "--data-dir", str(data_dir)]
    if "--addr" not in args:
        argv += ["--addr", "127.0.0.1:0"]
    if "--grpc-addr" not in args:
        argv += ["--grpc-addr", "127.0.0.1:0"]
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PLUM_", "CONTROLLER_", "AGENT_"))
    }
    full_env.update({"PLUM_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **(env or {})})
    with log_path.open("ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            cwd=workdir,
            env=full_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    url = await _wait_ready(proc, log_path, ready_timeout)
    return PlumProcess(proc=proc, url=url, log_path=log_path, data_dir=data_dir)


async def _wait_ready(proc: asyncio.subprocess.Process, log_path: Path, timeout: float):
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    await proc.wait()
                    raise AssertionError(
                        f"plum exited with {proc.returncode} before it was ready:\n"
                        + log_path.read_text(errors="replace")
                    )
                if match := READY.match(line):
                    return match.group(2)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(
            f"plum was not ready within {timeout}s:\n" + log_path.read_text(errors="replace")
        ) from None


@asynccontextmanager
async def start_plum(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, name: str = "plum"
) -> AsyncIterator[PlumProcess]:
    plum = await launch_plum(tmp_path / name, *args, env=env, name=name)
    try:
        yield plum
    finally:
        if plum.proc.returncode is None:
            await plum.terminate()


@asynccontextmanager
async def plum_with_stream(
    tmp_path: Path, topics: str, *args: str, name: str = "plum"
) -> AsyncIterator[tuple[PlumProcess, aiohttp.ClientSession, EventStream]]:
    """`start_plum()`, a client session, and the server's `/v1/stream` of `topics`."""
    async with (
        start_plum(tmp_path, *args, name=name) as plum,
        aiohttp.ClientSession() as session,
        open_stream(session, f"{plum.url}/v1/stream?topics={topics}") as events,
    ):
        yield plum, session, events


async def launch_agent(
    tmp_path: Path, controller_url: str, node_id: str, ip: str, *,
    env: dict[str, str] | None = None,
) -> PlumProcess:
    """`plum serve --role agent` for `node_id` on `ip`, in `tmp_path/<node_id>`."""
    return await launch_plum(
        tmp_path / node_id, "--role", "agent", "--controller", controller_url,
        "--node-id", node_id, "--agent-ip", ip, env=env, name=node_id)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server that cannot be given port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
