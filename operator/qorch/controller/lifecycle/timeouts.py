"""Rule 7, timeouts: an attempt that waits too long for its claim, or runs too long, is taken back.

- Assigned, never claimed, for the policy's `claimTimeoutSeconds`: back to the
  queue without using an attempt (the agent may be wedged, or its claim lost).
- Running for `spec.timeoutSeconds` plus the agents' grace period with no
  report: the agent runtime cancels a handler at `timeoutSeconds` and reports a
  TimeoutError, so an attempt still running after the grace has a silent agent;
  it counts as a failed attempt (retried or dead-lettered like any other).

Both are measured on this process's monotonic clock from when it first saw the
attempt in its phase (`since`), never from timestamps another machine wrote: a
new leader starts counting afresh, so a limit may be enforced late, never early.
The compare-and-set write settles a race with the agent's claim or report: the
first write wins, the other is refused and decided again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qorch.api.enums import Reason, TaskPhase
from qorch.controller import documents
from qorch.controller.lifecycle import retry as retries

if TYPE_CHECKING:
    from qorch.controller.documents import StatusChange
    from qorch.controller.records import Retry, TaskRecord

__all__ = ["limit", "overdue"]


def limit(task: TaskRecord, *, claim_timeout: float, grace: float) -> float | None:
    """Seconds the current attempt may stay in its phase, or None when unbounded."""
    if task.phase == TaskPhase.ASSIGNED.value:
        return claim_timeout
    if task.phase == TaskPhase.RUNNING.value and task.timeout is not None:
        return task.timeout + grace
    return None


def overdue(
    task: TaskRecord, *, waited: float, claim_timeout: float, grace: float, retry: Retry, now: float
) -> StatusChange | None:
    """The attempt taken back after `waited` seconds in its phase, or None while it is within its limit."""
    bound = limit(task, claim_timeout=claim_timeout, grace=grace)
    if bound is None or waited < bound:
        return None
    if task.phase == TaskPhase.ASSIGNED.value:
        return documents.requeued(
            task,
            Reason.CLAIM_TIMED_OUT,
            f"{task.agent} did not claim attempt {task.attempt} within claimTimeoutSeconds={claim_timeout:g}",
        )
    return retries.after_failure(
        task,
        retry=retry,
        now=now,
        reason=Reason.ATTEMPT_TIMED_OUT,
        message=(
            f"attempt {task.attempt} on {task.agent} ran past timeoutSeconds={task.timeout:g} "
            f"and no report came within {grace:g}s more"
        ),
    )
