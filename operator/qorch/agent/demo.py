"""Demo handlers for `qorch dev up`: every task gets a short, deterministic piece of "work".

Real handlers call models and tools; these only wait a moment (derived from the
task's name, so a demo run looks the same every time) and say what they did, so
the demo shows real runtimes claiming, running and reporting through the protocol.
"""

from __future__ import annotations

import asyncio
import hashlib

from qorch.agent.runtime import Handlers, TaskContext

__all__ = ["handlers"]


async def _work(task: TaskContext) -> str:
    digest = hashlib.blake2b(task.name.encode(), digest_size=2).digest()
    await asyncio.sleep(0.5 + int.from_bytes(digest, "little") / 65535)  # 0.5 to 1.5 s
    needs = ", ".join(task.requires) or "anything"
    return f"demo: {task.agent} did [{needs}] for {task.goal!r} (attempt {task.attempt})"


handlers = Handlers(default=_work)
