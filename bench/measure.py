"""What the benches share: a progress line, a process's CPU time, and bounded concurrency."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any


def progress(message: str) -> None:
    """Say what the bench is doing (stderr), so a slow stage is visible."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bounded(coros: list[Any], limit: int = 32) -> list[Any]:
    """Await `coros` with at most `limit` in flight; their results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with gate:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))
