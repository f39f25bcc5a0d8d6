"""qorch: the Unified Quantum Orchestrator.

A Kubernetes operator that schedules `Task`s onto fleets of AI `Agent`s with a
quantum-inspired batch scheduler. See DESIGN in the project's docs/.

`UnifiedQuantumOrchestrator` (the original API, `qorch.orchestrator`) is imported
on first use, so `import qorch` loads nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qorch.orchestrator import OrchestratorError, UnifiedQuantumOrchestrator

__all__ = ["OrchestratorError", "UnifiedQuantumOrchestrator", "__version__"]

__version__ = "0.1.0"
_LAZY = frozenset({"UnifiedQuantumOrchestrator", "OrchestratorError"})


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whatever the lazily imported name is
    """Import the orchestrator on first use (PEP 562)."""
    if name in _LAZY:
        from qorch import orchestrator  # noqa: PLC0415 - lazy on purpose

        return getattr(orchestrator, name)
    raise AttributeError(f"module 'qorch' has no attribute {name!r}")
