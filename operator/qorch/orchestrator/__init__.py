"""The original API, on a real cluster: `UnifiedQuantumOrchestrator` (see core.py and docs/sdk.md).

`from qorch import UnifiedQuantumOrchestrator` imports this package lazily, so
`import qorch` stays light.
"""

from qorch.orchestrator.core import OrchestratorError, UnifiedQuantumOrchestrator, echo
from qorch.orchestrator.embedded import DEFAULT_POLICY

__all__ = ["DEFAULT_POLICY", "OrchestratorError", "UnifiedQuantumOrchestrator", "echo"]
