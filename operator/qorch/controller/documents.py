"""Status documents: every change the operator makes to a Task, Agent or Approval status is built here.

The lifecycle rules and the scheduling step say *what* happens with the named
constructors below (`assigned`, `queued`, `running`, `retrying`, ...), the
way Kueue's workload helpers do; nothing else in the operator writes a status
dict by hand. A Task change renders as a JSON patch of only the fields it
touches, plus one appended history entry, so the operator never has to hold a
task's history (or anything else it does not decide on) in memory, and never
overwrites `execution`, which belongs to the agent.

Pure: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qorch.api.enums import AgentPhase, AttemptOutcome, Reason, TaskPhase
from qorch.api.task import TaskStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qorch.controller.records import AgentRecord, Breaker, TaskRecord
    from qorch.scheduler.result import Candidate

__all__ = [
    "HISTORY_LIMIT",
    "StatusChange",
    "agent_status",
    "approval_binding",
    "assigned",
    "cancelled",
    "dead_lettered",
    "deadline_exceeded",
    "deadline_message",
    "deadline_missed",
    "dependency_failed",
    "dependents",
    "held",
    "queued",
    "render",
    "requeued",
    "retrying",
    "running",
    "stamp",
    "succeeded",
]

HISTORY_LIMIT: int = TaskStatus.model_fields["history"].metadata[0].max_length  # the CRD's maxItems
_MESSAGE = 1024
_SCHEDULED = frozenset({TaskPhase.ASSIGNED.value, TaskPhase.RUNNING.value, TaskPhase.SUCCEEDED.value})


def stamp(when: float) -> str:
    """POSIX seconds -> RFC 3339 with microseconds (assignedAt once lost everything below a second)."""
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One transition of a Task's status, before it is rendered against the record it was decided on."""

    phase: TaskPhase
    reason: Reason
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)  # other top-level status fields to set
    remove: tuple[str, ...] = ()  # top-level status fields to drop
    agent: str = ""  # the agent this transition concerns (history, Events)
    attempt: int = 0
    record: bool = True  # append a history entry
    warning: bool = False  # an Event of type Warning rather than Normal
    event: bool = True  # post an Event at all
    reserve: bool = False  # an assignment: reserve a slot on `agent` until the echo
    urgent: bool = True  # a transition (written first) rather than a reason for waiting
    missed_deadline: bool = False  # also set the DeadlineMissed condition
    outcome: AttemptOutcome | None = None  # this transition ends attempt `attempt`: how (history)

    @property
    def text(self) -> str:
        """`Reason: message`, as Events and logs print it."""
        return f"{self.reason}: {self.message}" if self.message else str(self.reason)


# ---------------------------------------------------------------------- named transitions
def assigned(
    *,
    agent: str,
    attempt: int,
    epoch: int,
    when: float,
    score: float,
    probability: float,
    strategy: str,
    candidates: list[Candidate],
    user: str = "",
) -> StatusChange:
    """Placed on `agent` as attempt `attempt`; `user` is the identity its reports must come from (if known)."""
    summary = (
        f"assigned to {agent} (score {score:.3f}, probability {probability:.3f}) by {strategy} "
        "among the candidates listed"
    )
    return StatusChange(
        TaskPhase.ASSIGNED,
        Reason.SCHEDULED,
        f"attempt {attempt} assigned to {agent}",
        fields={
            "assignment": {
                "agent": agent,
                "attempt": attempt,
                "epoch": epoch,
                "assignedAt": stamp(when),
                "score": round(score, 4),
                "probability": round(probability, 4),
                "strategy": strategy,
                **({"user": user} if user else {}),
            },
            "explanation": _explanation(summary, candidates),
        },
        remove=("nextAttemptAt",),
        agent=agent,
        attempt=attempt,
        reserve=True,
    )


