"""Rule 1, the gate: a task waits for its approval and its dependencies before it may be queued.

Approvals count only for the Task incarnation they are bound to (by
`spec.taskUID`, or by the operator's binding when it first sees both), so a
recreated Task never inherits an old decision. A rejection wins over any
number of approvals: one "no" from someone allowed to decide is final.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qorch.api.enums import ApprovalDecision, Reason, TaskPhase
from qorch.controller import documents

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from qorch.controller.documents import StatusChange
    from qorch.controller.records import ApprovalRecord, TaskRecord

__all__ = ["GATED", "Verdict", "gate"]

#: Phases in which the gate still decides (once an attempt is assigned it has been passed).
GATED = frozenset(
    {
        None,
        TaskPhase.PENDING.value,
        TaskPhase.BLOCKED.value,
        TaskPhase.AWAITING_APPROVAL.value,
        TaskPhase.QUEUED.value,
        TaskPhase.RETRYING.value,
    }
)
_ENDED_BADLY = frozenset({TaskPhase.FAILED.value, TaskPhase.DEAD_LETTERED.value, TaskPhase.CANCELLED.value})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer: a phase to wait in (or a final one), or None to go on; approvals to bind."""

    change: StatusChange | None
    bind: tuple[ApprovalRecord, ...] = ()


def gate(
    task: TaskRecord,
    *,
    approvals: Sequence[ApprovalRecord],
    dependency: Callable[[str], TaskRecord | None],
) -> Verdict:
    """Decide whether `task` may be queued (the caller checks `task.phase in GATED`)."""
    bind: tuple[ApprovalRecord, ...] = ()
    if task.approval_required:
        bind = tuple(a for a in approvals if not a.bound)
        mine = sorted((a for a in approvals if a.task_uid == task.uid), key=lambda a: a.name)
        rejected = next((a for a in mine if a.decision == ApprovalDecision.REJECT.value), None)
        if rejected is not None:
            return Verdict(
                documents.cancelled(
                    Reason.APPROVAL_REJECTED, f"rejected by {rejected.approver} in Approval {rejected.name}"
                ),
                bind,
            )
        if not any(a.decision == ApprovalDecision.APPROVE.value for a in mine):
            return Verdict(
                documents.held(
                    TaskPhase.AWAITING_APPROVAL,
                    Reason.AWAITING_APPROVAL,
                    f"create an Approval with taskRef {task.name} (qorch approve {task.name}) to let it run",
                ),
                bind,
            )
    for name in task.depends_on:
        other = dependency(name)
        if other is None:
            return Verdict(
                documents.held(TaskPhase.BLOCKED, Reason.DEPENDENCY_PENDING, f"waiting for task {name} to exist"),
                bind,
            )
        if other.phase in _ENDED_BADLY:
            return Verdict(
                documents.held(TaskPhase.BLOCKED, Reason.DEPENDENCY_FAILED, f"dependency {name} ended {other.phase}"),
                bind,
            )
        if other.phase != TaskPhase.SUCCEEDED.value:
            return Verdict(
                documents.held(TaskPhase.BLOCKED, Reason.DEPENDENCY_PENDING, f"waiting for {name} to succeed"),
                bind,
            )
    return Verdict(None, bind)
