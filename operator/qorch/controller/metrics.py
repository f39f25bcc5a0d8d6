"""Every Prometheus metric of the operator, in one place, under the `qorch_` prefix.

Label values are bounded and listed in each help text, so cardinality never
grows with the number of objects.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "API_WRITE_SECONDS",
    "ASSIGNMENTS",
    "CONFLICTS",
    "CREATE_TO_ASSIGNED_SECONDS",
    "CYCLE_SECONDS",
    "LEADER",
    "OBSERVABLE",
    "TASKS",
]

TASKS = Gauge("qorch_tasks", "Tasks by phase (Pending, Queued, Assigned, Running, ...).", ["phase"])
CYCLE_SECONDS = Histogram(
    "qorch_scheduling_cycle_seconds",
    "Duration of one scheduling cycle (decide + write).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CREATE_TO_ASSIGNED_SECONDS = Histogram(
    "qorch_task_create_to_assigned_seconds",
    "From a Task's creation to its assignment being written.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ASSIGNMENTS = Counter("qorch_assignments_total", "Assignments written to Task status.")
CONFLICTS = Counter("qorch_status_conflicts_total", "Status writes refused with 409 (decided on a stale version).")
API_WRITE_SECONDS = Histogram(
    "qorch_api_write_seconds",
    "Latency of one status write to the apiserver.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LEADER = Gauge("qorch_leader", "1 while this replica holds the qorch-operator Lease, else 0.")
OBSERVABLE = Gauge(
    "qorch_scheduler_observable", "Observables of the last cycle: entropy, coherence or fidelity.", ["name"]
)
