"""The agent side: for now a simulated pool that stands in for the agent runtime.

It talks to the real API exactly as the runtime will (liveness Leases, the
`execution` part of Task status, field manager `qorch-agent`), so the operator
can be exercised end to end before the real runtime lands.
"""

__all__: list[str] = []
