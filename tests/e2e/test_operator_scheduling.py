"""200 Agents and 2,000 Tasks through kubectl and a real operator: every feasible task assigned once."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from typing import Any

import pytest
import yaml

from qorch.testing import Kubectl
from support.operators import OperatorFleet
from support.pools import wait_for

pytestmark = pytest.mark.e2e

LEVELS = ["public", "internal", "confidential", "secret", "topsecret"]
SKILLS = ["code", "review", "test", "research", "summarize", "write", "data", "sql"]
ZONES = ["eu", "us"]


def fleet(n_agents: int, n_tasks: int, seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Agents with ample capacity, tasks of which a known few cannot be placed."""
    rnd = random.Random(seed)
    agents = [
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": f"agent-{i}", "labels": {"zone": ZONES[i % 2]}},
            "spec": {
                "capabilities": rnd.sample(SKILLS, rnd.randint(2, 4)),
                "capacity": rnd.randint(12, 20),
                "clearance": LEVELS[1 + i % 3],
                "cordoned": i % 50 == 49,
            },
        }
        for i in range(n_agents)
    ]
    tasks = []
    for i in range(n_tasks):
        spec: dict[str, Any] = {
            "goal": f"task {i}",
            "requires": rnd.sample(SKILLS, rnd.randint(1, 2)),
            "priority": rnd.randint(0, 1000),
            "classification": LEVELS[rnd.randint(0, 3)],
        }
        if i % 100 == 1:
            spec["requires"] = ["quantum-physics"]  # nobody can
        elif i % 100 == 2:
            spec["agentSelector"] = {"matchLabels": {"zone": "mars"}}
        elif i % 100 == 3:
            spec["classification"] = "topsecret"  # no agent has that clearance
        tasks.append(
            {"apiVersion": "qorch.io/v1alpha1", "kind": "Task", "metadata": {"name": f"task-{i}"}, "spec": spec}
        )
    return agents, tasks


def feasible(agent: dict[str, Any], task: dict[str, Any]) -> bool:
    """DESIGN.md's feasibility rule, restated independently of the scheduler."""
    spec, need = agent["spec"], task["spec"]
    selector = (need.get("agentSelector") or {}).get("matchLabels", {})
    return (
        not spec["cordoned"]
        and set(need["requires"]) <= set(spec["capabilities"])
        and LEVELS.index(need["classification"]) <= LEVELS.index(spec["clearance"])
        and all(agent["metadata"]["labels"].get(k) == v for k, v in selector.items())
    )


