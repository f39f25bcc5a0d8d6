"""The Agent kind: a worker (or a pool of identical workers) that takes tasks."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import Field

from qorch.api.common import (
    DNS_LABEL,
    ApiModel,
    CapabilityList,
    ClearanceField,
    Conditions,
    SpecModel,
)
from qorch.api.enums import AgentPhase, BreakerState, Clearance

__all__ = ["AgentSpec", "AgentStats", "AgentStatus", "Breaker", "Provider", "service_account_user"]


def service_account_user(namespace: str, service_account: str) -> str:
    """The user name the apiserver gives a ServiceAccount's tokens ("" for no ServiceAccount)."""
    return f"system:serviceaccount:{namespace}:{service_account}" if service_account else ""


class Provider(SpecModel):
    """The LLM provider behind this agent, used for cost- and latency-aware routing."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Provider, e.g. openai."),
    ]
    model: Annotated[str, Field(max_length=128, description="Model name, e.g. gpt-4o-mini.")] = ""
    cost_per_task: Annotated[float, Field(ge=0, le=1_000_000, description="Typical cost of one task, any unit.")] = 0.0
    latency_ms: Annotated[int, Field(ge=0, le=3_600_000, description="Typical latency of one task in ms.")] = 0


class AgentSpec(SpecModel):
    """What the agent can do and how much of it at once. Written by users or GitOps."""

    capabilities: Annotated[
        CapabilityList,
        Field(description="Capability names this agent offers; a task's requires must be a subset."),
    ] = []
    capacity: Annotated[
        int,
        Field(ge=1, le=100_000, description="Concurrent task slots (an agent may stand for a pool)."),
    ] = 1
    clearance: Annotated[ClearanceField, Field(description="Highest task classification this agent may run.")] = (
        Clearance.INTERNAL
    )
    provider: Annotated[Provider | None, Field(description="Optional LLM provider, for routing.")] = None
    entanglement_group: Annotated[
        str,
        Field(
            max_length=63,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
            description="Agents sharing a failure domain or team; retries avoid the group that just failed.",
        ),
    ] = ""
    cordoned: Annotated[bool, Field(description="When true the agent keeps running work but gets no new tasks.")] = (
        False
    )
    service_account_name: Annotated[
        str,
        Field(
            max_length=253,
            pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
            description=(
                "The ServiceAccount (in this namespace) the agent runtime runs as. The operator copies its user "
                "name into each assignment (status.assignment.user), and the admission policy "
                "qorch-task-status-writer then lets only that user write the task's status.execution "
                "(docs/security.md). Empty: the policy cannot tie reports to the agent."
            ),
        ),
    ] = ""


class Breaker(ApiModel):
    """The agent's circuit breaker, kept by the operator."""

    state: Annotated[BreakerState, Field(description="Closed, Open or HalfOpen.")] = BreakerState.CLOSED
    consecutive_failures: Annotated[int, Field(ge=0, description="Failures since the last success.")] = 0
    open_until: Annotated[dt.datetime | None, Field(description="When an Open breaker turns HalfOpen.")] = None


class AgentStats(ApiModel):
    """Outcome counts of tasks this agent ran."""

    succeeded: Annotated[int, Field(ge=0, description="Tasks that succeeded.")] = 0
    failed: Annotated[int, Field(ge=0, description="Task attempts that failed.")] = 0
    success_rate: Annotated[float, Field(ge=0, le=1, description="Smoothed success rate, 0..1.")] = 1.0


class AgentStatus(ApiModel):
    """What the operator observes about the agent. Written only by the operator."""

    phase: Annotated[AgentPhase | None, Field(description="Ready, NotReady or Cordoned.")] = None
    active_tasks: Annotated[int, Field(ge=0, description="Tasks assigned and not finished.")] = 0
    breaker: Annotated[Breaker | None, Field(description="Circuit breaker state.")] = None
    stats: Annotated[AgentStats | None, Field(description="Outcome counts.")] = None
    last_heartbeat: Annotated[dt.datetime | None, Field(description="Last renewal of the liveness Lease.")] = None
    conditions: Conditions = []
    observed_generation: Annotated[int | None, Field(ge=0, description="The generation last acted on.")] = None
