import pytest

from plum.store.sqlite import SqliteStore
from plum.testing.memory_store import MemoryStore


@pytest.fixture(params=["sqlite", "memory"])
async def store(request, tmp_path):
    """Every store implementation; the contract suite runs against each."""
    impl = SqliteStore(tmp_path / "plum.db") if request.param == "sqlite" else MemoryStore()
    await impl.start()
    try:
        yield impl
    finally:
        await impl.stop()
