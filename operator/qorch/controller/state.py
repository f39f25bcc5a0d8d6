"""The operator's indexes: small records of Agents, Tasks, Approvals, Leases and the policy.

Watch events (from kopf) land here, and the scheduling loop reads from here. A
record keeps only the fields decisions need, never the whole body, so 100,000
objects cost tens of MiB. The apiserver has already validated and defaulted
every object; this module trusts that and only reads.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qorch.api import constants
from qorch.api.enums import Clearance, TaskPhase

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["AgentRecord", "ClusterState", "Key", "PolicyRecord", "TaskRecord"]

Key = tuple[str, str]  # (namespace, name)
_RANK = {c.value: c.rank for c in Clearance}
ACTIVE_PHASES = frozenset({TaskPhase.ASSIGNED.value, TaskPhase.RUNNING.value})
FINAL_PHASES = frozenset(
    {
        TaskPhase.SUCCEEDED.value,
        TaskPhase.FAILED.value,
        TaskPhase.DEAD_LETTERED.value,
        TaskPhase.CANCELLED.value,
    }
)


def _time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return dt.datetime.fromisoformat(value)


@dataclass(slots=True)
class AgentRecord:
    """What scheduling needs of one Agent."""

    namespace: str
    name: str
    resource_version: str
    generation: int
    capabilities: tuple[str, ...]
    capacity: int
    clearance: int
    cordoned: bool
    cost: float
    latency_ms: float
    group: str
    labels: tuple[tuple[str, str], ...]
    phase: str | None  # as last written by us
    active_tasks: int
    success_rate: float
    observed_generation: int | None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> AgentRecord:
        """Extract from a watched Agent body."""
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        provider = spec.get("provider") or {}
        stats = status.get("stats") or {}
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            resource_version=meta["resourceVersion"],
            generation=int(meta.get("generation", 0)),
            capabilities=tuple(spec.get("capabilities") or ()),
            capacity=int(spec.get("capacity", 1)),
            clearance=_RANK.get(spec.get("clearance", "internal"), 1),
            cordoned=bool(spec.get("cordoned", False)),
            cost=float(provider.get("costPerTask", 0.0)),
            latency_ms=float(provider.get("latencyMs", 0.0)),
            group=str(spec.get("entanglementGroup", "")),
            labels=tuple(sorted((meta.get("labels") or {}).items())),
            phase=status.get("phase"),
            active_tasks=int(status.get("activeTasks", 0)),
            success_rate=float(stats.get("successRate", 1.0)),
            observed_generation=status.get("observedGeneration"),
        )


@dataclass(slots=True)
class TaskRecord:
    """What scheduling needs of one Task."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    created: dt.datetime
    requires: tuple[str, ...]
    priority: int
    classification: int
    depends_on: tuple[str, ...]
    approval_required: bool
    selector: dict[str, Any] | None
    group: str
    max_cost: float | None
    deadline: dt.datetime | None
    phase: str | None
    agent: str
    attempts: int
    scheduled_reason: str  # reason of the Scheduled condition, as last written
    observed_generation: int | None
    max_attempts: int = 3
    assigned_at: dt.datetime | None = None
    exec_started: dt.datetime | None = None
    exec_finished: dt.datetime | None = None
    exec_error: str = ""

    @property
    def key(self) -> Key:
        """(namespace, name)."""
        return (self.namespace, self.name)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> TaskRecord:
        """Extract from a watched Task body."""
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        created = _time(meta.get("creationTimestamp")) or dt.datetime.now(dt.UTC)
        deadline = _time(spec.get("deadline"))
        if deadline is None and spec.get("timeoutSeconds"):
            deadline = created + dt.timedelta(seconds=int(spec["timeoutSeconds"]))
        scheduled: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Scheduled"), {}
        )
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=str(meta.get("uid", "")),
            resource_version=meta["resourceVersion"],
            generation=int(meta.get("generation", 0)),
            created=created,
            requires=tuple(spec.get("requires") or ()),
            priority=int(spec.get("priority", 500)),
            classification=_RANK.get(spec.get("classification", "internal"), 1),
            depends_on=tuple(spec.get("dependsOn") or ()),
            approval_required=bool((spec.get("approval") or {}).get("required", False)),
            selector=spec.get("agentSelector") or None,
            group=str(spec.get("entanglementGroup", "")),
            max_cost=(spec.get("budget") or {}).get("maxCost"),
            deadline=deadline,
            phase=status.get("phase"),
            agent=str((status.get("assignment") or {}).get("agent", "")),
            attempts=int(status.get("attempts", 0)),
            scheduled_reason=str(scheduled.get("reason", "")),
            observed_generation=status.get("observedGeneration"),
            max_attempts=int((spec.get("retry") or {}).get("maxAttempts", 3)),
            assigned_at=_time((status.get("assignment") or {}).get("assignedAt")),
            exec_started=_time((status.get("execution") or {}).get("startedAt")),
            exec_finished=_time((status.get("execution") or {}).get("finishedAt")),
            exec_error=str((status.get("execution") or {}).get("error", "")),
        )

    def current_execution(self) -> tuple[bool, bool]:
        """(started, finished) of the attempt of the current assignment (older reports are ignored)."""
        if self.assigned_at is None or self.exec_started is None or self.exec_started < self.assigned_at:
            return False, False
        return True, self.exec_finished is not None and self.exec_finished >= self.exec_started


