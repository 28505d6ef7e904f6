"""What only the SQLite store has: durability, group commit, migrations."""

import asyncio
import sqlite3

import pytest

from plum.engine.model import Node
from plum.errors import NotFound
from plum.store.sqlite import MigrationError, SqliteStore


async def test_concurrent_writes_are_group_committed(tmp_path):
    async with SqliteStore(tmp_path / "plum.db") as store:
        await asyncio.gather(*(store.set_meta(f"k{i}", str(i)) for i in range(500)))
        assert store.stats["writes"] == 500
        assert store.stats["commits"] < 50  # batched, not one commit per write
    raw = sqlite3.connect(tmp_path / "plum.db")
    assert raw.execute("SELECT count(*) FROM meta").fetchone()[0] == 500


async def test_a_failing_write_fails_alone(tmp_path):
    async with SqliteStore(tmp_path / "plum.db") as store:
        results = await asyncio.gather(
            store.set_meta("a", "1"),
            store.delete_node("missing"),
            store.set_meta("b", "2"),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], NotFound)
        assert await store.get_meta("a") == "1"
        assert await store.get_meta("b") == "2"


async def test_writes_queued_before_stop_are_committed(tmp_path):
    store = SqliteStore(tmp_path / "plum.db")
    await store.start()
    pending = [asyncio.ensure_future(store.set_meta(f"k{i}", "v")) for i in range(100)]
    await asyncio.sleep(0)  # let them enqueue
    await store.stop()
    await asyncio.gather(*pending)
    raw = sqlite3.connect(tmp_path / "plum.db")
    assert raw.execute("SELECT count(*) FROM meta").fetchone()[0] == 100
    await store.stop()  # stopping twice is harmless


async def test_data_survives_reopen_and_wal_is_on(tmp_path):
    async with SqliteStore(tmp_path / "plum.db") as store:
        await store.upsert_node(Node(node_id="n1", ip="127.0.0.1"))
    async with SqliteStore(tmp_path / "plum.db") as store:
        assert (await store.get_node("n1")).ip == "127.0.0.1"
    raw = sqlite3.connect(tmp_path / "plum.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] >= 1


def _migrations(tmp_path, *files: tuple[str, str]):
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    for name, sql in files:
        (folder / name).write_text(sql)
    return folder


def _tables(path) -> set[str]:
    raw = sqlite3.connect(path)
    return {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_failed_migration_leaves_database_as_it_was(tmp_path):
    db = tmp_path / "plum.db"
    good = ("0001_a.sql", "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);")
    async with SqliteStore(db, migrations_dir=_migrations(tmp_path, good)):
        pass
    before = _tables(db)
    broken = _migrations(
        tmp_path,
        ("0002_b.sql", "CREATE TABLE b (x INT);\nCREATE INDEX b_x ON b(x);"),
        ("0003_c.sql", "CREATE TABLE c (x INT);\nTHIS IS NOT SQL;"),
    )
    with pytest.raises(MigrationError):
        await SqliteStore(db, migrations_dir=broken).start()
    assert _tables(db) == before
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 1


async def test_refuses_a_database_from_a_newer_plum(tmp_path):
    db = tmp_path / "plum.db"
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA user_version = 999")
    raw.close()
    with pytest.raises(MigrationError, match="newer"):
        await SqliteStore(db).start()
