"""Object bodies as the apiserver returns them, for unit tests of the controller (no cluster)."""

from __future__ import annotations

import itertools
from typing import Any

_VERSIONS = itertools.count(1000)


def version() -> str:
    """A fresh resourceVersion (increasing, like etcd's)."""
    return str(next(_VERSIONS))


def task(
    name: str,
    *,
    namespace: str = "ns",
    uid: str | None = None,
    requires: list[str] | None = None,
    priority: int = 500,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Task body."""
    body: dict[str, Any] = {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "Task",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "resourceVersion": version(),
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"goal": f"do {name}", "requires": requires or [], "priority": priority, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def assigned(agent: str, attempt: int = 1, *, phase: str = "Assigned", **status: Any) -> dict[str, Any]:
    """A status with an assignment."""
    return {
        "phase": phase,
        "assignment": {"agent": agent, "attempt": attempt, "assignedAt": "2026-01-01T00:00:01.000000Z"},
        "attempts": attempt - 1 if phase == "Assigned" else attempt,
        **status,
    }


def execution(agent: str, attempt: int, *, finished: bool = False, error: str = "", refused: str = "") -> dict:
    """An agent's report."""
    report: dict[str, Any] = {"agent": agent, "attempt": attempt}
    if not refused:
        report["startedAt"] = "2026-01-01T00:00:02.000000Z"
    if finished:
        report["finishedAt"] = "2026-01-01T00:00:03.000000Z"
        report["result"] = "" if error else "done"
    if error:
        report["error"] = error
    if refused:
        report["refused"] = refused
    return report


def agent(
    name: str,
    *,
    namespace: str = "ns",
    capabilities: list[str] | None = None,
    capacity: int = 1,
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An Agent body."""
    return {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "Agent",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "resourceVersion": version(),
            "generation": 1,
            "labels": labels or {},
        },
        "spec": {"capabilities": capabilities or [], "capacity": capacity, **spec},
    }


def lease(agent_name: str, *, namespace: str = "ns", duration: int | None = 10, holder: str | None = None) -> dict:
    """An agent's liveness Lease, freshly renewed."""
    spec: dict[str, Any] = {
        "holderIdentity": agent_name if holder is None else holder,
        "renewTime": "2026-01-01T00:00:00Z",
    }
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    return {
        "metadata": {"name": f"qorch-agent-{agent_name}", "namespace": namespace, "resourceVersion": version()},
        "spec": spec,
    }


def approval(
    name: str,
    task_name: str,
    decision: str = "Approve",
    *,
    namespace: str = "ns",
    task_uid: str = "",
    bound: str = "",
    generation: int = 1,
    task_generation: int = 0,
) -> dict[str, Any]:
    """An Approval body; `bound` names that task uid at `generation`.

    An Approve names it in its spec (as `qorch approve` writes it), a Reject in its status (as the operator binds it).
    """
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": version()},
        "spec": {"taskRef": task_name, "decision": decision, "approver": "alice"},
    }
    if task_uid:
        body["spec"]["taskUID"] = task_uid
    if task_generation:
        body["spec"]["taskGeneration"] = task_generation
    if bound and decision == "Approve":
        body["spec"].update({"taskUID": bound, "taskGeneration": generation})
    elif bound:
        body["status"] = {"taskUID": bound, "taskGeneration": generation}
    return body
