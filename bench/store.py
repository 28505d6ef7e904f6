"""Durable writes per second through the group-commit writer.

Each writer loops: enqueue one small write (an upsert of a node row), await its commit.
With N concurrent writers the writer batches up to N writes into one transaction, so
throughput rises with concurrency while every write is still durable when awaited
(synchronous=FULL). For contrast, the same work with one commit per write.

    .venv/bin/python bench/store.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import uvloop

from plum.engine.model import Health, Node
from plum.store.sqlite import SqliteStore


async def group_commit(path: Path, writers: int, seconds: float) -> tuple[float, float]:
    async with SqliteStore(path) as store:
        done = 0
        deadline = time.perf_counter() + seconds

        async def writer(w: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < deadline:
                await store.upsert_node(
                    Node(node_id=f"w{w}-{i % 50}", ip="127.0.0.1", last_seen=float(i),
                         health=Health.HEALTHY)
                )
                i += 1
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = time.perf_counter() - start
        per_commit = store.stats["writes"] / max(1, store.stats["commits"])
    return done / elapsed, per_commit


def commit_per_write(path: Path, seconds: float) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v REAL)")
    done, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("BEGIN")
        conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (f"k{done % 50}", float(done)))
        conn.execute("COMMIT")
        done += 1
    return done / (time.perf_counter() - start)


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        base = commit_per_write(Path(tmp) / "baseline.db", seconds)
        print(f"commit per write (sqlite3, synchronous=FULL): {base:,.0f} writes/s")
        for writers in (1, 10, 200):
            rate, batch = await group_commit(Path(tmp) / f"g{writers}.db", writers, seconds)
            print(f"group commit, {writers:>3} concurrent writers: {rate:,.0f} durable writes/s "
                  f"(mean {batch:.1f} writes per commit)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    uvloop.run(main(parser.parse_args().seconds))
