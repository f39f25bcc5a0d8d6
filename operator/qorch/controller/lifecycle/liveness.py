"""Rule 3, liveness: an agent is alive while its Lease keeps changing, as *this process* sees it.

Like the node-lifecycle controller, the judgement uses when the operator
observed each new version of the Lease, on its own monotonic clock, against
the Lease's own `leaseDurationSeconds` (the policy's grace when unset). The
agent's `renewTime` is never compared with our clock: two machines' clocks
disagree, and an operator's clock step must not fail every running task.

Alive and schedulable are different things: a cordoned agent is alive (its
running work is left alone) but gets nothing new.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from qorch.api.enums import AgentPhase

if TYPE_CHECKING:
    from qorch.controller.records import AgentRecord, LeaseRecord

__all__ = ["Liveness", "agent_phase", "judge", "next_change"]


class Liveness(enum.Enum):
    """What the Lease says about an agent."""

    ALIVE = "alive"  # a held Lease changed within its duration
    UNKNOWN = "unknown"  # no Lease seen yet, but we have not watched for a whole grace period
    DEAD = "dead"  # released, stale, or missing for a whole grace period


def judge(lease: LeaseRecord | None, *, now: float, grace: float, watching_since: float) -> Liveness:
    """The agent's liveness at monotonic time `now`."""
    if lease is None:
        return Liveness.UNKNOWN if now - watching_since <= grace else Liveness.DEAD
    if not lease.holder:
        return Liveness.DEAD  # released on a clean shutdown
    if now - lease.observed_at <= (lease.duration or grace):
        return Liveness.ALIVE
    return Liveness.DEAD


def next_change(lease: LeaseRecord | None, *, grace: float, watching_since: float) -> float | None:
    """When the judgement will turn to DEAD if nothing else is observed (monotonic), or None."""
    if lease is None:
        return watching_since + grace
    if not lease.holder:
        return None
    return lease.observed_at + (lease.duration or grace)


def agent_phase(agent: AgentRecord, liveness: Liveness) -> tuple[AgentPhase, str, str]:
    """The Agent's phase and its Ready condition's reason and message."""
    if agent.cordoned:
        return AgentPhase.CORDONED, "Cordoned", "spec.cordoned is true: running work continues, no new work"
    if liveness is Liveness.ALIVE:
        return AgentPhase.READY, "LeaseRenewed", ""
    if liveness is Liveness.UNKNOWN:
        return AgentPhase.NOT_READY, "NoHeartbeat", f"no Lease qorch-agent-{agent.name} seen yet"
    return AgentPhase.NOT_READY, "LeaseExpired", f"Lease qorch-agent-{agent.name} is not being renewed"
