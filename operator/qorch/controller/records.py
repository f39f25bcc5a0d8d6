"""Small records of the watched objects: only what decisions read, never whole bodies.

One record per object, replaced (never mutated) on every watch event, so a list
of records taken in the loop is a consistent view for a worker thread. Strings
that repeat across thousands of objects (namespaces, agent names, capability
tuples, selectors) are interned, so 100,000 Tasks cost tens of MiB.

The apiserver has validated and defaulted every body; parsing trusts that and
falls back to the CRD's defaults only where a field may be absent.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qorch.api import constants
from qorch.api.agent import service_account_user
from qorch.api.enums import ApprovalDecision, BreakerState, Clearance, Reason
from qorch.api.policy import SchedulingPolicySpec
from qorch.api.protocol import FINAL_PHASES, Report
from qorch.api.task import RetryPolicy
from qorch.scheduler.tasks import Selector

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ACTIVE_PHASES",
    "FINAL_PHASES",
    "WAITING_PHASES",
    "AgentRecord",
    "ApprovalRecord",
    "Breaker",
    "Key",
    "LeaseRecord",
    "PolicyRecord",
    "Quota",
    "Retry",
    "TaskRecord",
    "parse_time",
]

Key = tuple[str, str]  # (namespace, name)
ACTIVE_PHASES = frozenset({"Assigned", "Running"})
#: Phases of a task waiting at the gate (none yet, approval, dependencies): the members a cycle of dependsOn has.
WAITING_PHASES = frozenset({None, "Pending", "Blocked", "AwaitingApproval"})
#: Status fields a Task may carry; a record keeps which are present as a bitmask,
#: so a JSON patch can say `add` or `remove` without the record holding the values.
STATUS_FIELDS = (
    "phase",
    "assignment",
    "attempts",
    "history",
    "nextAttemptAt",
    "explanation",
    "execution",
    "conditions",
    "observedGeneration",
    "redrives",
    "attemptsBeforeRedrive",
    "historyTotal",
)
_BIT = {name: 1 << i for i, name in enumerate(STATUS_FIELDS)}
_FAILURES = frozenset(
    {
        Reason.ATTEMPT_FAILED.value,
        Reason.ATTEMPT_TIMED_OUT.value,
        Reason.CLAIM_TIMED_OUT.value,  # not a failed attempt, but its agent is the one to avoid next
        Reason.AGENT_REFUSED.value,  # nor is a refusal
        Reason.AGENT_LOST.value,
        Reason.ATTEMPTS_EXHAUSTED.value,
    }
)
_TUPLES: dict[tuple[str, ...], tuple[str, ...]] = {}
_SELECTORS: dict[str, Selector] = {}
_RETRIES: dict[tuple[int, int, int], Retry] = {}


def bit(name: str) -> int:
    """The presence bit of a status field."""
    return _BIT[name]


def parse_time(value: object) -> float | None:
    """RFC 3339 -> POSIX seconds (None for absent or unparsable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _strings(values: object) -> tuple[str, ...]:
    if not values:
        return ()
    key = tuple(sys.intern(str(v)) for v in values)  # type: ignore[attr-defined]
    return _TUPLES.setdefault(key, key)


def _selector(raw: Mapping[str, Any] | None) -> Selector | None:
    if not raw:
        return None
    text = json.dumps(raw, sort_keys=True)
    found = _SELECTORS.get(text)
    if found is None:
        found = _SELECTORS[text] = Selector.of(raw)
    return found or None


@dataclass(frozen=True, slots=True)
class Retry:
    """A task's (or the policy's) retry policy, shared between records."""

    max_attempts: int = RetryPolicy.model_fields["max_attempts"].default
    backoff_seconds: int = RetryPolicy.model_fields["backoff_seconds"].default
    max_backoff_seconds: int = RetryPolicy.model_fields["max_backoff_seconds"].default

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> Retry | None:
        """From `spec.retry` or `spec.defaultRetry` (None when unset)."""
        if raw is None:
            return None
        default = cls()
        key = (
            int(raw.get("maxAttempts", default.max_attempts)),
            int(raw.get("backoffSeconds", default.backoff_seconds)),
            int(raw.get("maxBackoffSeconds", default.max_backoff_seconds)),
        )
        found = _RETRIES.get(key)
        if found is None:
            found = _RETRIES[key] = cls(*key)
        return found


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """What decisions need of one Task."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    created: float
    # spec
    requires: tuple[str, ...]
    priority: int
    classification: int
    depends_on: tuple[str, ...]
    approval_required: bool
    selector: Selector | None
    group: str
    max_cost: float | None
    deadline: float | None  # spec.deadline: when it should have finished
    fail_on_deadline: bool
    timeout: float | None  # spec.timeoutSeconds: the longest one attempt may run
    retry: Retry | None
    cancel: bool  # spec.cancel: the user asked to stop it
    redrive: int  # spec.redrive: redrives asked for
    # status
    phase: str | None
    reason: str  # of the Scheduled condition, as last written
    agent: str  # assignment.agent
    attempt: int  # assignment.attempt: the current attempt's identity (0 without an assignment)
    last_attempt: int  # the highest attempt identity the status mentions anywhere (never reused)
    attempts: int  # attempts that started (the retry budget counts these, from attempts_before)
    redrives: int  # status.redrives: redrives acted on
    attempts_before: int  # status.attemptsBeforeRedrive
    next_attempt_at: float | None
    observed_generation: int | None
    report: Report | None
    failed_agent: str  # the agent of the latest failed attempt, from history (retries avoid it)
    history_len: int
    deadline_missed: str  # lastTransitionTime of the DeadlineMissed condition ("" while not missed)
    history_total: int  # history entries ever recorded (historyTotal; at least those still in history)
    dependents: tuple[str, ...]  # status.dependents: the children the status names now
    dependents_total: int  # status.dependentsTotal
    present: int  # bitmask of STATUS_FIELDS present

    @property
    def key(self) -> Key:
        """(namespace, name)."""
        return (self.namespace, self.name)

    @property
    def counted(self) -> int:
        """`attempts` once the current attempt, known to have started, is counted (Running already is)."""
        return self.attempts if self.phase == "Running" else self.attempts + 1

    def has(self, status_field: str) -> bool:
        """Whether the status carries `status_field`."""
        return bool(self.present & _BIT[status_field])

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> TaskRecord:
        """Extract from a watched Task body."""
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        created = parse_time(meta.get("creationTimestamp")) or 0.0
        assignment = status.get("assignment") or {}
        reason = missed = ""
        for condition in status.get("conditions") or ():
            if condition.get("type") == "Scheduled":
                reason = sys.intern(str(condition.get("reason", "")))
            elif condition.get("type") == Reason.DEADLINE_MISSED.value and condition.get("status") == "True":
                missed = str(condition.get("lastTransitionTime") or spec.get("deadline") or "1970-01-01T00:00:00Z")
        history = status.get("history") or []
        report = Report.of(status.get("execution"))
        attempt = int(assignment.get("attempt") or 0)
        last_attempt = max(
            attempt,
            report.attempt if report is not None else 0,
            max((int(h.get("attempt") or 0) for h in history), default=0),
        )
        failed_agent = next(
            (str(h.get("agent", "")) for h in reversed(history) if h.get("reason") in _FAILURES),
            "",
        )
        present = 0
        for name in status:
            present |= _BIT.get(name, 0)
        budget = spec.get("budget") or {}
        phase = status.get("phase")
        return cls(
            namespace=sys.intern(meta["namespace"]),
            name=meta["name"],
            uid=str(meta.get("uid", "")),
            resource_version=meta["resourceVersion"],
            generation=int(meta.get("generation", 0)),
            created=created,
            requires=_strings(spec.get("requires")),
            priority=int(spec.get("priority", 500)),
            classification=Clearance.rank_of(spec.get("classification", "internal")),
            depends_on=_strings(spec.get("dependsOn")),
            approval_required=bool((spec.get("approval") or {}).get("required", False)),
            selector=_selector(spec.get("agentSelector")),
            group=sys.intern(str(spec.get("entanglementGroup", ""))),
            max_cost=float(budget["maxCost"]) if "maxCost" in budget else None,
            deadline=parse_time(spec.get("deadline")),
            fail_on_deadline=spec.get("failOnDeadline") is True,
            timeout=float(spec["timeoutSeconds"]) if spec.get("timeoutSeconds") else None,
            retry=Retry.of(spec.get("retry")),
            cancel=spec.get("cancel") is True,
            redrive=int(spec.get("redrive") or 0),
            phase=sys.intern(phase) if phase else None,
            reason=reason,
            agent=sys.intern(str(assignment.get("agent", ""))),
            attempt=attempt,
            last_attempt=last_attempt,
            attempts=int(status.get("attempts", 0)),
            redrives=int(status.get("redrives", 0)),
            attempts_before=int(status.get("attemptsBeforeRedrive", 0)),
            next_attempt_at=parse_time(status.get("nextAttemptAt")),
            observed_generation=status.get("observedGeneration"),
            report=report,
            failed_agent=sys.intern(failed_agent),
            history_len=len(history),
            deadline_missed=missed,
            history_total=max(int(status.get("historyTotal") or 0), len(history)),
            dependents=tuple(str(d) for d in status.get("dependents") or ()),
            dependents_total=int(status.get("dependentsTotal") or 0),
            present=present,
        )


@dataclass(frozen=True, slots=True)
class Breaker:
    """One agent's circuit breaker (rules in lifecycle/breaker.py)."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive failed attempts
    open_until: float | None = None  # wall time an Open breaker turns HalfOpen

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> Breaker:
        """From an Agent's status.breaker (Closed when absent or unreadable)."""
        if not raw:
            return cls()
        try:
            state = BreakerState(str(raw.get("state", "Closed")))
        except ValueError:
            state = BreakerState.CLOSED
        return cls(state, int(raw.get("consecutiveFailures", 0)), parse_time(raw.get("openUntil")))


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """What decisions need of one Agent."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    capabilities: tuple[str, ...]
    capacity: int
    clearance: int
    cordoned: bool
    cost: float
    latency_ms: float
    provider: str  # spec.provider.name ("" without one): its breaker is shared by all its agents
    group: str
    labels: tuple[tuple[str, str], ...]
    # status, as last written by the operator
    phase: str | None
    active_tasks: int
    success_rate: float
    observed_generation: int | None
    last_heartbeat: str
    ready_reason: str  # the Ready condition's reason, as last written
    ready_since: str  # its lastTransitionTime
    breaker: Breaker  # status.breaker as last written: the operator's memory across a failover
    # The user its runtime reports as (spec.serviceAccountName as a user name; "" when unset):
    # copied into each assignment, where the admission policy checks status writers against it.
    user: str = ""

    @property
    def key(self) -> Key:
        """(namespace, name)."""
        return (self.namespace, self.name)

    @property
    def profile(self) -> tuple[object, ...]:
        """Everything that decides which tasks this agent could ever run (not its status)."""
        return (self.capabilities, self.capacity, self.clearance, self.cordoned, self.cost, self.group, self.labels)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> AgentRecord:
        """Extract from a watched Agent body."""
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        provider = spec.get("provider") or {}
        ready: Mapping[str, Any] = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), {})
        labels = tuple(sorted((sys.intern(k), sys.intern(v)) for k, v in (meta.get("labels") or {}).items()))
        return cls(
            namespace=sys.intern(meta["namespace"]),
            name=sys.intern(meta["name"]),
            uid=str(meta.get("uid", "")),
            resource_version=meta["resourceVersion"],
            generation=int(meta.get("generation", 0)),
            capabilities=_strings(spec.get("capabilities")),
            capacity=int(spec.get("capacity", 1)),
            clearance=Clearance.rank_of(spec.get("clearance", "internal")),
            cordoned=bool(spec.get("cordoned", False)),
            cost=float(provider.get("costPerTask", 0.0)),
            latency_ms=float(provider.get("latencyMs", 0.0)),
            provider=sys.intern(str(provider.get("name", ""))),
            group=sys.intern(str(spec.get("entanglementGroup", ""))),
            labels=labels,
            phase=status.get("phase"),
            active_tasks=int(status.get("activeTasks", 0)),
            success_rate=float((status.get("stats") or {}).get("successRate", 1.0)),
            observed_generation=status.get("observedGeneration"),
            last_heartbeat=str(status.get("lastHeartbeat", "")),
            ready_reason=str(ready.get("reason", "")),
            ready_since=str(ready.get("lastTransitionTime", "")),
            breaker=Breaker.of(status.get("breaker")),
            user=service_account_user(meta["namespace"], str(spec.get("serviceAccountName") or "")),
        )


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """An agent's liveness Lease, and when *this process* saw it change.

    `observed_at` is this process's monotonic clock, never the agent's renewTime:
    liveness must not depend on two machines' clocks agreeing.
    """

    namespace: str
    agent: str
    resource_version: str
    holder: str
    duration: float | None  # leaseDurationSeconds, None when unset
    renew_time: str  # as the agent wrote it, shown to users, never compared
    observed_at: float

    @property
    def key(self) -> Key:
        """(namespace, agent name)."""
        return (self.namespace, self.agent)

    @classmethod
    def of(cls, body: Mapping[str, Any], observed_at: float) -> LeaseRecord | None:
        """Extract from a Lease body; None when it is not an agent's liveness Lease."""
        meta, spec = body["metadata"], body.get("spec") or {}
        name = str(meta["name"])
        if not name.startswith(constants.AGENT_LEASE_PREFIX):
            return None
        duration = spec.get("leaseDurationSeconds")
        return cls(
            namespace=sys.intern(meta["namespace"]),
            agent=sys.intern(name.removeprefix(constants.AGENT_LEASE_PREFIX)),
            resource_version=meta["resourceVersion"],
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(duration) if duration else None,
            renew_time=str(spec.get("renewTime") or ""),
            observed_at=observed_at,
        )


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """A person's decision, and the Task incarnation it is bound to."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    task: str  # spec.taskRef
    decision: str
    approver: str
    task_uid: str  # spec.taskUID, else (a Reject) status.taskUID, bound by the operator; "" while unbound
    task_generation: int  # spec.taskGeneration, else (a Reject) status.taskGeneration; 0 while unbound
    bound: bool  # whether task_uid and task_generation are both settled (spec or status)

    @property
    def key(self) -> Key:
        """(namespace, name)."""
        return (self.namespace, self.name)

    @property
    def task_key(self) -> Key:
        """(namespace, task name)."""
        return (self.namespace, self.task)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ApprovalRecord:
        """Extract from an Approval body."""
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        decision = str(spec.get("decision", ""))
        if decision == ApprovalDecision.APPROVE.value:
            status = {}  # an Approve counts only for what its author named (the operator binds Rejects alone)
        task_uid = str(spec.get("taskUID") or status.get("taskUID") or "")
        generation = int(spec.get("taskGeneration") or status.get("taskGeneration") or 0)
        return cls(
            namespace=sys.intern(meta["namespace"]),
            name=str(meta["name"]),
            uid=str(meta.get("uid", "")),
            resource_version=meta["resourceVersion"],
            task=str(spec.get("taskRef", "")),
            decision=decision,
            approver=str(spec.get("approver", "")),
            task_uid=task_uid,
            task_generation=generation,
            bound=bool(task_uid) and generation > 0,
        )


@dataclass(frozen=True, slots=True)
class Quota:
    """One namespace's limits from the policy."""

    max_concurrent: int | None = None
    max_cost: float | None = None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """SchedulingPolicy `default`, as the loop uses it. Defaults are the CRD's."""

    resource_version: str = ""
    strategy: str = "quantum"
    temperature: float = 0.05
    seed: int = 0
    weights: Mapping[str, float] = field(default_factory=dict)
    batch_size: int = SchedulingPolicySpec.model_fields["batch_size"].default
    agent_grace_seconds: int = SchedulingPolicySpec.model_fields["agent_grace_seconds"].default
    claim_timeout_seconds: int = SchedulingPolicySpec.model_fields["claim_timeout_seconds"].default
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    default_retry: Retry = field(default_factory=Retry)
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    provider_threshold: int = 5
    provider_cooldown: float = 30.0
    providers: Mapping[str, Breaker] = field(default_factory=dict)  # status.providers: the last leader's breakers

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> PolicyRecord:
        """Extract from the watched policy."""
        spec = body.get("spec") or {}
        default = cls()
        return cls(
            resource_version=str((body.get("metadata") or {}).get("resourceVersion", "")),
            strategy=str(spec.get("strategy", default.strategy)),
            temperature=float(spec.get("temperature", default.temperature)),
            seed=int(spec.get("seed") or 0),
            weights={str(k): float(v) for k, v in (spec.get("weights") or {}).items()},
            batch_size=int(spec.get("batchSize", default.batch_size)),
            agent_grace_seconds=int(spec.get("agentGraceSeconds", default.agent_grace_seconds)),
            claim_timeout_seconds=int(spec.get("claimTimeoutSeconds", default.claim_timeout_seconds)),
            quotas={
                str(q["namespace"]): Quota(
                    max_concurrent=q.get("maxConcurrentTasks"),
                    max_cost=q.get("maxCost"),
                    weight=float(q.get("weight", 1.0)),
                )
                for q in spec.get("quotas") or ()
            },
            default_retry=Retry.of(spec.get("defaultRetry")) or Retry(),
            breaker_threshold=int((spec.get("breaker") or {}).get("failureThreshold", default.breaker_threshold)),
            breaker_cooldown=float((spec.get("breaker") or {}).get("cooldownSeconds", default.breaker_cooldown)),
            provider_threshold=int(
                (spec.get("providerBreaker") or {}).get("failureThreshold", default.provider_threshold)
            ),
            provider_cooldown=float(
                (spec.get("providerBreaker") or {}).get("cooldownSeconds", default.provider_cooldown)
            ),
            providers={
                str(p["name"]): Breaker.of(p)
                for p in (body.get("status") or {}).get("providers") or ()
                if isinstance(p, dict) and p.get("name")
            },
        )