@dataclass(slots=True)
class PolicyRecord:
    """The parts of SchedulingPolicy `default` the loop uses."""

    strategy: str = "quantum"
    temperature: float = 0.05
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    batch_size: int = 4096
    agent_grace_seconds: int = 30

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> PolicyRecord:
        """Extract from the watched policy."""
        spec = body.get("spec") or {}
        return cls(
            strategy=str(spec.get("strategy", "quantum")),
            temperature=float(spec.get("temperature", 0.05)),
            seed=int(spec.get("seed") or 0),
            weights={str(k): float(v) for k, v in (spec.get("weights") or {}).items()},
            batch_size=int(spec.get("batchSize", 4096)),
            agent_grace_seconds=int(spec.get("agentGraceSeconds", 30)),
        )


@dataclass(slots=True)
class ClusterState:
    """Everything the operator knows, updated by watch events."""

    agents: dict[Key, AgentRecord] = field(default_factory=dict)
    tasks: dict[Key, TaskRecord] = field(default_factory=dict)
    approvals: dict[Key, str] = field(default_factory=dict)  # (namespace, task) -> Approve | Reject
    heartbeats: dict[Key, dt.datetime] = field(default_factory=dict)  # (namespace, agent) -> renewTime
    policy: PolicyRecord = field(default_factory=PolicyRecord)
    last_event: float = 0.0  # monotonic time of the latest watch event (for start-up settling)

    def apply_agent(self, event_type: str, body: Mapping[str, Any]) -> None:
        """Record an Agent watch event."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.agents.pop(key, None)
        else:
            self.agents[key] = AgentRecord.of(body)

    def apply_task(self, event_type: str, body: Mapping[str, Any]) -> None:
        """Record a Task watch event."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.tasks.pop(key, None)
        else:
            self.tasks[key] = TaskRecord.of(body)

    def apply_approval(self, event_type: str, body: Mapping[str, Any]) -> None:
        """Record an Approval (keyed by the task it decides)."""
        spec = body.get("spec") or {}
        key = (body["metadata"]["namespace"], str(spec.get("taskRef", "")))
        if event_type == "DELETED":
            self.approvals.pop(key, None)
        else:
            self.approvals[key] = str(spec.get("decision", ""))

    def apply_lease(self, event_type: str, body: Mapping[str, Any]) -> None:
        """Record an agent liveness Lease's last renewal."""
        name = body["metadata"]["name"]
        if not name.startswith(constants.AGENT_LEASE_PREFIX):
            return
        key = (body["metadata"]["namespace"], name.removeprefix(constants.AGENT_LEASE_PREFIX))
        renewed = _time((body.get("spec") or {}).get("renewTime"))
        if event_type == "DELETED" or renewed is None:
            self.heartbeats.pop(key, None)
        else:
            self.heartbeats[key] = renewed

    def apply_policy(self, event_type: str, body: Mapping[str, Any]) -> None:
        """Record the cluster's SchedulingPolicy (only `default` counts)."""
        if body["metadata"]["name"] != constants.DEFAULT_POLICY_NAME:
            return
        self.policy = PolicyRecord() if event_type == "DELETED" else PolicyRecord.of(body)
