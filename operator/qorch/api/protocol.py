"""The agent protocol's contract: attempt identity, who may claim, and what each report says.

Both sides import this module: agent runtimes (`qorch.agent`) build their claims
and reports with it, and the operator's lifecycle rules read reports with it.
`docs/protocol.md` is the prose. Everything here is pure: it builds documents
and judges bodies, and never touches the network.

The rules, in one breath: the operator assigns attempt N of a task (identity:
the task's uid and N). Only the agent the assignment names may claim N, with a
compare-and-set patch on the version it read, and only if N was never claimed.
Every report names N and the agent; the operator counts a report only when
both equal the current assignment's. So an attempt runs at most once, a late
report from a zombie never lands on a newer attempt, and a report addressed by
name never lands on a recreated Task (its uid differs, and so does every
resourceVersion it will ever have).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DRAINING",
    "FINAL_PHASES",
    "NO_HANDLER",
    "OVER_CAPACITY",
    "PROVIDER_ERROR",
    "AttemptId",
    "Report",
    "cancelled",
    "claim_patch",
    "claimable",
    "current",
    "finish_patch",
    "provider_error",
    "refuse_patch",
    "timestamp",
]

#: The agent declined an attempt because it already runs `capacity` attempts.
OVER_CAPACITY = "OverCapacity"
#: The agent declined because it is shutting down.
DRAINING = "Draining"
#: The agent has no handler for what the task requires.
NO_HANDLER = "NoHandler"
_MESSAGE = 1024
#: The error line of an attempt that failed because of its LLM provider (rate limit, 5xx,
#: overload): `ProviderError: [<Kind>] <message>`, as the runtime writes a `ProviderError`.
#: It counts against the provider's breaker, not the agent's (docs/workflows.md).
PROVIDER_ERROR = "ProviderError"
_PROVIDER_ERROR = re.compile(r"^ProviderError: \[([A-Za-z][A-Za-z0-9]{0,63})\]")


def provider_error(error: str) -> str:
    """The kind of provider error an attempt's error line reports (e.g. RateLimited), or ""."""
    found = _PROVIDER_ERROR.match(error)
    return found.group(1) if found else ""


def timestamp(when: dt.datetime | None = None) -> str:
    """RFC 3339 with microseconds: two events in one second still order correctly."""
    return (when or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class AttemptId:
    """One attempt of one Task incarnation: the unit that runs at most once."""

    task_uid: str
    attempt: int

    def __str__(self) -> str:
        """`<uid>/<attempt>`, as logs and Events print it."""
        return f"{self.task_uid}/{self.attempt}"


@dataclass(frozen=True, slots=True)
class Report:
    """`status.execution` as read back: which attempt, by whom, how far it got."""

    attempt: int
    agent: str
    started: bool
    finished: bool
    error: str
    refused: str
    started_at: str = ""  # as the agent wrote it (RFC 3339), "" when absent
    finished_at: str = ""

    @classmethod
    def of(cls, execution: Mapping[str, Any] | None) -> Report | None:
        """Parse a status.execution object (None when absent or empty)."""
        if not execution:
            return None
        return cls(
            attempt=int(execution.get("attempt") or 0),
            agent=str(execution.get("agent") or ""),
            started=bool(execution.get("startedAt")),
            finished=bool(execution.get("finishedAt")),
            error=str(execution.get("error") or "")[:_MESSAGE],
            refused=str(execution.get("refused") or ""),
            started_at=str(execution.get("startedAt") or ""),
            finished_at=str(execution.get("finishedAt") or ""),
        )

    @property
    def provider_error(self) -> str:
        """The kind of provider error the attempt failed with, or "" (docs/protocol.md)."""
        return provider_error(self.error)

    def about(self, agent: str, attempt: int) -> bool:
        """Whether this report is about attempt `attempt` run by `agent`."""
        return self.attempt == attempt and self.agent == agent

    @property
    def claimed(self) -> bool:
        """The agent took the attempt (it did not refuse it)."""
        return self.started and not self.refused


#: Phases a task never leaves: nothing is claimed or reported in them.
FINAL_PHASES = frozenset({"Succeeded", "Failed", "DeadLettered", "Cancelled"})


def claimable(body: Mapping[str, Any], agent: str) -> AttemptId | None:
    """The attempt `agent` may claim on this Task body, or None.

    Claimable means: the task is Assigned, the assignment names `agent`, the user
    has not cancelled it, and no report shows that attempt claimed already (a
    refusal may be taken back).
    """
    status = body.get("status") or {}
    assignment = status.get("assignment") or {}
    if status.get("phase") != "Assigned" or assignment.get("agent") != agent or cancelled(body):
        return None
    attempt = int(assignment.get("attempt") or 0)
    if attempt < 1:
        return None
    report = Report.of(status.get("execution"))
    if report is not None and report.attempt == attempt and report.claimed:
        return None
    return AttemptId(str(body["metadata"]["uid"]), attempt)


def cancelled(body: Mapping[str, Any]) -> bool:
    """Whether the user cancelled the task (`spec.cancel`): no claim, and a running handler stops."""
    return (body.get("spec") or {}).get("cancel") is True


def current(body: Mapping[str, Any], agent: str) -> AttemptId | None:
    """The attempt the assignment names for `agent`, in any active phase (for finishing)."""
    status = body.get("status") or {}
    assignment = status.get("assignment") or {}
    if status.get("phase") not in {"Assigned", "Running"} or assignment.get("agent") != agent:
        return None
    return AttemptId(str(body["metadata"]["uid"]), int(assignment.get("attempt") or 0))


def _patch(resource_version: str, execution: dict[str, Any]) -> dict[str, Any]:
    # resourceVersion makes it compare-and-set. It also fences a recreated Task: versions are
    # never reused across objects. (The apiserver ignores metadata.uid in a status patch, so
    # the uid is checked by the agent on the body it read, never sent as a precondition.)
    return {"metadata": {"resourceVersion": resource_version}, "status": {"execution": execution}}


def claim_patch(attempt: AttemptId, *, agent: str, resource_version: str, now: str | None = None) -> dict[str, Any]:
    """Merge patch that claims `attempt` for `agent` (replaces any older report)."""
    return _patch(
        resource_version,
        {
            "attempt": attempt.attempt,
            "agent": agent,
            "startedAt": now or timestamp(),
            "finishedAt": None,
            "result": None,
            "error": None,
            "refused": None,
        },
    )


def refuse_patch(attempt: AttemptId, *, agent: str, resource_version: str, reason: str, message: str) -> dict[str, Any]:
    """Merge patch that declines `attempt` without running it (the operator requeues it)."""
    return _patch(
        resource_version,
        {
            "attempt": attempt.attempt,
            "agent": agent,
            "startedAt": None,
            "finishedAt": None,
            "result": None,
            "error": message[:_MESSAGE],
            "refused": reason,
        },
    )


def finish_patch(
    attempt: AttemptId,
    *,
    agent: str,
    resource_version: str,
    started_at: str,
    result: str = "",
    error: str = "",
    now: str | None = None,
) -> dict[str, Any]:
    """Merge patch that reports the end of `attempt`: a result, or a one-line error."""
    return _patch(
        resource_version,
        {
            "attempt": attempt.attempt,
            "agent": agent,
            "startedAt": started_at,
            "finishedAt": now or timestamp(),
            "result": result[:32_768],
            "error": " ".join(error.split())[:4096],
            "refused": None,
        },
    )
