"""Rule 8, admission: the last check before an assignment is written, and after an agent changes.

The scheduler core filters candidates by namespace, clearance, capabilities,
selector and budget; this rule checks the same again just before the write, so a
bug anywhere between the core and the writer (a wrong row, a stale fleet, an edited
agent) can never put a task where it must not run. It also says what becomes of a
task an agent may no longer hold because its clearance was lowered: it goes back
to the queue, its attempt withdrawn, not failed (the agent did nothing wrong, and
its breaker does not count it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qorch.api.enums import Clearance, Reason
from qorch.controller import documents

if TYPE_CHECKING:
    from qorch.controller.documents import StatusChange
    from qorch.controller.records import AgentRecord, TaskRecord

__all__ = ["declassified", "violation"]


def violation(task: TaskRecord, agent: AgentRecord) -> str:
    """The rule an assignment of `task` to `agent` would break ("" when none): namespace, clearance, ..."""
    if agent.namespace != task.namespace:
        return "namespace"
    if agent.clearance < task.classification:
        return "clearance"
    if task.requires and not set(task.requires) <= set(agent.capabilities):
        return "capabilities"
    if task.selector is not None and not task.selector.matches(dict(agent.labels)):
        return "selector"
    if task.max_cost is not None and agent.cost > task.max_cost:
        return "budget"
    return ""


def declassified(task: TaskRecord, agent: AgentRecord | None) -> StatusChange | None:
    """Back to the queue if the task's agent lost the clearance it needs; None otherwise."""
    if agent is None or agent.clearance >= task.classification:
        return None
    return documents.requeued(
        task,
        Reason.CLEARANCE_TOO_LOW,
        f"{task.agent}'s clearance is now {Clearance.at(agent.clearance)}, below the task's "
        f"{Clearance.at(task.classification)}: attempt {task.attempt} withdrawn, not counted as failed",
    )
