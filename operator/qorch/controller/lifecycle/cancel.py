"""Rule 0, cancel: `spec.cancel` stops a task in any phase that is not final, before any other rule.

It comes first so that nothing else decides for a task the user has stopped: not
the gate (it will never be queued), not the scheduler (it is taken out of the
queue), and not progress (a report the agent sends while its handler is being
cancelled does not become a failed attempt and a retry). Removing the assignment
withdraws the attempt: the agent runtime sees its task leave the current attempt
and cancels the handler, and the agent's slot is free at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qorch.controller import documents
from qorch.controller.records import ACTIVE_PHASES, FINAL_PHASES

if TYPE_CHECKING:
    from qorch.controller.documents import StatusChange
    from qorch.controller.records import TaskRecord

__all__ = ["cancel"]


def cancel(task: TaskRecord) -> StatusChange | None:
    """Cancelled, if the user asked and the task has not ended; else None (the other rules decide)."""
    if not task.cancel or task.phase in FINAL_PHASES:
        return None
    if task.phase in ACTIVE_PHASES and task.agent:
        return documents.cancelled_by_user(
            f"spec.cancel is true: attempt {task.attempt} on {task.agent} was stopped", task.agent, task.attempt
        )
    return documents.cancelled_by_user("spec.cancel is true: it will not run")
