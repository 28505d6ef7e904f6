"""SQLite store: WAL, numbered migrations, one group-commit writer, separate readers.

All writes go through `GroupCommitWriter`: a caller enqueues a write function and awaits
its future; the writer takes everything queued, runs it in one transaction in one hop to
the connection's thread (each write under its own savepoint, so one failing write fails
alone), commits, then resolves the futures. A write is durable (with `synchronous=FULL`,
even across power loss) before its caller continues. Reads run on their own connections,
which WAL lets proceed while the writer commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from plum.config import Synchronous
from plum.errors import PlumError, Unavailable
from plum.logging import get_logger
from plum.store.migrations import Migration, load_migrations
from plum.store.sqlite_apps import SqliteApps
from plum.store.sqlite_nodes import SqliteNodes
from plum.store.sqlite_schedules import SqliteSchedules
from plum.store.sqlite_services import SqliteServices
from plum.store.sqlite_tasks import SqliteTasks
from plum.store.sqlite_workers import SqliteWorkers
from plum.store.sqlite_workflows import SqliteWorkflows

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]
ReadFn = Callable[[sqlite3.Connection], Any]

log = get_logger(__name__)


class MigrationError(PlumError):
    """A migration failed; the database was left as it was before start-up."""


def _on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> Any:
    """Run `fn(raw_connection)` on the connection's own thread: one hop for a whole batch.

    aiosqlite's public API costs one thread hop per statement; `_execute` is the
    documented-in-source way to run a function there, used here and nowhere else.
    """
    return conn._execute(lambda: fn(conn._conn))


def _apply_batch(conn: sqlite3.Connection, fns: list[WriteFn]) -> list[tuple[bool, Any]]:
    """One transaction for the whole batch. Fast path: every write in a row. If one fails,
    roll back and redo the batch with a savepoint per write, so that it fails alone."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes = [(True, fn(conn)) for fn in fns]
        except Exception:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [_isolated(conn, fn) for fn in fns]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _isolated(conn: sqlite3.Connection, fn: WriteFn) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT w")
    try:
        result = fn(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO w")
        conn.execute("RELEASE w")
        return False, exc
    conn.execute("RELEASE w")
    return True, result


class GroupCommitWriter:
    """Owns the write connection; batches concurrent writes into single commits."""

    def __init__(self, conn: aiosqlite.Connection, *, max_batch: int = 10_000):
        self._conn = conn
        self._max_batch = max_batch
        self._queue: list[tuple[WriteFn, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self.commits = 0
        self.writes = 0

    async def write(self, fn: WriteFn) -> Any:
        if self._closing:
            raise Unavailable("store is shutting down")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((fn, future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        """The writer loop: sleep until woken, drain everything queued, repeat; exits on close."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[tuple[WriteFn, asyncio.Future]]) -> None:
        fns = [fn for fn, _ in batch]
        try:
            outcomes = await _on_thread(self._conn, lambda raw: _apply_batch(raw, fns))
        except Exception as exc:
            log.error("store_commit_failed", error=str(exc), batch=len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(Unavailable(f"store write failed: {exc}"))
            return
        self.commits += 1
        self.writes += len(batch)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def close(self) -> None:
        """Stop intake; `run()` returns once what is queued is committed."""
        self._closing = True
        self._wake.set()


def _apply_migrations(conn: sqlite3.Connection, migrations: list[Migration]) -> list[int]:
    """Apply every pending migration in ONE transaction: all of them, or none."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    known = max((m.number for m in migrations), default=0)
    if current > known:
        raise MigrationError(
            f"database schema version {current} is newer than this plum ({known}); upgrade plum"
        )
    pending = [m for m in migrations if m.number > current]
    if not pending:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for migration in pending:
            for statement in migration.statements():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {pending[-1].number}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.execute("ROLLBACK")
        failed = next((m.name for m in pending), "?")
        raise MigrationError(f"migration failed ({failed} .. {pending[-1].name}): {exc}") from exc
    return [m.number for m in pending]


class SqliteStore(
    SqliteNodes, SqliteTasks, SqliteWorkflows, SqliteServices, SqliteSchedules, SqliteApps,
    SqliteWorkers,
):
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = Synchronous.FULL,
        read_connections: int = 2,
        migrations_dir: Path | None = None,
    ):
        self.path = Path(path)
        self._synchronous = synchronous
        self._n_readers = read_connections
        self._migrations_dir = migrations_dir
        self._conn: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = 0
        self._writer: GroupCommitWriter | None = None
        self._writer_task: asyncio.Task | None = None

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await _on_thread(conn, self._configure)
        return conn

    def _configure(self, raw: sqlite3.Connection) -> None:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute(f"PRAGMA synchronous={self._synchronous.value.upper()}")
        raw.execute("PRAGMA busy_timeout=5000")
        raw.execute("PRAGMA foreign_keys=ON")

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await self._connect()
        try:
            migrations = load_migrations(self._migrations_dir)
            applied = await _on_thread(self._conn, lambda raw: _apply_migrations(raw, migrations))
            if applied:
                log.info("store_migrated", path=str(self.path), applied=applied)
            for _ in range(self._n_readers):
                self._readers.append(await self._connect())
        except BaseException:
            await self._close_connections()
            raise
        self._writer = GroupCommitWriter(self._conn)
        self._writer_task = asyncio.get_running_loop().create_task(
            self._writer.run(), name="store-writer"
        )

    async def stop(self) -> None:
        """Stop intake, commit what is queued, close. Stopping twice is harmless."""
        if self._writer is not None:
            self._writer.close()
        if self._writer_task is not None:
            await self._writer_task
            self._writer_task = None
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in [*self._readers, self._conn]:
            if conn is not None:
                await conn.close()
        self._readers = []
        self._conn = None

    async def __aenter__(self) -> SqliteStore:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def stats(self) -> dict[str, int]:
        writer = self._writer
        return {"commits": writer.commits, "writes": writer.writes} if writer else {}

    async def _write(self, fn: WriteFn) -> Any:
        if self._writer is None:
            raise Unavailable("store is not started")
        return await self._writer.write(fn)

    async def _read(self, fn: ReadFn) -> Any:
        if not self._readers:
            raise Unavailable("store is not started")
        reader = self._readers[self._next_reader % len(self._readers)]
        self._next_reader += 1
        return await _on_thread(reader, fn)

    # Meta: small key/value facts about this installation.
    async def get_meta(self, key: str) -> str | None:
        row = await self._read(
            lambda c: c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )
