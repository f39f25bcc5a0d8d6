"""The Task kind: one unit of agent work, and everything the operator says about it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Self

from pydantic import ConfigDict, Field, model_validator

from qorch.api.common import (
    ApiModel,
    CapabilityList,
    ClearanceField,
    Conditions,
    LabelSelector,
    ObjectName,
    SpecModel,
    cel,
)
from qorch.api.enums import AttemptOutcome, Clearance, Strategy, TaskPhase

__all__ = [
    "INPUT_MAX_ENTRIES",
    "INPUT_MAX_VALUE_BYTES",
    "ApprovalRequirement",
    "Assignment",
    "Budget",
    "Candidate",
    "Execution",
    "Explanation",
    "HistoryEntry",
    "RetryPolicy",
    "TaskSpec",
    "TaskStatus",
]

INPUT_MAX_ENTRIES = 32
INPUT_MAX_VALUE_BYTES = 4096


class RetryPolicy(SpecModel):
    """How failed attempts are retried: exponential backoff, capped."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.maxBackoffSeconds >= self.backoffSeconds",
                    "maxBackoffSeconds must be at least backoffSeconds: raise maxBackoffSeconds or lower "
                    "backoffSeconds",
                    field_path=".maxBackoffSeconds",
                )
            ]
        }
    )

    max_attempts: Annotated[int, Field(ge=1, le=20, description="Attempts in all, the first one included.")] = 3
    backoff_seconds: Annotated[int, Field(ge=0, le=3600, description="Delay before the first retry.")] = 10
    max_backoff_seconds: Annotated[
        int,
        Field(ge=0, le=86_400, description="Upper bound of the doubling delay between retries."),
    ] = 300

    @model_validator(mode="after")
    def _backoff_bounds(self) -> Self:
        if self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError(
                "maxBackoffSeconds must be at least backoffSeconds: raise maxBackoffSeconds or lower backoffSeconds"
            )
        return self


class ApprovalRequirement(SpecModel):
    """Whether a person must approve the task (with an Approval object) before it is scheduled."""

    required: Annotated[bool, Field(description="Hold the task in AwaitingApproval until approved.")] = False


class Budget(SpecModel):
    """Cost limits for this task's provider routing."""

    max_cost: Annotated[float, Field(ge=0, le=1_000_000, description="Only agents with costPerTask <= this.")]


