"""The original module `orchestrator`, kept alive: deprecated, it delegates to UnifiedQuantumOrchestrator.

```python
from orchestrator import build_orchestrator, run_goal_sync
orch = build_orchestrator(5)          # an orchestrator with 5 registered (and served) agents
print(run_goal_sync("say hello"))     # submit a task and wait for it, synchronously
```

Both warn with DeprecationWarning; use `qorch.UnifiedQuantumOrchestrator`
(async) or `qorch.client.SyncClient` instead (docs/sdk.md).

`build_orchestrator(n)` runs a `UnifiedQuantumOrchestrator` on an event loop of
its own (a daemon thread) and returns a synchronous wrapper. Like the async
class it uses the configured cluster ($KUBECONFIG, ~/.kube/config, in-cluster)
and otherwise brings up the embedded control plane and operator. What it starts
lives until `close()` or until the interpreter exits, whichever comes first: an
exit hook drains the agents, releases their Leases and stops the embedded
cluster, and the control plane's processes are bound to their parent by
PR_SET_PDEATHSIG, so even a killed interpreter leaves none behind.

This module lives at the top of the wheel (`operator/orchestrator.py`), beside
the `qorch` package; `operator/` itself is never a package.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import warnings
from typing import TYPE_CHECKING, Any, Self, TypeVar

from qorch.orchestrator import UnifiedQuantumOrchestrator

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = ["SyncOrchestrator", "build_orchestrator", "run_goal_sync"]

T = TypeVar("T")
_DEFAULT: SyncOrchestrator | None = None
_LOCK = threading.Lock()
_CLOSE_SECONDS = 120.0


def _deprecated(what: str) -> None:
    warnings.warn(
        f"orchestrator.{what} is deprecated; use qorch.UnifiedQuantumOrchestrator (see docs/sdk.md)",
        DeprecationWarning,
        stacklevel=3,
    )


class SyncOrchestrator:
    """A UnifiedQuantumOrchestrator driven from synchronous code, on a private event loop."""

    def __init__(self, orchestrator: UnifiedQuantumOrchestrator) -> None:
        """Start the loop thread and the orchestrator on it."""
        self.orchestrator = orchestrator
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qorch-orchestrator", daemon=True)
        self._thread.start()
        self._closed = False
        atexit.register(self.close)
        try:
            self._run(orchestrator.start())
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def register_agent(self, name: str, capabilities: Any = (), **spec: Any) -> str:  # noqa: ANN401
        """See UnifiedQuantumOrchestrator.register_agent."""
        return self._run(self.orchestrator.register_agent(name, capabilities, **spec))

    def submit_task(self, goal: str, **spec: Any) -> str:  # noqa: ANN401
        """See UnifiedQuantumOrchestrator.submit_task."""
        return self._run(self.orchestrator.submit_task(goal, **spec))

    def run_goal(self, goal: str, *, timeout: float = 300.0, **spec: Any) -> dict[str, Any]:  # noqa: ANN401
        """Submit a task, wait until it is final; its name, phase, result and error."""
        view = self._run(self.orchestrator.run_goal(goal, timeout=timeout, **spec))
        execution = view.status.execution
        return {
            "task": view.name,
            "phase": str(view.phase) if view.phase else None,
            "result": execution.result if execution else None,
            "error": execution.error if execution else None,
        }

    def get_system_status(self) -> dict[str, Any]:
        """See UnifiedQuantumOrchestrator.get_system_status."""
        return self.orchestrator.get_system_status()

    def close(self) -> None:
        """Stop the orchestrator (agents drained, Leases released, embedded cluster stopped) and the loop."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            if self._thread.is_alive():
                self._run(self.orchestrator.stop(), timeout=_CLOSE_SECONDS)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        """`with build_orchestrator(3) as orch:` closes it on the way out."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()


def build_orchestrator(n: int, *, capabilities: Any = ("general",), **settings: Any) -> SyncOrchestrator:  # noqa: ANN401
    """Deprecated: an orchestrator with `n` registered agents (`agent-0` …), served from this process."""
    _deprecated("build_orchestrator")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"build_orchestrator: n must be a non-negative integer, got {n!r}")
    settings.setdefault("max_agents", max(n, 1))
    orch = SyncOrchestrator(UnifiedQuantumOrchestrator(**settings))
    try:
        for i in range(n):
            orch.register_agent(f"agent-{i}", capabilities)
    except BaseException:
        orch.close()
        raise
    return orch


def run_goal_sync(goal: str, *, orchestrator: SyncOrchestrator | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """Deprecated: submit `goal` and wait for it (a default orchestrator with one agent is built once if none given)."""
    _deprecated("run_goal_sync")
    global _DEFAULT  # noqa: PLW0603 - the legacy API's one implicit orchestrator
    if orchestrator is None:
        with _LOCK:
            if _DEFAULT is None or _DEFAULT._closed:  # noqa: SLF001
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    _DEFAULT = build_orchestrator(1)
            orchestrator = _DEFAULT
    return orchestrator.run_goal(goal, timeout=timeout)
