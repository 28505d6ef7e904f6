"""The agent's side of its link to the controller.

`LocalLink` calls the controller's services in-process (all-in-one mode); `HttpLink` uses
the original Plum's HTTP agent routes. The websocket link replaces `HttpLink` later; the
agent code above the link does not change.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
import msgspec

from plum.errors import Unavailable
from plum.executors.agents import AgentPool, TaskChannel
from plum.nodes import NodeHeartbeat, NodeRegistry


class ControllerLink(Protocol):
    async def heartbeat(self, beat: NodeHeartbeat) -> None: ...
    async def attach(self, channel: TaskChannel) -> None:
        """Offer this agent's task runner to the controller."""

    async def detach(self, node_id: str) -> None: ...
    async def close(self) -> None: ...


class LocalLink:
    def __init__(self, registry: NodeRegistry, pool: AgentPool):
        self._registry = registry
        self._pool = pool

    async def heartbeat(self, beat: NodeHeartbeat) -> None:
        await self._registry.heartbeat(beat)

    async def attach(self, channel: TaskChannel) -> None:
        await self._pool.attach(channel)

    async def detach(self, node_id: str) -> None:
        await self._pool.detach(node_id)

    async def close(self) -> None:
        return None


class HttpLink:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0):
        self._base = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def heartbeat(self, beat: NodeHeartbeat) -> None:
        try:
            async with self._session.post(
                f"{self._base}/v1/nodes/heartbeat",
                data=msgspec.json.encode(beat),
                headers={"Content-Type": "application/json"},
            ) as response:
                if response.status >= 300:
                    raise Unavailable(
                        f"controller answered {response.status}: {await response.text()}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"controller unreachable at {self._base}: {exc}") from exc

    async def attach(self, channel: TaskChannel) -> None:
        """The HTTP agent protocol carries no tasks; the websocket link will."""

    async def detach(self, node_id: str) -> None:
        """Nothing attached over HTTP."""

    async def close(self) -> None:
        await self._session.close()
