"""The agent side: the runtime that runs users' handlers, and a simulated pool for load tests.

`qorch.agent.runtime` serves one Agent by the protocol in docs/protocol.md;
`qorch.agent.simulated` pretends to run tasks (named as such, for demos of
scale and benchmarks). Both share `qorch.agent.attempts`.
"""

from qorch.agent.runtime import Handlers, ProviderError, RuntimeSettings, TaskContext

__all__ = ["Handlers", "ProviderError", "RuntimeSettings", "TaskContext"]
