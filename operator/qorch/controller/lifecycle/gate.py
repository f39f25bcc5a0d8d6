"""Rule 1, the gate: a task waits for its approval and its dependencies before it may be queued.

A dependency that ended without success (Failed, DeadLettered, Cancelled) fails the
task with reason DependencyFailed; its own dependents then fail the same way, so a
failure runs down the whole chain instead of leaving it Blocked forever. A
dependency that does not exist yet is waited for, and the task says so. Tasks whose
`dependsOn` form a cycle are held with reason DependencyCycle, the cycle named on
each of them, so the user can break it (dependsOn may be edited).

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

__all__ = ["GATED", "Verdict", "cycle", "gate"]

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
# A cycle's members all wait at the gate, so the search follows only waiting tasks, and looks at
# this many at most: a cycle longer than that is reported as waiting, not named.
_CYCLE_SEARCH = 1_000
_WAITING = frozenset({None, TaskPhase.PENDING.value, TaskPhase.BLOCKED.value, TaskPhase.AWAITING_APPROVAL.value})


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
    return Verdict(_dependencies(task, dependency), bind)


def _dependencies(task: TaskRecord, dependency: Callable[[str], TaskRecord | None]) -> StatusChange | None:
    """Failed if a dependency ended badly; held while one is missing, pending or in a cycle; else None."""
    others = [(name, dependency(name)) for name in task.depends_on]
    for name, other in others:
        if other is not None and other.phase in _ENDED_BADLY:
            return documents.dependency_failed(name, str(other.phase))
    for name, other in others:
        if other is None:
            return documents.held(
                TaskPhase.BLOCKED,
                Reason.DEPENDENCY_PENDING,
                f"waiting for task {name} to exist (dependsOn names it; create it, or remove it from dependsOn)",
            )
        if other.phase != TaskPhase.SUCCEEDED.value:
            loop = cycle(task, dependency) if other.phase in _WAITING else []
            if loop:
                return documents.held(
                    TaskPhase.BLOCKED,
                    Reason.DEPENDENCY_CYCLE,
                    f"dependsOn forms a cycle: {' -> '.join(loop)}; remove one of these edges",
                )
            return documents.held(TaskPhase.BLOCKED, Reason.DEPENDENCY_PENDING, f"waiting for {name} to succeed")
    return None


def cycle(task: TaskRecord, dependency: Callable[[str], TaskRecord | None]) -> list[str]:
    """The cycle of dependsOn edges through `task`, as names from it back to it; [] when there is none."""
    parent: dict[str, str] = {}
    stack = [(task.name, d) for d in task.depends_on]
    while stack and len(parent) < _CYCLE_SEARCH:
        came_from, name = stack.pop()
        if name in parent:
            continue
        parent[name] = came_from
        if name == task.name:
            path = [name]
            at = came_from
            while at != task.name:
                path.append(at)
                at = parent[at]
            return [task.name, *reversed(path[1:]), task.name]
        other = dependency(name)
        if other is not None and other.phase in _WAITING:
            stack.extend((name, d) for d in other.depends_on)
    return []
