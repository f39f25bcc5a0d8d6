"""Coroutines that run side by side and stop together: a writer's or a recorder's pool of workers.

What it must never do: leave a worker running after the pool was cancelled, or
swallow a worker's crash (the first failure ends the pool and reaches the caller,
whose supervisor then ends the process).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable

__all__ = ["together"]


async def together(work: Iterable[Coroutine[Any, Any, Any]]) -> None:
    """Run every coroutine until one ends or the caller is cancelled; then stop them all."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
