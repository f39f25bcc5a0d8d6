"""Translation between the store's records and the scheduler core's columns, both ways.

Inward: agents become a `Snapshot` (free slots count assignments still in
flight), tasks become a `TaskBatch` (ages and deadlines as seconds; a retry
avoids the agent that failed it, a last resort for the scheduler core, and that
agent's failure domain), and the
SchedulingPolicy becomes a `Policy` with every part applied: strategy,
temperature, weights, batch size, namespace fair-share weights and quotas.
Outward: the `Result` becomes one `Placement` per task, in decision order,
with namespace cost quotas enforced on the way out.

Tasks only ever run on agents of their own namespace: a synthetic label on
every agent and a matching selector on every task say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from qorch.api.enums import Reason, Strategy
from qorch.scheduler import Policy, Snapshot, TaskBatch
from qorch.scheduler.queue import effective_priority
from qorch.scheduler.result import Candidate

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from qorch.controller.records import AgentRecord, Key, PolicyRecord, TaskRecord
    from qorch.scheduler import Result

__all__ = ["NAMESPACE_LABEL", "Fleet", "FleetCache", "Placement", "fleet", "placements", "policy", "tasks"]

NAMESPACE_LABEL = "qorch.io/namespace"
_TOP = 3


@dataclass(frozen=True, slots=True)
class Fleet:
    """The agents of one cycle, row for row with their snapshot."""

    agents: list[AgentRecord]
    snapshot: Snapshot
    load: dict[Key, int]  # Assigned/Running tasks plus reserved slots, per agent


@dataclass(slots=True)
class FleetCache:
    """The snapshot's static columns, kept across passes; rebuilt only when the fleet itself changes.

    Capabilities, capacity, clearance, labels, cost and groups change only with an
    Agent's spec, so they are built again only when the store's `fleet_version`
    moved; load, readiness and success rate are set in place on every pass.
    """

    version: int = -1
    agents: list[AgentRecord] = field(default_factory=list)
    snapshot: Snapshot | None = None

    def fleet(
        self,
        agents: Mapping[Key, AgentRecord],
        version: int,
        *,
        schedulable: Callable[[AgentRecord], bool],
        load: Callable[[Key], int],
    ) -> Fleet:
        """The fleet of this pass."""
        if self.snapshot is None or version != self.version or len(agents) != len(self.agents):
            built = fleet(list(agents.values()), schedulable=schedulable, load=load)
            self.version, self.agents, self.snapshot = version, built.agents, built.snapshot
            return built
        current = [agents.get(a.key, a) for a in self.agents]  # same rows; newer status
        loads = {a.key: load(a.key) for a in current}
        snapshot = self.snapshot
        snapshot.active[:] = [loads[a.key] for a in current]
        snapshot.ready[:] = [schedulable(a) for a in current]
        snapshot.success_rate[:] = [a.success_rate for a in current]
        self.agents = current
        return Fleet(current, snapshot, loads)


def fleet(
    agents: Sequence[AgentRecord], *, schedulable: Callable[[AgentRecord], bool], load: Callable[[Key], int]
) -> Fleet:
    """Columns of every agent; those that may not take work have no free slot."""
    loads = {a.key: load(a.key) for a in agents}
    snapshot = Snapshot.build(
        names=[f"{a.namespace}/{a.name}" for a in agents],
        capabilities=[a.capabilities for a in agents],
        capacity=[a.capacity for a in agents],
        active=[loads[a.key] for a in agents],
        clearance=[a.clearance for a in agents],
        ready=[schedulable(a) for a in agents],
        success_rate=[a.success_rate for a in agents],
        cost=[a.cost for a in agents],
        latency_ms=[a.latency_ms for a in agents],
        groups=[a.group for a in agents],
        labels=[{**dict(a.labels), NAMESPACE_LABEL: a.namespace} for a in agents],
    )
    return Fleet(list(agents), snapshot, loads)


def tasks(
    fleet: Fleet, queued: Sequence[TaskRecord], *, now: float, avoid_group: Callable[[TaskRecord], str]
) -> TaskBatch:
    """The batch of queued tasks, each restricted to its own namespace.

    A task whose latest attempt failed avoids that agent (`failed_agent`): the core
    places it there only when no other candidate has a free slot, so a retry never
    starves when the agent that failed it is the only one that can run it.
    """
    return TaskBatch.build(
        fleet.snapshot,
        names=[f"{t.namespace}/{t.name}" for t in queued],
        requires=[t.requires for t in queued],
        priority=[t.priority for t in queued],
        classification=[t.classification for t in queued],
        deadline_s=[(t.deadline - now) if t.deadline is not None else np.inf for t in queued],
        waited_s=[now - t.created for t in queued],
        namespaces=[t.namespace for t in queued],
        selectors=[_scoped_selector(t) for t in queued],
        groups=[t.group for t in queued],
        avoid_groups=[avoid_group(t) for t in queued],
        max_cost=[t.max_cost for t in queued],
        avoid_agents=[f"{t.namespace}/{t.failed_agent}" if t.failed_agent else "" for t in queued],
    )


def policy(record: PolicyRecord, *, free_quota: Mapping[str, int], cycle: int) -> Policy:
    """The scheduler's Policy from SchedulingPolicy `default`; `free_quota`: open slots per capped namespace."""
    return Policy(
        strategy=Strategy(record.strategy),
        temperature=record.temperature,
        seed=record.seed + cycle,
        batch_size=record.batch_size,
        weights={**Policy().weights, **record.weights},
        namespace_weights={ns: q.weight for ns, q in record.quotas.items()},
        namespace_quota=dict(free_quota),
    )


