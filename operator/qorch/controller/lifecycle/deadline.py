"""Rule 6, deadline: a task still unfinished when `spec.deadline` passes has missed it.

The deadline is an instant the user wrote, so it is compared with the operator's
wall clock (unlike liveness, which trusts only durations this process measured):
a clock step moves the moment a miss is noticed, which is what an absolute
deadline means. A miss is recorded once, as the DeadlineMissed condition (it
survives every later status write), so a new leader never counts it again.
With `failOnDeadline` the task fails instead of going on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qorch.controller import documents
from qorch.controller.records import FINAL_PHASES

if TYPE_CHECKING:
    from qorch.controller.documents import StatusChange
    from qorch.controller.records import TaskRecord

__all__ = ["Missed", "due", "missed"]


@dataclass(frozen=True, slots=True)
class Missed:
    """The deadline passed: `fail` is the task's end (failOnDeadline), or None when it goes on."""

    fail: StatusChange | None


def due(task: TaskRecord) -> float | None:
    """The wall time to look at the task again for its deadline, or None when there is nothing to watch."""
    if task.deadline is None or task.deadline_missed or task.phase in FINAL_PHASES:
        return None
    return task.deadline


def missed(task: TaskRecord, now: float) -> Missed | None:
    """Whether the deadline passed unfinished and that is news; None otherwise."""
    when = due(task)
    if when is None or now < when:
        return None
    return Missed(documents.deadline_exceeded(task) if task.fail_on_deadline else None)