def queued(reason: Reason, message: str, candidates: list[Candidate], *, event: bool = True) -> StatusChange:
    """Waiting for a placement, and why it has none yet."""
    return StatusChange(
        TaskPhase.QUEUED,
        reason,
        message,
        fields={"explanation": _explanation(f"{reason}: {message}", candidates)},
        remove=("assignment", "nextAttemptAt"),
        record=False,
        warning=True,
        event=event,
        urgent=False,
    )


def held(phase: TaskPhase, reason: Reason, message: str) -> StatusChange:
    """Not eligible yet: waiting for an approval or for dependencies."""
    return StatusChange(phase, reason, message, record=False, warning=reason is Reason.DEPENDENCY_FAILED, urgent=False)


def cancelled(reason: Reason, message: str) -> StatusChange:
    """Will never run (rejected)."""
    return StatusChange(TaskPhase.CANCELLED, reason, message, remove=("assignment",), warning=True)


def dependency_failed(name: str, phase: str) -> StatusChange:
    """A dependency ended without success: this task never can run (nor can its own dependents)."""
    return StatusChange(
        TaskPhase.FAILED,
        Reason.DEPENDENCY_FAILED,
        f"dependency {name} ended {phase}, so this task cannot run",
        remove=("assignment", "nextAttemptAt"),
        warning=True,
    )


def redriven(task: TaskRecord) -> StatusChange:
    """Out of the dead-letter queue with a fresh attempt budget (spec.redrive was raised)."""
    return StatusChange(
        TaskPhase.QUEUED,
        Reason.REDRIVEN,
        f"redrive {task.redrive}: a fresh budget of attempts after {task.attempts} made",
        fields={"redrives": task.redrive, "attemptsBeforeRedrive": task.attempts},
        remove=("assignment", "nextAttemptAt"),
    )


def cancelled_by_user(message: str, agent: str = "", attempt: int = 0) -> StatusChange:
    """Stopped by `spec.cancel`; an attempt it withdraws is named (history, Event)."""
    return StatusChange(
        TaskPhase.CANCELLED,
        Reason.CANCELLED,
        message,
        remove=("assignment", "nextAttemptAt"),
        agent=agent,
        attempt=attempt,
        outcome=AttemptOutcome.CANCELLED if agent else None,
    )


def running(task: TaskRecord) -> StatusChange:
    """The agent claimed the current attempt."""
    return StatusChange(
        TaskPhase.RUNNING,
        Reason.STARTED,
        f"attempt {task.attempt} started on {task.agent}",
        fields={"attempts": task.attempts + 1},
        agent=task.agent,
        attempt=task.attempt,
    )


def succeeded(task: TaskRecord) -> StatusChange:
    """The current attempt finished without error."""
    return StatusChange(
        TaskPhase.SUCCEEDED,
        Reason.SUCCEEDED,
        f"attempt {task.attempt} completed by {task.agent}",
        fields={"attempts": task.counted},
        agent=task.agent,
        attempt=task.attempt,
        outcome=AttemptOutcome.SUCCEEDED,
    )


def requeued(task: TaskRecord, reason: Reason, message: str, *, at: float | None = None) -> StatusChange:
    """The current attempt never started (agent gone or declined): back to the queue, nothing counted.

    Its attempt identity is used up all the same: the next assignment gets a new one,
    so a report about this one can never be mistaken for a report about the next.
    With `at`, it waits `Retrying` until then (no attempt spent) rather than queued at once.
    """
    return StatusChange(
        TaskPhase.RETRYING if at is not None else TaskPhase.QUEUED,
        reason,
        message,
        fields={"nextAttemptAt": stamp(at)} if at is not None else {},
        remove=("assignment",) if at is not None else ("assignment", "nextAttemptAt"),
        agent=task.agent,
        attempt=task.attempt,
        warning=True,
        outcome=AttemptOutcome.REFUSED if reason is Reason.AGENT_REFUSED else AttemptOutcome.WITHDRAWN,
    )


def retrying(
    task: TaskRecord, reason: Reason, message: str, *, at: float | None, outcome: AttemptOutcome
) -> StatusChange:
    """The current attempt failed (`outcome`) and another one is due (`at`, or at once when None)."""
    fields: dict[str, Any] = {"attempts": task.counted}
    remove: tuple[str, ...] = ("assignment",)
    if at is None:
        phase = TaskPhase.QUEUED
        remove += ("nextAttemptAt",)
    else:
        phase = TaskPhase.RETRYING
        fields["nextAttemptAt"] = stamp(at)
    return StatusChange(
        phase,
        reason,
        message,
        fields=fields,
        remove=remove,
        agent=task.agent,
        attempt=task.attempt,
        warning=True,
        outcome=outcome,
    )


def dead_lettered(task: TaskRecord, message: str, *, outcome: AttemptOutcome = AttemptOutcome.FAILED) -> StatusChange:
    """The current attempt failed (`outcome`) and it was the last one allowed: to the dead-letter queue.

    A `spec.redrive` raised before this (while the task still ran) is marked acted on, so
    only a redrive asked for once the task is dead-lettered brings it back.
    """
    fields: dict[str, Any] = {"attempts": task.counted}
    if task.redrive > task.redrives:
        fields["redrives"] = task.redrive
    return StatusChange(
        TaskPhase.DEAD_LETTERED,
        Reason.ATTEMPTS_EXHAUSTED,
        message,
        fields=fields,
        remove=("assignment", "nextAttemptAt"),
        agent=task.agent,
        attempt=task.attempt,
        warning=True,
        outcome=outcome,
    )


def deadline_exceeded(task: TaskRecord) -> StatusChange:
    """The deadline passed unfinished and the task asked to fail then (`failOnDeadline`).

    Removing the assignment withdraws a running attempt, as a cancel does: the agent
    runtime cancels the handler and the slot is free at once.
    """
    withdrawn = f"; attempt {task.attempt} on {task.agent} was stopped" if task.agent else ""
    return StatusChange(
        TaskPhase.FAILED,
        Reason.DEADLINE_EXCEEDED,
        f"{deadline_message(task)} and failOnDeadline is true{withdrawn}",
        remove=("assignment", "nextAttemptAt"),
        agent=task.agent,
        attempt=task.attempt,
        warning=True,
        missed_deadline=True,
        outcome=AttemptOutcome.WITHDRAWN if task.agent else None,
    )


def dependents(names: list[str], total: int) -> list[dict[str, Any]]:
    """The JSON patch that says which tasks depend on this one (the status exists already)."""
    return [
        {"op": "add", "path": "/status/dependents", "value": names},
        {"op": "add", "path": "/status/dependentsTotal", "value": total},
    ]


def deadline_missed(task: TaskRecord, when: float) -> list[dict[str, Any]]:
    """The JSON patch that adds the DeadlineMissed condition and nothing else (the task goes on)."""
    condition = _missed_condition(task, stamp(when))
    if not task.has("conditions"):
        return [{"op": "add", "path": "/status/conditions", "value": [condition]}]
    return [{"op": "add", "path": "/status/conditions/-", "value": condition}]


def deadline_message(task: TaskRecord) -> str:
    """What the DeadlineMissed condition and Event say."""
    deadline = stamp(task.deadline) if task.deadline is not None else "unknown"
    return f"the deadline {deadline} passed before the task finished"


def _missed_condition(task: TaskRecord, since: str) -> dict[str, Any]:
    return {
        "type": Reason.DEADLINE_MISSED.value,
        "status": "True",
        "reason": Reason.DEADLINE_MISSED.value,
        "message": deadline_message(task),
        "lastTransitionTime": since,
        "observedGeneration": task.generation,
    }


def _explanation(summary: str, candidates: list[Candidate]) -> dict[str, Any]:
    return {
        "summary": summary[:_MESSAGE],
        "candidates": [
            {"agent": c.agent, "score": round(c.score, 4), "probability": round(c.probability, 4)} for c in candidates
        ],
    }