InputValue = Annotated[str, Field(max_length=INPUT_MAX_VALUE_BYTES)]
InputKey = Annotated[str, Field(max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


class TaskSpec(SpecModel):
    """What to do, what it needs, how urgent and how sensitive it is. Written by users or GitOps."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.requires) == has(oldSelf.requires) && "
                    "(!has(self.requires) || self.requires == oldSelf.requires)",
                    "requires cannot change after creation: delete and recreate the task to change its capabilities",
                    field_path=".requires",
                ),
                cel(
                    "self.classification == oldSelf.classification",
                    "classification cannot change after creation: delete and recreate the task to reclassify it",
                    field_path=".classification",
                ),
                cel(
                    "!has(oldSelf.approval) || !oldSelf.approval.required || (has(self.approval) && "
                    "self.approval == oldSelf.approval && self.goal == oldSelf.goal && "
                    "has(self.input) == has(oldSelf.input) && (!has(self.input) || self.input == oldSelf.input))",
                    "goal, input and approval cannot change on a task that requires approval, because the approver "
                    "decided on them: delete and recreate the task to change them",
                    field_path=".goal",
                ),
                cel(
                    "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
                    "a cancelled task stays cancelled: create a new task to run the work again",
                    field_path=".cancel",
                ),
                cel(
                    "!has(oldSelf.redrive) || (has(self.redrive) && self.redrive >= oldSelf.redrive)",
                    "redrive only counts up: qorch dlq redrive sets it to one more than before",
                    field_path=".redrive",
                ),
            ]
        }
    )

    goal: Annotated[str, Field(min_length=1, max_length=4096, description="What the agent should achieve.")]
    requires: Annotated[CapabilityList, Field(description="Capabilities the agent must have (all of them).")] = []
    priority: Annotated[int, Field(ge=0, le=1000, description="0 (lowest) to 1000 (highest); may change.")] = 500
    classification: Annotated[
        ClearanceField,
        Field(description="Sensitivity; only agents with clearance >= this run it. Immutable."),
    ] = Clearance.INTERNAL
    depends_on: Annotated[
        list[ObjectName],
        Field(
            max_length=64,
            description="Tasks in this namespace that must succeed first.",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = []
    deadline: Annotated[
        dt.datetime | None,
        Field(
            description=(
                "When the task should have finished (RFC 3339). Passing it unfinished sets the DeadlineMissed "
                "condition, posts an Event and counts in qorch_deadline_misses_total; the scheduler favours "
                "tasks as their deadline nears."
            )
        ),
    ] = None
    # No schema default: the apiserver would write it into every Task.
    fail_on_deadline: Annotated[
        bool | None,
        Field(description="Set true to fail the task (reason DeadlineExceeded) when its deadline passes unfinished."),
    ] = None
    timeout_seconds: Annotated[
        int | None,
        Field(
            ge=1,
            le=604_800,
            description=(
                "The longest one attempt may run, in seconds: the agent runtime cancels the handler then "
                "(a TimeoutError), and the operator fails the attempt itself (AttemptTimedOut) when no report "
                "came agentGraceSeconds later."
            ),
        ),
    ] = None
    retry: Annotated[RetryPolicy | None, Field(description="Retries; the policy's default when unset.")] = None
    approval: Annotated[ApprovalRequirement | None, Field(description="Human approval gate.")] = None
    agent_selector: Annotated[LabelSelector | None, Field(description="Only agents whose labels match.")] = None
    entanglement_group: Annotated[
        str,
        Field(
            max_length=63,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
            description="Tasks of one group are pulled toward correlated agents.",
        ),
    ] = ""
    budget: Annotated[Budget | None, Field(description="Cost limit for provider routing.")] = None
    input: Annotated[
        dict[InputKey, InputValue],
        Field(
            max_length=INPUT_MAX_ENTRIES,
            description=(
                f"Small named inputs for the handler: at most {INPUT_MAX_ENTRIES} entries of at most "
                f"{INPUT_MAX_VALUE_BYTES} characters. Put structured data in a JSON string; keep large data "
                "elsewhere and pass a reference."
            ),
        ),
    ] = {}

    # No schema default for cancel and redrive: the apiserver would write them into every Task
    # (bytes in etcd, in every watch event, in every list) for a field almost none sets.
    cancel: Annotated[
        bool | None,
        Field(
            description=(
                "Set true to stop the task in any phase (qorch cancel): a queued task never runs, a running "
                "attempt's handler is cancelled and its slot freed. It cannot be set back to false."
            )
        ),
    ] = None

    redrive: Annotated[
        int | None,
        Field(
            ge=0,
            le=1000,
            description=(
                "Raise by one to give a DeadLettered task a fresh attempt budget (qorch dlq redrive); "
                "it only counts up."
            ),
        ),
    ] = None


class Assignment(ApiModel):
    """Where the scheduler placed the task, and why it was confident.

    `attempt` with the task's uid is the attempt identity of the agent protocol
    (docs/protocol.md): the agent claims and reports exactly that attempt.
    """

    agent: Annotated[str, Field(max_length=253, description="The Agent's name.")]
    attempt: Annotated[
        int,
        Field(ge=1, le=1_000_000, description="The attempt this assignment is for; the agent reports against it."),
    ] = 1
    epoch: Annotated[int, Field(ge=0, description="The operator's lease epoch (leaseTransitions) when decided.")] = 0
    assigned_at: Annotated[dt.datetime | None, Field(description="When the decision was written.")] = None
    score: Annotated[float, Field(description="Weighted score of the chosen agent, 0..1.")] = 0.0
    probability: Annotated[float, Field(ge=0, le=1, description="Born probability of the chosen agent.")] = 0.0
    strategy: Annotated[Strategy, Field(description="The strategy that decided.")] = Strategy.QUANTUM
    user: Annotated[
        str,
        Field(
            max_length=512,
            description=(
                "The Kubernetes user the assigned agent reports as (system:serviceaccount:NAMESPACE:NAME, from its "
                "Agent's spec.serviceAccountName when assigned). The admission policy qorch-task-status-writer "
                "lets only this user write status.execution while the assignment stands; empty: any writer RBAC "
                "allows (docs/security.md)."
            ),
        ),
    ] = ""


class Candidate(ApiModel):
    """One agent the scheduler considered."""

    agent: Annotated[str, Field(max_length=253, description="The Agent's name.")]
    score: Annotated[float, Field(description="Its weighted score, 0..1.")] = 0.0
    probability: Annotated[float, Field(ge=0, le=1, description="Its Born probability.")] = 0.0


class Explanation(ApiModel):
    """Why the task went where it went, or why it is still waiting."""

    summary: Annotated[str, Field(max_length=1024, description="One sentence for humans.")] = ""
    candidates: Annotated[list[Candidate], Field(max_length=5, description="Best candidates, best first.")] = []


class Execution(ApiModel):
    """What the agent runtime reports about one attempt. Written only by the agent, compare-and-set.

    A report counts only when `attempt` and `agent` equal the current assignment's
    (docs/protocol.md); anything else is ignored and recorded as `ReportIgnored`.
    """

    attempt: Annotated[int, Field(ge=0, le=1_000_000, description="The attempt this report is about.")] = 0
    agent: Annotated[str, Field(max_length=253, description="The Agent reporting.")] = ""
    refused: Annotated[
        str,
        Field(
            max_length=128,
            description="Set when the agent declined the attempt without running it (e.g. OverCapacity).",
        ),
    ] = ""
    started_at: Annotated[dt.datetime | None, Field(description="When the handler started.")] = None
    finished_at: Annotated[dt.datetime | None, Field(description="When the handler finished.")] = None
    result: Annotated[str, Field(max_length=32_768, description="The handler's result (text or JSON).")] = ""
    error: Annotated[str, Field(max_length=4096, description="The error of a failed attempt.")] = ""


class HistoryEntry(ApiModel):
    """One transition in the task's life (the list keeps the latest 20; historyTotal counts them all)."""

    # The entry that ends an attempt also says how it ended (`outcome`) and, from the agent's
    # report, when its handler started and finished. With the task's uid, `attempt` is the
    # attempt's identity (docs/protocol.md).

    time: Annotated[dt.datetime, Field(description="When it happened.")]
    phase: Annotated[TaskPhase, Field(description="The phase entered.")]
    agent: Annotated[str, Field(max_length=253, description="The agent involved, if any.")] = ""
    attempt: Annotated[int, Field(ge=0, le=1_000_000, description="The attempt involved, if any.")] = 0
    reason: Annotated[str, Field(max_length=128, description="A CamelCase reason.")] = ""
    message: Annotated[str, Field(max_length=1024, description="Details.")] = ""
    # No schema defaults: only the entry that ends an attempt carries these.
    outcome: Annotated[
        AttemptOutcome | None,
        Field(description="On the entry that ends an attempt: how it ended."),
    ] = None
    started_at: Annotated[
        dt.datetime | None, Field(description="When the attempt's handler started, as its agent reported.")
    ] = None
    finished_at: Annotated[
        dt.datetime | None, Field(description="When the attempt's handler finished, as its agent reported.")
    ] = None


#: How many dependents a Task's status names (dependentsTotal counts them all).
DEPENDENTS_SHOWN = 100


class TaskStatus(ApiModel):
    """What the operator (and, for execution, the agent) says about the task."""

    phase: Annotated[TaskPhase | None, Field(description="Where the task is in its life.")] = None
    assignment: Annotated[Assignment | None, Field(description="The current placement.")] = None
    attempts: Annotated[int, Field(ge=0, description="Attempts started so far.")] = 0
    redrives: Annotated[int, Field(ge=0, description="spec.redrive values acted on: redrives from the DLQ.")] = 0
    attempts_before_redrive: Annotated[
        int, Field(ge=0, description="Attempts started before the last redrive (the budget counts from here).")
    ] = 0
    history: Annotated[list[HistoryEntry], Field(max_length=20, description="Latest transitions.")] = []
    history_total: Annotated[
        int,
        Field(ge=0, description="History entries ever recorded; those beyond the latest 20 were dropped from history."),
    ] = 0
    dependents: Annotated[
        list[ObjectName],
        Field(
            max_length=DEPENDENTS_SHOWN,
            description=(
                f"Tasks of this namespace whose dependsOn names this one (its children in the DAG; its parents are "
                f"spec.dependsOn), the first {DEPENDENTS_SHOWN} by name. Written by the operator."
            ),
        ),
    ] = []
    dependents_total: Annotated[int, Field(ge=0, description="How many tasks depend on this one.")] = 0
    next_attempt_at: Annotated[dt.datetime | None, Field(description="When a Retrying task is queued again.")] = None
    explanation: Annotated[Explanation | None, Field(description="Why it is where it is.")] = None
    execution: Annotated[Execution | None, Field(description="Written by the agent runtime.")] = None
    conditions: Conditions = []
    observed_generation: Annotated[int | None, Field(ge=0, description="The generation last acted on.")] = None
