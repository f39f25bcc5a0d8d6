"""The SchedulingPolicy kind (cluster-scoped, one object named `default`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import Field

from qorch.api.common import DNS_LABEL, ApiModel, SpecModel
from qorch.api.enums import BreakerState, Strategy
from qorch.api.task import RetryPolicy

__all__ = [
    "SCORER_NAMES",
    "BreakerPolicy",
    "NamespaceQuota",
    "PolicyObservables",
    "SchedulingPolicySpec",
    "SchedulingPolicyStatus",
]

#: The scorers the operator ships (qorch.scheduler.scorers registers exactly these; a test holds them equal).
SCORER_NAMES = ("capability-fit", "headroom", "success-rate", "cost", "latency", "deadline-slack")

ScorerName = Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]


class NamespaceQuota(SpecModel):
    """Limits for one namespace."""

    namespace: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="The namespace.")]
    max_concurrent_tasks: Annotated[
        int | None, Field(ge=0, le=10_000_000, description="Tasks Assigned or Running at once.")
    ] = None
    max_cost: Annotated[float | None, Field(ge=0, description="Summed costPerTask of its active tasks.")] = None
    weight: Annotated[float, Field(gt=0, le=1000, description="Fair-share weight across namespaces.")] = 1.0


class BreakerPolicy(SpecModel):
    """When an agent's breaker opens, and for how long."""

    failure_threshold: Annotated[
        int, Field(ge=1, le=100, description="Consecutive failed attempts of one agent that open its breaker.")
    ] = 5
    cooldown_seconds: Annotated[
        int, Field(ge=1, le=3600, description="How long an open breaker gives the agent no work before a probe.")
    ] = 30


class SchedulingPolicySpec(SpecModel):
    """How the scheduler decides, cluster-wide."""

    strategy: Annotated[Strategy, Field(description="Which strategy collapses scores into assignments.")] = (
        Strategy.QUANTUM
    )
    temperature: Annotated[
        float,
        Field(
            ge=0,
            le=10,
            description="Softmax temperature of amplitudes; 0 is the deterministic optimum.",
        ),
    ] = 0.05
    seed: Annotated[int | None, Field(ge=0, le=2**31 - 1, description="Seed for exploratory sampling.")] = None
    weights: Annotated[
        dict[ScorerName, Annotated[float, Field(ge=0, le=100)]],
        Field(
            max_length=16,
            description="Scorer name -> weight; unnamed scorers keep their default weight.",
        ),
    ] = {}
    batch_size: Annotated[
        int,
        Field(
            ge=1,
            le=100_000,
            description="Most tasks decided in one cycle; the rest wait for the next (NotInBatch).",
        ),
    ] = 16_384
    agent_grace_seconds: Annotated[
        int,
        Field(
            ge=1,
            le=3600,
            description="After this long without a Lease renewal an agent is NotReady.",
        ),
    ] = 30
    claim_timeout_seconds: Annotated[
        int,
        Field(
            ge=1,
            le=3600,
            description=(
                "A task Assigned this long without its agent claiming it goes back to the queue "
                "(ClaimTimedOut), without using an attempt."
            ),
        ),
    ] = 60
    quotas: Annotated[
        list[NamespaceQuota],
        Field(
            max_length=1024,
            description="Per-namespace limits and fair-share weights.",
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["namespace"],
            },
        ),
    ] = []
    default_retry: Annotated[RetryPolicy | None, Field(description="Retry policy for tasks that set none.")] = None
    breaker: Annotated[
        BreakerPolicy | None, Field(description="Per-agent circuit breakers; the defaults when unset.")
    ] = None
    provider_breaker: Annotated[
        BreakerPolicy | None,
        Field(
            description=(
                "Per-provider circuit breakers: consecutive provider errors (rate limits, 5xx) reported by any "
                "of a provider's agents open it for all of them; the defaults when unset."
            )
        ),
    ] = None


class PolicyObservables(ApiModel):
    """The scheduler's observables of one cycle (definitions in docs/scheduler.md)."""

    entropy: Annotated[float, Field(ge=0, description="Von Neumann entropy of the cycle's demand density matrix.")]
    coherence: Annotated[
        float, Field(ge=0, le=1, description="Born probability mass the collapse kept, 0..1 (1: nobody displaced).")
    ]
    fidelity: Annotated[float, Field(ge=0, le=1, description="Overlap of demand and free supply by capability, 0..1.")]


class ProviderBreaker(ApiModel):
    """One LLM provider's circuit breaker, across all its agents (docs/workflows.md)."""

    name: Annotated[str, Field(max_length=63, description="The provider, as agents' spec.provider.name says.")]
    state: Annotated[BreakerState, Field(description="Closed, Open or HalfOpen.")] = BreakerState.CLOSED
    consecutive_failures: Annotated[int, Field(ge=0, description="Provider errors since the last success.")] = 0
    open_until: Annotated[dt.datetime | None, Field(description="When an Open breaker turns HalfOpen.")] = None


class SchedulingPolicyStatus(ApiModel):
    """What the leading operator last measured. Written only by the leader, at most every few seconds."""

    observables: Annotated[
        PolicyObservables | None, Field(description="Observables of the latest scheduling pass (absent before one).")
    ] = None
    batch: Annotated[int | None, Field(ge=0, description="Tasks decided in the pass that measured them.")] = None
    last_cycle_at: Annotated[dt.datetime | None, Field(description="When that pass ran.")] = None
    leader: Annotated[str, Field(max_length=253, description="Identity of the operator replica that wrote this.")] = ""
    providers: Annotated[
        list[ProviderBreaker],
        Field(
            max_length=256,
            description="Providers' circuit breakers that have seen errors; a new leader continues them.",
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] = []
    published_at: Annotated[dt.datetime | None, Field(description="When the leader wrote this status.")] = None