def heartbeats(agents: list[dict[str, Any]]) -> str:
    """Liveness Leases valid for an hour: the agents stay alive for the whole test without renewing."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return yaml.safe_dump_all(
        [
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": f"qorch-agent-{a['metadata']['name']}"},
                "spec": {"holderIdentity": a["metadata"]["name"], "leaseDurationSeconds": 3600, "renewTime": now},
            }
            for a in agents
        ]
    )


POLICY = yaml.safe_dump(
    {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "SchedulingPolicy",
        "metadata": {"name": "default"},
        "spec": {"agentGraceSeconds": 3600, "claimTimeoutSeconds": 3600},  # seeded agents never claim
    }
)


def settle(kubectl: Kubectl, expected_assigned: int, timeout: float = 240) -> list[dict[str, Any]]:
    """Poll until the expected number of tasks is Assigned (or time runs out); return all tasks."""
    deadline = time.monotonic() + timeout
    while True:
        items = kubectl.json("get", "qtask")["items"]
        assigned = sum(1 for t in items if (t.get("status") or {}).get("phase") == "Assigned")
        if assigned >= expected_assigned or time.monotonic() > deadline:
            return items
        time.sleep(2)


def check_invariants(
    agents: list[dict[str, Any]], items: list[dict[str, Any]], *, capacity: bool = True
) -> dict[str, int]:
    """No task on an infeasible agent and (unless told otherwise) no agent over capacity; returns the load."""
    by_name = {a["metadata"]["name"]: a for a in agents}
    load: dict[str, int] = {}
    for task in items:
        status = task.get("status") or {}
        if status.get("phase") in {"Assigned", "Running"}:
            agent = by_name[status["assignment"]["agent"]]
            assert feasible(agent, task), (task["metadata"]["name"], agent["metadata"]["name"])
            load[agent["metadata"]["name"]] = load.get(agent["metadata"]["name"], 0) + 1
    if capacity:
        for name, used in load.items():
            assert used <= by_name[name]["spec"]["capacity"], name
    return load


def test_every_feasible_task_is_assigned_exactly_once(kubectl: Kubectl, operators: OperatorFleet) -> None:
    """Assignments, reasons, load, metrics, field ownership and kopf's footprint, all read from the API."""
    agents, tasks = fleet(200, 2000)
    kubectl.apply(POLICY)
    kubectl.apply(yaml.safe_dump_all(agents))
    kubectl.apply(heartbeats(agents))
    op = operators.start("op-a")
    started = time.monotonic()
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(tasks))
    placeable = [t for t in tasks if any(feasible(a, t) for a in agents)]
    items = settle(kubectl, len(placeable))
    elapsed = time.monotonic() - started
    assert op.popen.poll() is None, op.tail()

    by_name = {t["metadata"]["name"]: t for t in items}
    unplaced = [
        n
        for n in (t["metadata"]["name"] for t in placeable)
        if (by_name[n].get("status") or {}).get("phase") != "Assigned"
    ]
    assert unplaced == [], f"{len(unplaced)} feasible tasks not assigned after {elapsed:.0f}s"
    load = check_invariants(agents, items)
    assert sum(load.values()) == len(placeable)

    # Exactly once: one successful assignment write per assigned task, however many cycles ran.
    assert op.metric("qorch_assignments_total") == len(placeable)

    # Infeasible tasks say why, in kubectl get and describe.
    expected = {"1": "NoCapableAgent", "2": "SelectorMismatch", "3": "ClearanceTooLow"}
    for task in tasks:
        index = int(task["metadata"]["name"].split("-")[1])
        if index % 100 in (1, 2, 3):
            status = by_name[task["metadata"]["name"]]["status"]
            scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
            assert (scheduled["status"], scheduled["reason"]) == ("False", expected[str(index % 100)])
    wide = kubectl("get", "qtask", "task-1", "-o", "wide")
    assert "NoCapableAgent" in wide
    described = kubectl("describe", "qtask", "task-2")
    assert "SelectorMismatch" in described

    # Agent status: the load the operator reports is the load in the tasks, once the load write
    # (at most one per agent every 15 s) has gone out.
    def reported() -> dict[str, int]:
        return {
            a["metadata"]["name"]: a["status"].get("activeTasks", 0) for a in kubectl.json("get", "qagent")["items"]
        }

    wait_for(lambda: all(n == load.get(name, 0) for name, n in reported().items()), 40, what="agents' load", period=2)
    for agent in kubectl.json("get", "qagent")["items"]:
        assert agent["status"]["phase"] == ("Cordoned" if agent["spec"].get("cordoned") else "Ready")

    # Spec untouched: the operator owns only status, and kopf left no trace on user objects.
    for kind in ("qtask", "qagent"):
        for obj in json.loads(kubectl("get", kind, "-o", "json", "--show-managed-fields"))["items"]:
            meta = obj["metadata"]
            assert not meta.get("finalizers"), meta["name"]
            assert not any("kopf" in k for k in (meta.get("annotations") or {})), meta["name"]
            assert "kopf" not in (obj.get("status") or {})
            for entry in meta.get("managedFields", []):
                if entry["manager"] == "qorch-operator":
                    assert entry.get("subresource") == "status", (meta["name"], entry)
                    assert set(entry["fieldsV1"]) == {"f:status"}, (meta["name"], entry["fieldsV1"].keys())


def test_events_and_the_workflow_run_to_completion(kubectl: Kubectl, operators: OperatorFleet) -> None:
    """With a simulated pool executing, a DAG completes in order; Tasks get Scheduled/Unschedulable Events."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    kubectl.apply(POLICY)
    agents = [
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "worker"},
            "spec": {"capabilities": ["code"], "capacity": 2},
        },
    ]
    kubectl.apply(yaml.safe_dump_all(agents))
    tasks = [
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "first"},
            "spec": {"goal": "one", "requires": ["code"]},
        },
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "second"},
            "spec": {"goal": "two", "requires": ["code"], "dependsOn": ["first"]},
        },
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "impossible"},
            "spec": {"goal": "three", "requires": ["gpu"]},
        },
    ]
    kubectl.apply(yaml.safe_dump_all(tasks))
    operators.start("op-w")
    pool = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qorch.cli",
            "dev",
            "agents",
            f"--namespace={kubectl.namespace}",
            f"--kubeconfig={kubectl.kubeconfig}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        phases: dict[str, str] = {}
        while time.monotonic() < deadline:
            phases = {
                t["metadata"]["name"]: (t.get("status") or {}).get("phase", "")
                for t in kubectl.json("get", "qtask")["items"]
            }
            if phases.get("second") == "Succeeded":
                break
            time.sleep(1)
    finally:
        pool.terminate()
        pool.wait(timeout=10)
    assert phases == {"first": "Succeeded", "second": "Succeeded", "impossible": "Queued"}
    first = kubectl.json("get", "qtask", "first")["status"]
    second = kubectl.json("get", "qtask", "second")["status"]
    assert first["execution"]["finishedAt"] <= second["execution"]["startedAt"]  # the DAG order held
    assert first["attempts"] == 1
    events = kubectl.json("get", "events")["items"]
    seen = {(e["involvedObject"]["name"], e["reason"], e["type"]) for e in events}
    assert ("first", "Scheduled", "Normal") in seen
    assert ("impossible", "NoCapableAgent", "Warning") in seen
    assert ("second", "Succeeded", "Normal") in seen
    assert "NoCapableAgent" in kubectl("describe", "qtask", "impossible")
