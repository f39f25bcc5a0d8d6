"""The objects e2e tests apply, as a user would write them: Agents, Tasks, Approvals, the policy, Leases."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

API = "qorch.io/v1alpha1"


def agent(
    name: str,
    *,
    capacity: int = 1,
    pool: str = "",
    capabilities: tuple[str, ...] = ("code",),
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An Agent labelled `pool=<pool>` (its own name by default) and `agent=<name>`, for pool selectors."""
    return {
        "apiVersion": API,
        "kind": "Agent",
        "metadata": {"name": name, "labels": {"pool": pool or name, "agent": name, **(labels or {})}},
        "spec": {"capabilities": list(capabilities), "capacity": capacity, **spec},
    }


def agents(prefix: str, count: int, capacity: int, **spec: Any) -> list[dict[str, Any]]:
    """`count` Agents `<prefix>-<i>` in pool `<prefix>`."""
    return [agent(f"{prefix}-{i}", capacity=capacity, pool=prefix, **spec) for i in range(count)]


def task(name: str, *, requires: tuple[str, ...] = ("code",), **spec: Any) -> dict[str, Any]:
    """A Task whose goal is its name."""
    return {
        "apiVersion": API,
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"goal": name, "requires": list(requires), **spec},
    }


def tasks(prefix: str, count: int, **spec: Any) -> str:
    """`count` Tasks `<prefix>-<i>`, as one YAML stream."""
    return yaml.safe_dump_all([task(f"{prefix}-{i}", **spec) for i in range(count)])


def approval(
    name: str,
    task_name: str,
    decision: str = "Approve",
    approver: str = "qorch-admin",
    *,
    of: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An Approval (the admin's own name as approver, as the admission policy requires).

    `of`: the Task as read from the apiserver; its uid and generation are named, as `qorch approve`
    does (the CRD requires both for an Approve).
    """
    spec: dict[str, Any] = {"taskRef": task_name, "decision": decision, "approver": approver}
    if of is not None:
        spec.update({"taskUID": of["metadata"]["uid"], "taskGeneration": of["metadata"]["generation"]})
    return {"apiVersion": API, "kind": "Approval", "metadata": {"name": name}, "spec": spec}


def policy(**spec: Any) -> str:
    """SchedulingPolicy `default` (a 30 s agent grace unless said otherwise), as YAML.

    Many tests' agents are only a held Lease that never claims: an hour's claim timeout
    keeps their assignments in place unless a test asks for less.
    """
    return yaml.safe_dump(
        {"apiVersion": API, "kind": "SchedulingPolicy", "metadata": {"name": "default"},
         "spec": {"agentGraceSeconds": 30, "claimTimeoutSeconds": 3600, **spec}}
    )  # fmt: skip


def lease(agent_name: str, *, duration: int = 3600, skew: float = 0.0) -> dict[str, Any]:
    """An agent's liveness Lease, renewed now (by a clock `skew` seconds off), valid for `duration` seconds."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=skew)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": f"qorch-agent-{agent_name}"},
        "spec": {
            "holderIdentity": agent_name,
            "leaseDurationSeconds": duration,
            "renewTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }


def stream(*documents: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Objects (or lists of them) as one YAML stream for `kubectl apply -f -`."""
    flat: list[dict[str, Any]] = []
    for document in documents:
        flat += document if isinstance(document, list) else [document]
    return yaml.safe_dump_all(flat)
