"""An in-memory store with the same contract as `SqliteStore` (tests, SDK users)."""

from __future__ import annotations

from plum.engine.model import Node
from plum.errors import NotFound
from plum.store.base import Page
from plum.testing.memory_apps import MemoryApps
from plum.testing.memory_schedules import MemorySchedules
from plum.testing.memory_services import MemoryServices
from plum.testing.memory_tasks import MemoryTasks
from plum.testing.memory_workers import MemoryWorkers
from plum.testing.memory_workflows import MemoryWorkflows


class MemoryStore(
    MemoryTasks, MemoryWorkflows, MemoryServices, MemorySchedules, MemoryApps, MemoryWorkers
):
    def __init__(self) -> None:
        self._nodes: dict[str, tuple[int, Node]] = {}
        self._meta: dict[str, str] = {}
        self._order = 0
        self._init_tasks()
        self._init_workflows()
        self._init_services()
        self._init_schedules()
        self._init_apps()
        self._init_workers()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def upsert_node(self, node: Node) -> None:
        created = self._nodes.get(node.node_id, (None,))[0]
        if created is None:
            self._order += 1
            created = self._order
        self._nodes[node.node_id] = (created, node)

    async def get_node(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id][1]
        except KeyError:
            raise NotFound(f"node {node_id!r} not found", field="nodeId") from None

    async def list_nodes(self, *, limit: int = 100, offset: int = 0) -> Page[Node]:
        ordered = sorted(self._nodes.values(), key=lambda pair: (-pair[0], pair[1].node_id))
        return Page([node for _, node in ordered[offset : offset + limit]], len(ordered))

    async def delete_node(self, node_id: str) -> None:
        if self._nodes.pop(node_id, None) is None:
            raise NotFound(f"node {node_id!r} not found", field="nodeId")

    async def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value
