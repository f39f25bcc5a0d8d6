"""Rule 1, the gate: a task waits for its approval and its dependencies before it may be queued.

A dependency that ended without success (Failed, DeadLettered, Cancelled) fails the
task with reason DependencyFailed; its own dependents then fail the same way, so a
failure runs down the whole chain instead of leaving it Blocked forever. A
dependency that does not exist yet is waited for, and the task says so. Tasks whose
`dependsOn` form a cycle are held with reason DependencyCycle, the cycle named on
each of them, so the user can break it (dependsOn may be edited).

The cycle search is a walk over other tasks, so the caller says when one is worth it
(`search`: something changed that could close or break a cycle through the task), and
shares what one pass's walks learned (`Walks`): a chain of waiting tasks gated
together costs one walk down the chain, not one per task.

An Approve counts only for the Task incarnation and generation it names
(`spec.taskUID`, `spec.taskGeneration`, both required by the CRD), so a recreated
Task never inherits an old decision, and any edit of the spec after approving, a
redrive included, needs a new approval. The operator never fills them in for an
Approve: it cannot know which generation the approver saw, and binding to the one
it finds would approve an edit made between the approving and the binding. A
Reject needs neither: one without a uid rejects the incarnation it meets (the
operator records which, in its status), and a rejection wins over any number of
approvals, at any generation: one "no" from someone allowed to decide is final.
The rule looks only at the set of Approvals, never at the order they arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qorch.api.enums import ApprovalDecision, Reason, TaskPhase
from qorch.controller import documents
from qorch.controller.records import WAITING_PHASES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from qorch.controller.documents import StatusChange
    from qorch.controller.records import ApprovalRecord, TaskRecord

__all__ = ["GATED", "Verdict", "Walks", "cycle", "gate"]

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
_WAITING = WAITING_PHASES


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer: a phase to wait in (or a final one), or None to go on; approvals to bind."""

    change: StatusChange | None
    bind: tuple[ApprovalRecord, ...] = ()
    searched: bool = False  # a cycle search ran (the caller need not ask for one again)
    cycle: tuple[str, ...] = ()  # the cycle found, from the task back to it


@dataclass(slots=True)
class Walks:
    """What the cycle searches of one namespace learned, valid while no task changes (one pass of the loop)."""

    acyclic: set[str] = field(default_factory=set)  # tasks from which no cycle of waiting tasks can be reached
    loops: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)  # task -> (a cycle, its place)


def gate(
    task: TaskRecord,
    *,
    approvals: Sequence[ApprovalRecord],
    dependency: Callable[[str], TaskRecord | None],
    search: bool = True,
    walks: Walks | None = None,
) -> Verdict:
    """Decide whether `task` may be queued (the caller checks `task.phase in GATED`).

    Without `search`, a task waiting on a waiting dependency is told DependencyPending
    without looking for a cycle (the caller knows none can have formed through it).
    """
    bind: tuple[ApprovalRecord, ...] = ()
    if task.approval_required:
        mine = sorted((a for a in approvals if a.task_uid in ("", task.uid)), key=lambda a: a.name)
        bind = tuple(a for a in mine if not a.bound and a.decision == ApprovalDecision.REJECT.value)
        held = _approval(task, mine)
        if held is not None:
            return Verdict(held, bind)
    return _dependencies(task, dependency, bind, search=search, walks=walks)


def _approval(task: TaskRecord, mine: Sequence[ApprovalRecord]) -> StatusChange | None:
    """Cancelled if any decision on this incarnation rejects it; held unless one approves its current generation."""
    rejected = next((a for a in mine if a.decision == ApprovalDecision.REJECT.value), None)
    if rejected is not None:
        return documents.cancelled(
            Reason.APPROVAL_REJECTED, f"rejected by {rejected.approver} in Approval {rejected.name}"
        )
    approved = [a for a in mine if a.decision == ApprovalDecision.APPROVE.value and a.bound]
    if any(a.task_generation == task.generation for a in approved):
        return None
    ask = f"create an Approval with taskRef {task.name} (qorch approve {task.name}) to let it run"
    stale = max(approved, key=lambda a: a.task_generation, default=None)
    if stale is not None:
        ask = (
            f"Approval {stale.name} approved generation {stale.task_generation}, but the task was edited since "
            f"(generation {task.generation}): {ask} again"
        )
    return documents.held(TaskPhase.AWAITING_APPROVAL, Reason.AWAITING_APPROVAL, ask)


