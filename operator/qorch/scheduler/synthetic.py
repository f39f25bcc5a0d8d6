"""Synthetic fleets and batches, for benchmarks and property tests.

Realistic in the ways that matter for scheduling: capability popularity is
skewed (a few rare skills only a few versatile agents have), capacities vary,
some agents are busy, cordoned or broken, clearances and zones vary, and
selectors and classifications constrain tasks. `contention` sets free slots
relative to tasks: below 1.0 not everything fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qorch.scheduler.snapshot import BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN, Snapshot
from qorch.scheduler.tasks import TaskBatch

__all__ = ["Workload", "fleet", "tasks_for", "workload"]

ZONES = ("eu-west", "us-east", "ap-south")


@dataclass(frozen=True, slots=True)
class Workload:
    """A fleet and a batch of tasks for it."""

    snapshot: Snapshot
    tasks: TaskBatch


def _capability_names(k: int) -> list[str]:
    return [f"skill-{i}" for i in range(k)]


def fleet(
    agents: int,
    *,
    seed: int = 0,
    capabilities: int = 16,
    max_capacity: int = 8,
    busy: float = 0.3,
    not_ready: float = 0.03,
) -> Snapshot:
    """A fleet whose capability popularity follows a Zipf-like law."""
    rng = np.random.default_rng(seed)
    names = _capability_names(capabilities)
    popularity = 1.0 / np.arange(1, capabilities + 1)
    popularity /= popularity.sum()
    count = rng.integers(1, 5, size=agents)
    caps = [
        [names[j] for j in rng.choice(capabilities, size=min(int(c), capabilities), replace=False, p=popularity)]
        for c in count
    ]
    capacity = rng.integers(1, max_capacity + 1, size=agents)
    active = np.where(rng.random(agents) < busy, rng.integers(0, capacity + 1), 0)
    breaker = rng.choice([BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN], size=agents, p=[0.96, 0.02, 0.02])
    return Snapshot.build(
        names=[f"agent-{i}" for i in range(agents)],
        capabilities=caps,
        capacity=capacity,
        active=active,
        clearance=rng.choice(5, size=agents, p=[0.1, 0.35, 0.3, 0.15, 0.1]).astype(np.int8),
        ready=rng.random(agents) >= not_ready,
        breaker=breaker.astype(np.int8),
        success_rate=np.round(rng.beta(8, 1.5, size=agents), 3),
        cost=np.round(rng.gamma(2.0, 0.2, size=agents), 3),
        latency_ms=np.round(rng.gamma(3.0, 400.0, size=agents)),
        groups=[ZONES[z] for z in rng.integers(0, len(ZONES), size=agents)],
        labels=[{"zone": ZONES[z]} for z in rng.integers(0, len(ZONES), size=agents)],
    )


def tasks_for(
    snapshot: Snapshot,
    tasks: int,
    *,
    seed: int = 0,
    capabilities: int = 16,
    selector_share: float = 0.15,
    namespaces: int = 4,
) -> TaskBatch:
    """A batch of tasks whose needs follow the same skewed popularity as the fleet's skills."""
    rng = np.random.default_rng(seed + 2)
    names = _capability_names(capabilities)
    popularity = 1.0 / np.arange(1, capabilities + 1) ** 0.8
    popularity /= popularity.sum()
    need = rng.choice([1, 1, 1, 2, 2, 3], size=tasks)
    requires = [[names[j] for j in rng.choice(capabilities, size=int(k), replace=False, p=popularity)] for k in need]
    selectors: list[dict[str, object] | None] = [
        {"zone": ZONES[int(rng.integers(0, len(ZONES)))]} if rng.random() < selector_share else None
        for _ in range(tasks)
    ]
    return TaskBatch.build(
        snapshot,
        names=[f"task-{i}" for i in range(tasks)],
        requires=requires,
        priority=rng.choice([100, 200, 300, 500, 500, 500, 700, 800, 900, 1000], size=tasks)
        + rng.integers(0, 50, size=tasks),
        classification=rng.choice(5, size=tasks, p=[0.2, 0.4, 0.25, 0.1, 0.05]).tolist(),
        namespaces=[f"team-{i}" for i in rng.integers(0, namespaces, size=tasks)],
        selectors=selectors,
    )


def workload(
    agents: int,
    tasks: int,
    *,
    seed: int = 0,
    contention: float | None = None,
    capabilities: int = 16,
    selector_share: float = 0.15,
    namespaces: int = 4,
) -> Workload:
    """A fleet plus tasks; with `contention`, free slots are scaled to about contention x tasks."""
    snapshot = fleet(agents, seed=seed, capabilities=capabilities)
    if contention is not None:
        free = snapshot.free
        total = int(free.sum())
        if total > 0:
            scale = max(1, int(contention * tasks)) / total
            rng = np.random.default_rng(seed + 1)
            new_free = np.floor(free * scale + rng.random(len(free))).astype(np.int32)
            snapshot.active = np.maximum(snapshot.capacity - new_free, 0).astype(np.int32)
    batch = tasks_for(
        snapshot, tasks, seed=seed, capabilities=capabilities, selector_share=selector_share, namespaces=namespaces
    )
    return Workload(snapshot, batch)
