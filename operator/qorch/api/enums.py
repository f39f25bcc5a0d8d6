"""String enums of the API. Their values are what users type and `kubectl get` shows."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AgentPhase",
    "ApprovalDecision",
    "BreakerState",
    "Clearance",
    "SchedulingReason",
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
        return _CLEARANCE_ORDER.index(self)


_CLEARANCE_ORDER = list(Clearance)


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


class SchedulingReason(StrEnum):
    """Why a task is not (yet) assigned; travels to the `Scheduled` condition's reason."""

    SCHEDULED = "Scheduled"
    NO_CAPABLE_AGENT = "NoCapableAgent"
    CLEARANCE_TOO_LOW = "ClearanceTooLow"
    SELECTOR_MISMATCH = "SelectorMismatch"
    NO_READY_AGENT = "NoReadyAgent"
    CAPACITY_EXHAUSTED = "CapacityExhausted"
    DEPENDENCY_FAILED = "DependencyFailed"
    DEPENDENCY_PENDING = "DependencyPending"
    AWAITING_APPROVAL = "AwaitingApproval"
    OVER_QUOTA = "OverQuota"
    OVER_BUDGET = "OverBudget"
