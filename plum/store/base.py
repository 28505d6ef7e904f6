"""Store interfaces: small, one per concern, returning Plum values (never rows).

Implementations: `plum.store.sqlite.SqliteStore` (production) and
`plum.testing.memory_store.MemoryStore` (tests, SDK users). Both pass the contract suite in
`tests/store/test_contract.py`. Nothing outside an implementation writes SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from plum.engine.model import Node

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


class NodeRepo(Protocol):
    async def upsert_node(self, node: Node) -> None: ...
    async def get_node(self, node_id: str) -> Node:
        """Raises `NotFound`."""

    async def list_nodes(self, *, limit: int = 100, offset: int = 0) -> Page[Node]: ...
    async def delete_node(self, node_id: str) -> None:
        """Raises `NotFound`."""


class MetaRepo(Protocol):
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...


class Store(NodeRepo, MetaRepo, Protocol):
    """Everything the controller stores. Opened by `start()`, closed by `stop()`."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