def _dependencies(
    task: TaskRecord,
    dependency: Callable[[str], TaskRecord | None],
    bind: tuple[ApprovalRecord, ...],
    *,
    search: bool,
    walks: Walks | None,
) -> Verdict:
    """Failed if a dependency ended badly; held while one is missing, pending or in a cycle; else None."""
    others = [(name, dependency(name)) for name in task.depends_on]
    for name, other in others:
        if other is not None and other.phase in _ENDED_BADLY:
            return Verdict(documents.dependency_failed(name, str(other.phase)), bind)
    for name, other in others:
        if other is None:
            missing = f"waiting for task {name} to exist (dependsOn names it; create it, or remove it from dependsOn)"
            return Verdict(documents.held(TaskPhase.BLOCKED, Reason.DEPENDENCY_PENDING, missing), bind)
        if other.phase != TaskPhase.SUCCEEDED.value:
            searched = search and other.phase in _WAITING
            loop = cycle(task, dependency, walks) if searched else []
            if loop:
                found = f"dependsOn forms a cycle: {' -> '.join(loop)}; remove one of these edges"
                held = documents.held(TaskPhase.BLOCKED, Reason.DEPENDENCY_CYCLE, found)
                return Verdict(held, bind, searched=True, cycle=tuple(loop))
            waiting = documents.held(TaskPhase.BLOCKED, Reason.DEPENDENCY_PENDING, f"waiting for {name} to succeed")
            return Verdict(waiting, bind, searched=searched)
    return Verdict(None, bind)


def cycle(task: TaskRecord, dependency: Callable[[str], TaskRecord | None], walks: Walks | None = None) -> list[str]:
    """The cycle of dependsOn edges through `task`, as names from it back to it; [] when there is none.

    A depth-first walk over waiting tasks, of at most `_CYCLE_SEARCH` lookups. A task whose
    every waiting dependency is known acyclic is acyclic too (it cannot lead back to
    itself, nor to any task that leads to it), so `walks` remembers it, and later walks of
    the same pass stop there. A task not waiting itself (being gated out of Queued) may
    close a cycle the others' walks did not follow: its walk does not rely on them.
    """
    walks = walks if walks is not None else Walks()
    known = walks.loops.get(task.name)
    if known is not None:
        members, at = known
        return [*members[at:], *members[:at], task.name]
    trusted = task.phase in _WAITING
    loop = _walk(task, dependency, walks.acyclic if trusted else set())
    if trusted:
        for i, member in enumerate(loop[:-1]):
            walks.loops[member] = (tuple(loop[:-1]), i)
    return loop


def _walk(task: TaskRecord, dependency: Callable[[str], TaskRecord | None], acyclic: set[str]) -> list[str]:
    """The depth-first walk of `cycle`, adding to `acyclic` every task it proves acyclic."""
    root = task.name
    path, clean, seen = [root], [True], {root}  # clean: no cycle reachable from path[i] found so far
    children: list[Iterator[str]] = [iter(task.depends_on)]
    lookups = 0
    while path:
        name = next(children[-1], None)
        if name is None:  # every dependency of path[-1] was looked at
            children.pop()
            _finish(path.pop(), clean, acyclic)
            continue
        if name == root:
            return [*path, root]
        if name in acyclic:
            continue
        if name in seen:  # on the path (a cycle not through the root), or known to reach one
            clean[-1] = False
            continue
        if lookups >= _CYCLE_SEARCH:
            return []  # too far to tell: reported as waiting, not named
        lookups += 1
        seen.add(name)
        other = dependency(name)
        if other is None or other.phase not in _WAITING:
            acyclic.add(name)  # not waiting: no cycle of waiting tasks runs through it
            continue
        path.append(name)
        children.append(iter(other.depends_on))
        clean.append(True)
    return []


def _finish(name: str, clean: list[bool], acyclic: set[str]) -> None:
    """`name` was walked to the end: acyclic if everything below it is, else neither is what led to it."""
    if clean.pop():
        acyclic.add(name)
    elif clean:
        clean[-1] = False
