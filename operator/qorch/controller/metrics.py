"""Every Prometheus metric of the operator, in one place, under the `qorch_` prefix.

Label values are bounded and listed in each help text, so cardinality never
grows with the number of objects.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AGENTS",
    "API_WRITE_SECONDS",
    "ASSIGNMENTS",
    "ASSIGNMENTS_REFUSED",
    "AUDIT_ENTRIES",
    "AUDIT_FAILURES",
    "BREAKERS",
    "BREAKER_TRANSITIONS",
    "CREATE_TO_ASSIGNED_SECONDS",
    "CYCLES_TO_FIRST_STATUS",
    "CYCLE_SECONDS",
    "DEADLINE_MISSES",
    "DECIDE_SECONDS",
    "EVENTS_DROPPED",
    "INFORMER_LISTS",
    "LEADER",
    "LEASES_READ_BACK",
    "LEDGER",
    "LEDGER_CHECKS",
    "OBSERVABLE",
    "PROVIDER_BREAKERS",
    "PROVIDER_BREAKER_TRANSITIONS",
    "QUEUE",
    "REPORTS_IGNORED",
    "TASKS",
    "TRANSITIONS",
    "WATCH_EVENTS",
    "WRITES",
    "WRITE_BACKOFFS",
]

TASKS = Gauge("qorch_tasks", "Tasks by phase (Pending, Queued, Assigned, Running, ...).", ["phase"])
QUEUE = Gauge("qorch_scheduling_queue", "Tasks in the scheduling queue: state active or parked.", ["state"])
LEDGER = Gauge("qorch_writes_open", "Status writes decided and not yet settled (the ledger's entries).")
CYCLE_SECONDS = Histogram(
    "qorch_scheduling_cycle_seconds",
    "Duration of one scheduling cycle (writes are sent in the background).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DECIDE_SECONDS = Histogram(
    "qorch_decide_seconds",
    "Time a cycle spent deciding (rules, scheduler core, documents).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CREATE_TO_ASSIGNED_SECONDS = Histogram(
    "qorch_task_create_to_assigned_seconds",
    "From a Task's creation to its assignment being written.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CYCLES_TO_FIRST_STATUS = Histogram(
    "qorch_task_cycles_to_first_status",
    "Scheduling cycles from a Task's first sighting to the cycle that decided its first status.",
    buckets=(0, 1, 2, 3, 5, 10, 20, 50),
)
ASSIGNMENTS = Counter("qorch_assignments_total", "Assignments written to Task status.")
ASSIGNMENTS_REFUSED = Counter(
    "qorch_assignments_refused_total",
    "Assignments the last check before the write refused (a scheduler bug), by rule: namespace, clearance, "
    "capabilities, selector, budget.",
    ["rule"],
)
BREAKER_TRANSITIONS = Counter(
    "qorch_breaker_transitions_total", "Agent circuit breakers that changed state, by the state entered.", ["state"]
)
AGENTS = Gauge(
    "qorch_agents", "Agents by phase (Ready, NotReady, Cordoned), as the operator last wrote them.", ["phase"]
)
DEADLINE_MISSES = Counter(
    "qorch_deadline_misses_total",
    "Tasks whose spec.deadline passed before they finished, by outcome: continued, or failed (failOnDeadline).",
    ["outcome"],
)
for _outcome in ("continued", "failed"):  # exported as 0 before the first miss, so alerts see a series
    DEADLINE_MISSES.labels(_outcome)
BREAKERS = Gauge("qorch_breakers", "Agents' circuit breakers that have seen failures, by state.", ["state"])
PROVIDER_BREAKERS = Gauge(
    "qorch_provider_breakers", "LLM providers' circuit breakers that have seen errors, by state.", ["state"]
)
PROVIDER_BREAKER_TRANSITIONS = Counter(
    "qorch_provider_breaker_transitions_total",
    "LLM providers' circuit breakers that changed state, by the state entered.",
    ["state"],
)
TRANSITIONS = Counter(
    "qorch_task_transitions_total",
    "Task status transitions written, by phase entered and reason (both from qorch.api.enums).",
    ["phase", "reason"],
)
WRITES = Counter(
    "qorch_status_writes_total",
    "Status writes by kind (tasks, agents, approvals) and outcome: written, conflict, gone, refused, unknown, dropped.",
    ["kind", "outcome"],
)
WRITE_BACKOFFS = Counter(
    "qorch_status_write_backoffs_total",
    "Objects held back before being decided again because their status writes failed (409, 5xx) twice or more "
    "in a row, by kind (tasks, agents, approvals).",
    ["kind"],
)
API_WRITE_SECONDS = Histogram(
    "qorch_api_write_seconds",
    "Latency of one status write to the apiserver.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LEDGER_CHECKS = Counter("qorch_ledger_checks_total", "GETs made to settle a write whose echo did not come.")
REPORTS_IGNORED = Counter(
    "qorch_reports_ignored_total", "Execution reports ignored because they were not about the current attempt."
)
EVENTS_DROPPED = Counter("qorch_events_dropped_total", "Events not posted (queue full or the API refused).")
INFORMER_LISTS = Counter("qorch_informer_lists_total", "Full LISTs made by informers, by resource.", ["resource"])
LEASES_READ_BACK = Counter(
    "qorch_agent_leases_read_back_total",
    "Agent Leases read from the apiserver before an agent with work was judged dead, by what they showed.",
    ["found"],
)
WATCH_EVENTS = Counter("qorch_watch_events_total", "Watch events applied to the store, by resource.", ["resource"])
AUDIT_ENTRIES = Counter(
    "qorch_audit_entries_total",
    "Entries appended to the audit log, by kind (assign, start, requeue, retry, finish, dead-letter, approve, "
    "reject, breaker, leader, refused-report, refused-assignment, key-rotation).",
    ["kind"],
)
AUDIT_FAILURES = Counter(
    "qorch_audit_failures_total", "Audit log operations that failed (an entry not written, a key not reloaded)."
)
LEADER = Gauge("qorch_leader", "1 while this replica holds the qorch-operator Lease, else 0.")
OBSERVABLE = Gauge(
    "qorch_scheduler_observable", "Observables of the last cycle: entropy, coherence or fidelity.", ["name"]
)
