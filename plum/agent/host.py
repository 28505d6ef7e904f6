"""Facts about this host that travel with heartbeats: CPU and memory use, from /proc."""

from __future__ import annotations

import os
from pathlib import Path

from plum.engine.model import Usage


class UsageSampler:
    """CPU use is a difference between two samples, so the sampler remembers the last."""

    def __init__(self, proc: Path = Path("/proc")):
        self._proc = proc
        self._last: tuple[int, int] | None = None

    def sample(self) -> Usage:
        return Usage(cpu_percent=self._cpu_percent(), **self._memory())

    def _cpu_percent(self) -> float:
        try:
            fields = (self._proc / "stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return 0.0
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values[:8])
        last, self._last = self._last, (idle, total)
        if last is None or total <= last[1]:
            return 0.0
        busy = (total - last[1]) - (idle - last[0])
        return round(100.0 * busy / (total - last[1]), 1)

    def _memory(self) -> dict:
        info = {}
        try:
            for line in (self._proc / "meminfo").read_text().splitlines():
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            return {}
        total = info.get("MemTotal", 0)
        used = total - info.get("MemAvailable", info.get("MemFree", 0))
        percent = round(100.0 * used / total, 1) if total else 0.0
        return {"mem_percent": percent, "mem_used_bytes": used, "mem_total_bytes": total}


def default_capacity(configured: int) -> int:
    return configured if configured > 0 else (os.cpu_count() or 1) * 4