# ---------------------------------------------------------------------- rendering
def render(change: StatusChange, task: TaskRecord, when: float) -> list[dict[str, Any]]:
    """The JSON patch operations that apply `change` to the status `task` was read with.

    `add` replaces a member that exists; `remove` is emitted only for members the
    record says are present (a JSON patch removing an absent member fails). The
    writer prepends the resourceVersion that makes it compare-and-set.
    """
    now = stamp(when)
    conditions = [
        {
            "type": "Scheduled",
            "status": "True" if change.phase.value in _SCHEDULED else "False",
            "reason": change.reason.value,
            "message": change.message[:_MESSAGE],
            "lastTransitionTime": now,
            "observedGeneration": task.generation,
        }
    ]
    if task.deadline_missed or change.missed_deadline:  # the conditions are written whole: keep it
        conditions.append(_missed_condition(task, task.deadline_missed or now))
    values: dict[str, Any] = {
        "phase": change.phase.value,
        "conditions": conditions,
        "observedGeneration": task.generation,
        **change.fields,
    }
    entry = _entry(change, task, now) if change.record else None
    if entry is not None:
        values["historyTotal"] = task.history_total + 1  # kept when old entries are dropped
    if not task.present:
        if entry is not None:
            values["history"] = [entry]
        return [{"op": "add", "path": "/status", "value": values}]
    ops: list[dict[str, Any]] = [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in values.items()]
    ops += [{"op": "remove", "path": f"/status/{k}"} for k in change.remove if task.has(k) and k not in values]
    if entry is not None:
        if not task.has("history"):
            ops.append({"op": "add", "path": "/status/history", "value": [entry]})
        else:
            ops += [{"op": "remove", "path": "/status/history/0"}] * max(0, task.history_len - HISTORY_LIMIT + 1)
            ops.append({"op": "add", "path": "/status/history/-", "value": entry})
    return ops


def _entry(change: StatusChange, task: TaskRecord, now: str) -> dict[str, Any]:
    """The history entry of `change`; one that ends an attempt says how, and when its handler ran."""
    entry: dict[str, Any] = {
        "time": now,
        "phase": change.phase.value,
        "agent": change.agent,
        "attempt": change.attempt,
        "reason": change.reason.value,
        "message": change.message[:_MESSAGE],
    }
    if change.outcome is not None:
        entry["outcome"] = change.outcome.value
        report = task.report
        if report is not None and report.about(change.agent, change.attempt):
            if report.started_at:
                entry["startedAt"] = report.started_at
            if report.finished_at:
                entry["finishedAt"] = report.finished_at
    return entry


def agent_status(
    agent: AgentRecord,
    *,
    phase: AgentPhase,
    load: int,
    heartbeat: str,
    reason: str,
    message: str,
    when: float,
    breaker: Breaker | None = None,
) -> dict[str, Any]:
    """The merge patch of an Agent's status: phase, load, heartbeat and the Ready condition.

    The condition keeps its lastTransitionTime while its reason stays the same.
    """
    since = agent.ready_since if agent.ready_reason == reason and agent.ready_since else stamp(when)
    status: dict[str, Any] = {
        "phase": phase.value,
        "activeTasks": load,
        "observedGeneration": agent.generation,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if phase is AgentPhase.READY else "False",
                "reason": reason,
                "message": message[:_MESSAGE],
                "lastTransitionTime": since,
                "observedGeneration": agent.generation,
            }
        ],
    }
    if heartbeat:
        status["lastHeartbeat"] = heartbeat
    if breaker is not None:
        status["breaker"] = {
            "state": breaker.state.value,
            "consecutiveFailures": breaker.failures,
            "openUntil": stamp(breaker.open_until) if breaker.open_until is not None else None,
        }
    return {"status": status}


def approval_binding(task_uid: str, generation: int) -> dict[str, Any]:
    """The merge patch that binds an Approval to one Task incarnation, at the generation it decides."""
    return {"status": {"taskUID": task_uid, "taskGeneration": generation}}
