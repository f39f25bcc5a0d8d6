"""String enums of the API. Their values are what users type and `kubectl get` shows."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AgentPhase",
    "ApprovalDecision",
    "AttemptOutcome",
    "BreakerState",
    "Clearance",
    "Reason",
    "Strategy",
    "TaskPhase",
]


class Clearance(StrEnum):
    """Ordered sensitivity levels: an agent may run a task whose classification <= its clearance."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    SECRET = "secret"  # noqa: S105 - a level name, not a password
    TOPSECRET = "topsecret"

    @property
    def rank(self) -> int:
        """0 for public up to 4 for topsecret."""
        return _CLEARANCE_RANK[self.value]

    @classmethod
    def rank_of(cls, value: str, default: int = 1) -> int:
        """The rank of a level's name (`default`, internal, for a missing or unknown name)."""
        return _CLEARANCE_RANK.get(value, default)

    @classmethod
    def at(cls, rank: int) -> Clearance:
        """The level of a rank."""
        return _CLEARANCE_ORDER[rank]


_CLEARANCE_ORDER = list(Clearance)
_CLEARANCE_RANK = {level.value: i for i, level in enumerate(_CLEARANCE_ORDER)}


class TaskPhase(StrEnum):
    """Where a Task is in its life."""

    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    BLOCKED = "Blocked"
    QUEUED = "Queued"
    ASSIGNED = "Assigned"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    RETRYING = "Retrying"
    DEAD_LETTERED = "DeadLettered"
    CANCELLED = "Cancelled"


class AttemptOutcome(StrEnum):
    """How one attempt ended, as its history entry records it."""

    SUCCEEDED = "Succeeded"  # the handler returned
    FAILED = "Failed"  # the handler raised or timed out (the agent reported an error)
    LOST = "Lost"  # the agent stopped renewing its Lease after claiming it
    REFUSED = "Refused"  # the agent declined it without running it
    WITHDRAWN = "Withdrawn"  # taken back before it started: its agent was not alive
    CANCELLED = "Cancelled"  # stopped by spec.cancel


class AgentPhase(StrEnum):
    """Whether an Agent can take work."""

    READY = "Ready"
    NOT_READY = "NotReady"
    CORDONED = "Cordoned"


class BreakerState(StrEnum):
    """Per-agent circuit breaker."""

    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


class ApprovalDecision(StrEnum):
    """A human's answer to a Task that requires approval."""

    APPROVE = "Approve"
    REJECT = "Reject"


class Strategy(StrEnum):
    """Scheduling strategies a SchedulingPolicy can select."""

    QUANTUM = "quantum"
    GREEDY = "greedy"
    LEAST_LOADED = "least-loaded"
    ROUND_ROBIN = "round-robin"
    POWER_OF_TWO = "power-of-two"
    CONSISTENT_HASH = "consistent-hash"
    EXACT = "exact"


class Reason(StrEnum):
    """Every reason qorch writes: the `Scheduled` condition, history entries and Events.

    One enum for the scheduler core, the lifecycle rules and the agent protocol, so
    a reason a user reads in `kubectl describe` is always one of these words.
    """

    # Placement (the scheduler core and the scheduling queue).
    SCHEDULED = "Scheduled"
    NO_CAPABLE_AGENT = "NoCapableAgent"
    CLEARANCE_TOO_LOW = "ClearanceTooLow"
    SELECTOR_MISMATCH = "SelectorMismatch"
    OVER_BUDGET = "OverBudget"
    NO_READY_AGENT = "NoReadyAgent"
    CAPACITY_EXHAUSTED = "CapacityExhausted"
    NOT_IN_BATCH = "NotInBatch"
    OVER_QUOTA = "OverQuota"
    # The gate (approvals and dependencies).
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVAL_REJECTED = "ApprovalRejected"
    DEPENDENCY_PENDING = "DependencyPending"
    DEPENDENCY_FAILED = "DependencyFailed"
    DEPENDENCY_CYCLE = "DependencyCycle"
    # Attempts (the agent protocol and liveness).
    STARTED = "Started"
    SUCCEEDED = "Succeeded"
    ATTEMPT_FAILED = "AttemptFailed"
    ATTEMPTS_EXHAUSTED = "AttemptsExhausted"
    BACKING_OFF = "BackingOff"
    AGENT_NOT_READY = "AgentNotReady"
    AGENT_LOST = "AgentLost"
    AGENT_REFUSED = "AgentRefused"
    REPORT_IGNORED = "ReportIgnored"
    CLAIM_TIMED_OUT = "ClaimTimedOut"
    ASSIGNMENT_REFUSED = "AssignmentRefused"
    ATTEMPT_TIMED_OUT = "AttemptTimedOut"
    # Deadlines.
    DEADLINE_MISSED = "DeadlineMissed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    # The user.
    CANCELLED = "Cancelled"
    REDRIVEN = "Redriven"
