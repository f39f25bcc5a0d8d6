"""Where the operator's memory goes: the store holding A agents and T tasks, measured with tracemalloc.

Run:  .venv/bin/python bench/operator_memory.py [--agents 10000] [--tasks 100000]

No cluster: bodies shaped like the apiserver's (metadata with managedFields,
spec, a status with an assignment, history and an explanation) are fed to a
`ClusterState` through its sinks, as the informers do. Prints the bytes per
record and the top allocation sites, and the process's peak RSS. The live run
(`bench/e2e.py --stages memory`) measures the whole operator against a real
apiserver; this one says which part of it is the store.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc
from typing import Any

from qorch.controller.store import AGENTS, LEASES, TASKS, ClusterState


def _meta(name: str, namespace: str, rv: int) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "uid": f"0c5d6a8e-{rv:04x}-4b7e-9f1a-2d3c4b5a6978",
        "resourceVersion": str(rv),
        "generation": 1,
        "creationTimestamp": "2026-11-25T23:01:00Z",
        "managedFields": [
            {"manager": "kubectl-create", "operation": "Update", "apiVersion": "qorch.io/v1alpha1",
             "time": "2026-11-25T23:01:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {".": {}, "f:goal": {}, "f:priority": {}, "f:requires": {}}}},
            {"manager": "qorch-operator", "operation": "Update", "apiVersion": "qorch.io/v1alpha1",
             "time": "2026-11-25T23:01:01Z", "fieldsType": "FieldsV1", "subresource": "status",
             "fieldsV1": {"f:status": {".": {}, "f:assignment": {}, "f:phase": {}, "f:history": {}}}},
        ],
    }  # fmt: skip


def task_body(i: int, namespace: str) -> dict[str, Any]:
    """An assigned Task, as the watch delivers it."""
    skills = ["code", "review", "write", "data"]
    return {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "Task",
        "metadata": _meta(f"task-{i}", namespace, 100_000 + i),
        "spec": {"goal": f"task {i}", "requires": [skills[i % 4]], "priority": (i * 37) % 1000,
                 "classification": "internal"},
        "status": {
            "phase": "Assigned",
            "assignment": {"agent": f"agent-{i % 10_000}", "attempt": 1, "epoch": 1,
                           "assignedAt": "2026-11-25T23:01:01.123456Z", "score": 0.9, "probability": 0.5,
                           "strategy": "quantum"},
            "attempts": 0,
            "explanation": {"summary": "assigned to agent-1", "candidates": [
                {"agent": f"agent-{k}", "score": 0.9, "probability": 0.3} for k in range(3)]},
            "conditions": [{"type": "Scheduled", "status": "True", "reason": "Scheduled", "message": "assigned",
                            "lastTransitionTime": "2026-11-25T23:01:01.123456Z", "observedGeneration": 1}],
            "history": [{"time": "2026-11-25T23:01:01.123456Z", "phase": "Assigned", "agent": "agent-1",
                         "attempt": 1, "reason": "Scheduled", "message": "attempt 1 assigned to agent-1"}],
            "observedGeneration": 1,
        },
    }  # fmt: skip


def agent_body(i: int, namespace: str) -> dict[str, Any]:
    """A Ready Agent."""
    skills = ["code", "review", "write", "data"]
    return {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "Agent",
        "metadata": _meta(f"agent-{i}", namespace, i),
        "spec": {"capabilities": [skills[i % 4], skills[(i + 1) % 4]], "capacity": 20, "clearance": "secret"},
        "status": {"phase": "Ready", "activeTasks": 10, "observedGeneration": 1},
    }


def lease_body(i: int, namespace: str) -> dict[str, Any]:
    """An agent's liveness Lease."""
    return {
        "metadata": {"name": f"qorch-agent-agent-{i}", "namespace": namespace, "resourceVersion": str(50_000 + i)},
        "spec": {"holderIdentity": f"agent-{i}", "leaseDurationSeconds": 30, "renewTime": "2026-11-25T23:01:00Z"},
    }


def main() -> None:
    """Load the store and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start(1)
    state = ClusterState()
    started = time.perf_counter()
    for i in range(args.agents):
        state.sink(AGENTS).upsert(agent_body(i, "big"))
        state.sink(LEASES).upsert(lease_body(i, "big"))
    for i in range(args.tasks):
        state.sink(TASKS).upsert(task_body(i, "big"))
    state.feed.drain()
    elapsed = time.perf_counter() - started
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"store with {args.agents:,} agents (+ Leases) and {args.tasks:,} tasks, loaded in {elapsed:.1f} s")
    print(f"traced: {traced / 2**20:.1f} MiB held ({traced / (args.tasks + 2 * args.agents):.0f} B per object)")
    print(f"process peak RSS: {rss:.0f} MiB (before loading: {rss_before:.0f} MiB)")
    print("top allocation sites (held):")
    for stat in snapshot.statistics("lineno")[:12]:
        frame = stat.traceback[0]
        print(
            f"  {stat.size / 2**20:7.1f} MiB  {stat.count:>9,} blocks  "
            f"{frame.filename.split('operator/')[-1]}:{frame.lineno}"
        )


if __name__ == "__main__":
    main()
