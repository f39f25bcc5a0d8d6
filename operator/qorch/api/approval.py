"""The Approval kind: a person's decision on a Task that requires approval."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from qorch.api.common import ApiModel, ObjectName, SpecModel
from qorch.api.enums import ApprovalDecision

__all__ = ["ApprovalSpec", "ApprovalStatus"]


class ApprovalSpec(SpecModel):
    """Who approves or rejects which task, and why. Immutable once created."""

    task_ref: Annotated[ObjectName, Field(description="Name of the Task (same namespace) this decides.")]
    task_uid: Annotated[
        str,
        Field(
            alias="taskUID",
            max_length=128,
            description=(
                "The uid of that Task, to decide on exactly this incarnation of it (`qorch approve` fills it). "
                "Required for an Approve. A Reject without it rejects the Task of that name the operator finds."
            ),
        ),
    ] = ""
    task_generation: Annotated[
        int | None,
        Field(
            alias="taskGeneration",
            ge=1,
            description=(
                "The Task's metadata.generation the approver saw (`qorch approve` fills it). Required for an "
                "Approve, which counts only while the Task is still at that generation: editing the Task "
                "afterwards needs a new approval."
            ),
        ),
    ] = None
    decision: Annotated[ApprovalDecision, Field(description="Approve or Reject.")]
    approver: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            description="The approving user's name; the shipped admission policy requires it to be you.",
        ),
    ]
    reason: Annotated[str, Field(max_length=1024, description="Why; shown in the task's history.")] = ""


class ApprovalStatus(ApiModel):
    """Which Task incarnation, and which generation of it, the Approval was bound to. Written only by the operator."""

    task_uid: Annotated[
        str, Field(alias="taskUID", max_length=128, description="The uid of the Task this Approval decides.")
    ] = ""
    task_generation: Annotated[
        int | None,
        Field(alias="taskGeneration", ge=1, description="The Task generation this Approval decides."),
    ] = None
