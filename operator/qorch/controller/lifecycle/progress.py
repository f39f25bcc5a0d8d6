"""Rule 2, progress: what the current attempt's report, or its agent's death, means for the task.

Only a report about the current attempt counts: its `attempt` and `agent`
must equal the assignment's (docs/protocol.md). A report for any other
attempt is ignored here (the store records it as `ReportIgnored`).

- refused: the agent declined without running it: back to the queue, no attempt used; a
  refusal about the task itself (NoHandler: the agent cannot run it) brings it back only
  after `REFUSED_DELAY`, so one task nobody can run never loops assign-refuse-requeue;
- finished: Succeeded, or a failed attempt (retry or give up);
- claimed: Running, and `attempts` counts it (also when the claim and the
  finish are first seen together: the finish path counts it then);
- the agent is dead: a claimed attempt is lost (it counts as failed); an
  unclaimed one goes back to the queue without using an attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qorch.api import protocol
from qorch.api.enums import Reason, TaskPhase
from qorch.controller import documents
from qorch.controller.lifecycle import retry as retries
from qorch.controller.lifecycle.liveness import Liveness

if TYPE_CHECKING:
    from qorch.api.protocol import Report
    from qorch.controller.documents import StatusChange
    from qorch.controller.records import Retry, TaskRecord

__all__ = ["REFUSED_DELAY", "progress"]

#: Seconds a task an agent refused as such (not for want of room) waits before it is placed again.
REFUSED_DELAY = 5.0
#: Refusals that say the agent was full or leaving: about the agent, not the task.
AGENT_REFUSALS = frozenset({protocol.OVER_CAPACITY, protocol.DRAINING})


def progress(task: TaskRecord, *, liveness: Liveness, retry: Retry, now: float) -> StatusChange | None:
    """The next transition of an Assigned or Running task, or None while it should wait."""
    report = task.report
    current = report if report is not None and report.about(task.agent, task.attempt) else None
    if current is not None and (current.refused or current.finished):
        return _ended(task, current, retry=retry, now=now)
    claimed = (current is not None and current.started) or task.phase == TaskPhase.RUNNING.value
    if liveness is Liveness.DEAD:
        if claimed:
            return retries.after_failure(
                task,
                retry=retry,
                now=now,
                reason=Reason.AGENT_LOST,
                message=f"agent {task.agent} stopped renewing its Lease during attempt {task.attempt}",
            )
        return documents.requeued(
            task,
            Reason.AGENT_NOT_READY,
            f"agent {task.agent} is not alive and had not started attempt {task.attempt}",
        )
    if claimed and task.phase == TaskPhase.ASSIGNED.value:
        return documents.running(task)
    return None


def _ended(task: TaskRecord, report: Report, *, retry: Retry, now: float) -> StatusChange:
    """The agent declined the current attempt, or finished it."""
    if report.refused:
        detail = f": {report.error}" if report.error else ""
        later = report.refused not in AGENT_REFUSALS
        return documents.requeued(
            task,
            Reason.AGENT_REFUSED,
            f"{task.agent} declined attempt {task.attempt} ({report.refused}{detail})"
            + (f"; placed again in {REFUSED_DELAY:g}s" if later else ""),
            at=now + REFUSED_DELAY if later else None,
        )
    if not report.error:
        return documents.succeeded(task)
    return retries.after_failure(task, retry=retry, now=now, reason=Reason.ATTEMPT_FAILED, message=report.error)
