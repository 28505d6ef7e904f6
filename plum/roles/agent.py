"""The agent role: one node's agent, linked to a controller elsewhere."""

from __future__ import annotations

from contextlib import AsyncExitStack

from plum.agent.agent import Agent
from plum.agent.link import HttpLink
from plum.roles.base import ReadyInfo, Role


class AgentRole(Role):
    async def start(self, stack: AsyncExitStack) -> ReadyInfo:
        tokens = self.config.server.auth_tokens
        link = HttpLink(self.config.agent.controller, token=tokens[0] if tokens else None)
        agent = Agent(self.config, link, self.clock)
        await stack.enter_async_context(agent.running())
        return ReadyInfo(role=self.config.server.role, node_id=agent.node_id)
