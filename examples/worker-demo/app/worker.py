"""The worker-demo app: serves `demo.add` and `demo.wordcount` over Plum's gRPC stream.

Everything it needs to know (the controller's gRPC address, its instance, node and app)
comes from the environment the Plum agent gives apps; `Worker()` reads it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from plum.logging import setup_logging
from plum.sdk import TaskContext, Worker


def make_worker(**options) -> Worker:
    worker = Worker(**options)

    @worker.task("demo.add")
    def add(payload: dict) -> dict:
        """`{a, b}` -> `{sum}`. A plain function: it runs in the worker's thread pool."""
        return {"sum": payload["a"] + payload["b"]}

    @worker.task("demo.wordcount")
    async def wordcount(payload: dict, ctx: TaskContext) -> dict:
        """`{text}` -> `{words, top}`: the number of words and the most frequent ones."""
        words = str(payload.get("text", "")).lower().split()
        ctx.log(f"counting {len(words)} words")
        return {"words": len(words), "top": Counter(words).most_common(3)}

    return worker


def main() -> None:
    setup_logging("info")
    asyncio.run(make_worker().run(handle_signals=True))


if __name__ == "__main__":
    main()
