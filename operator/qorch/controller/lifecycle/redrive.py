"""Rule 0b, redrive: a DeadLettered task whose `spec.redrive` was raised goes back to the queue.

`spec.redrive` is a counter the user raises (`qorch dlq redrive`); the operator
remembers the last value it acted on in `status.redrives`, so one raise is one
redrive, however often the task is seen. Dead-lettering a task marks a raise made
before it as acted on (`documents.dead_lettered`): a redrive asked for while the task
still ran must not bring back a failure that came after it. The attempt budget then counts from the
attempts already made (`status.attemptsBeforeRedrive`), and the history records it.
Dependents that failed because this task was dead-lettered stay Failed: a redrive
brings back one task, not a workflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qorch.api.enums import TaskPhase
from qorch.controller import documents

if TYPE_CHECKING:
    from qorch.controller.documents import StatusChange
    from qorch.controller.records import TaskRecord

__all__ = ["redrive"]


def redrive(task: TaskRecord) -> StatusChange | None:
    """Queued with a fresh budget, if the task is dead-lettered and a new redrive was asked for."""
    if task.phase != TaskPhase.DEAD_LETTERED.value or task.redrive <= task.redrives or task.cancel:
        return None
    return documents.redriven(task)
