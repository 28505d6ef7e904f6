"""The agent role: one node's agent, linked to a controller elsewhere over the websocket."""

from __future__ import annotations

from contextlib import AsyncExitStack

from plum.agent.agent import run_node_agent
from plum.agent.link import WebSocketLink
from plum.roles.base import ReadyInfo, Role


class AgentRole(Role):
    async def start(self, stack: AsyncExitStack) -> ReadyInfo:
        config = self.config
        link = WebSocketLink(config.agent.controller, config.agent_token, self.clock)
        agent = await stack.enter_async_context(run_node_agent(
            config, link, self.clock, controller_base=config.agent.controller,
            stop_apps_on_exit=config.agent.stop_apps_on_exit))
        return ReadyInfo(role=self.config.server.role, node_id=agent.node_id)