@dataclass(frozen=True, slots=True)
class Placement:
    """What the cycle decided for one task: an agent, or a reason it has none."""

    task: TaskRecord
    agent: AgentRecord | None
    score: float
    probability: float
    reason: Reason | None  # None when placed
    message: str
    candidates: list[Candidate]
    strategy: str
    line: int = 0  # place in line among the tasks left out of the batch (0: it was in the batch)


def placements(
    result: Result,
    fleet: Fleet,
    queued: Sequence[TaskRecord],
    *,
    cost_left: Mapping[str, float],
    free_quota: Mapping[str, int],
) -> list[Placement]:
    """One placement per task, heads first in decision order; cost quotas are applied in that order.

    A task that was no head because its namespace has no concurrent slot left is
    `OverQuota`; one that only missed the batch is `NotInBatch` with its place in line.
    """
    spend = dict(cost_left)
    by_class: dict[int, list[Candidate]] = {}
    heads = np.flatnonzero(result.heads >= 0)
    heads = heads[np.argsort(result.heads[heads], kind="stable")]
    rest = np.flatnonzero(result.heads < 0)
    rest = rest[np.argsort(-effective_priority(result.tasks)[rest], kind="stable")]
    line = {int(i): len(heads) + n + 1 for n, i in enumerate(rest.tolist())}
    heads_in: dict[str, int] = {}
    for i in heads.tolist():
        heads_in[queued[i].namespace] = heads_in.get(queued[i].namespace, 0) + 1
    out: list[Placement] = []
    for i in [*heads.tolist(), *rest.tolist()]:
        task = queued[i]
        class_id = int(result.tasks.class_of[i])
        candidates = by_class.get(class_id)
        if candidates is None:
            candidates = by_class[class_id] = [
                Candidate(c.agent.split("/", 1)[1], c.score, c.probability) for c in result.explain(i).candidates
            ][:_TOP]
        row = int(result.agent_of[i])
        if row >= 0:
            agent = fleet.agents[row]
            left = spend.get(task.namespace, math.inf)
            if agent.cost > left:
                out.append(
                    Placement(
                        task,
                        None,
                        0.0,
                        0.0,
                        Reason.OVER_QUOTA,
                        f"namespace {task.namespace} has {max(left, 0):g} of its cost quota left; {agent.name} "
                        f"costs {agent.cost:g}",
                        candidates,
                        result.strategy,
                    )
                )
                continue
            if task.namespace in spend:
                spend[task.namespace] = left - agent.cost
            out.append(
                Placement(
                    task,
                    agent,
                    float(result.score[i]),
                    float(result.probability[i]),
                    None,
                    "",
                    candidates,
                    result.strategy,
                )
            )
            continue
        reason, message = result.reason(i) or (Reason.CAPACITY_EXHAUSTED, "no free slot")
        if reason is Reason.NOT_IN_BATCH and heads_in.get(task.namespace, 0) >= free_quota.get(
            task.namespace, math.inf
        ):
            reason = Reason.OVER_QUOTA
            message = (
                f"namespace {task.namespace} may run no more tasks at once (maxConcurrentTasks in the "
                "SchedulingPolicy): waiting for one of its tasks to end"
            )
        elif reason is Reason.NOT_IN_BATCH:
            message = f"number {line[i]} of {len(queued)} in line; each cycle decides {len(heads)} at most"
        out.append(Placement(task, None, 0.0, 0.0, reason, message, candidates, result.strategy, line.get(i, 0)))
    return out


def _scoped_selector(task: TaskRecord) -> dict[str, object]:
    """The task's own agentSelector plus 'same namespace'."""
    selector = task.selector
    labels = dict(selector.match_labels) if selector else {}
    labels[NAMESPACE_LABEL] = task.namespace
    expressions = [
        {"key": k, "operator": op, "values": list(values)}
        for k, op, values in (selector.match_expressions if selector else ())
    ]
    return {"matchLabels": labels, "matchExpressions": expressions}
