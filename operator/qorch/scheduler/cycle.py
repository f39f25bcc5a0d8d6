"""One scheduling cycle, as numbered steps; each step is a call into its own module.

`schedule()` is a pure function of (snapshot, tasks, policy): no cluster, no
clock (ages and deadlines arrive as seconds in the batch), no hidden state. The
same input and seed give the same output.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from qorch.scheduler import amplitudes, collapse, observables, partition, queue, strategies
from qorch.scheduler.index import CapabilityIndex
from qorch.scheduler.result import Result
from qorch.scheduler.views import Catalog, ClassView, Ranker

if TYPE_CHECKING:
    from qorch.api.enums import Reason
    from qorch.scheduler.policy import Policy
    from qorch.scheduler.snapshot import Snapshot
    from qorch.scheduler.tasks import TaskBatch

__all__ = ["schedule"]

_INITIAL_SLOTS_PER_TASK = 2  # gather candidates for about twice a class's demand up front
_EMPTY = np.zeros(0, dtype=np.int32)


def schedule(snapshot: Snapshot, tasks: TaskBatch, policy: Policy, *, index: CapabilityIndex | None = None) -> Result:
    """Decide every task of the batch: an agent, or a reason it has none."""
    started = time.perf_counter()
    # 1. Queue heads: effective priority (deadline and waiting aging), weighted fair share, quotas.
    order, eff = queue.heads(
        tasks, batch_size=policy.batch_size, weights=policy.namespace_weights, quota=policy.namespace_quota
    )
    head_rank = np.full(len(tasks), -1, dtype=np.int32)
    head_rank[order] = np.arange(len(order), dtype=np.int32)

    # 2. Snapshot: free slots this cycle, and the capability index over agent profiles.
    free = snapshot.free
    index = index or CapabilityIndex(snapshot, free)
    capability_count = snapshot.capability_count
    entanglement = amplitudes.Entanglement(
        groups=len(snapshot.group_vocab),
        strength=policy.entanglement_strength,
        couplings={
            (a, b): v
            for (ga, gb), v in policy.couplings.items()
            if (a := snapshot.group_vocab.get(ga)) is not None and (b := snapshot.group_vocab.get(gb)) is not None
        },
    )

    # 3-5. Filter, score and amplify per task class: candidates from the index, bounded scores,
    #      amplitudes with entanglement, all classes ranked in one vectorised pass. Views gather
    #      more later if contention needs it.
    strategy = policy.strategy
    heads_per_class = np.bincount(tasks.class_of[order], minlength=len(tasks.classes))
    urgency = np.full(len(tasks.classes), np.inf)
    if np.isfinite(tasks.deadline_s).any():
        np.minimum.at(urgency, tasks.class_of, tasks.deadline_s)
    ranker = Ranker(
        index=index,
        free=free,
        weights=policy.weights,
        temperature=policy.temperature,
        entanglement=entanglement,
        capability_count=capability_count,
        ranking=strategies.RANKING[strategy],
        urgency_s=urgency,
    )
    views = [ClassView(c, index.candidates(c), ranker) for c in tasks.classes]
    first = [
        index.gather(v.cands, max(32, _INITIAL_SLOTS_PER_TASK * int(heads_per_class[v.task_class.id])))
        if heads_per_class[v.task_class.id]
        else _EMPTY
        for v in views
    ]
    ranker.rank(views, first)

    # 6. Collapse into a capacity-respecting assignment with the policy's strategy.
    rng = np.random.default_rng(policy.seed)
    ledger: collapse.Ledger = strategies.REGISTRY[strategy](
        strategies.CollapseInput(
            order=order.tolist(),
            effective_priority=eff,
            views=views,
            class_of=tasks.class_of.tolist(),
            tasks=tasks,
            snapshot=snapshot,
            free=free,
            rng=rng,
            sample=policy.sample,
            exact_limit=policy.exact_limit,
        )
    )
    agent_of = ledger.assignments()

    # 7. Observables, and the score, probability or reason of every task.
    reference_t = observables.REFERENCE_TEMPERATURE
    part = partition.partition(ranker, views, (policy.temperature, reference_t))
    catalog = Catalog.of(ranker, len(views), len(snapshot), policy.temperature, part)
    reference = (
        catalog
        if policy.temperature == reference_t
        else Catalog.of(ranker, len(views), len(snapshot), reference_t, part)
    )
    measured = observables.measure(views, reference, index, free, head_rank, agent_of, tasks.class_of)
    score = np.zeros(len(tasks))
    probability = np.zeros(len(tasks))
    placed = np.flatnonzero(agent_of >= 0)
    rows = catalog.lookup(tasks.class_of[placed], agent_of[placed])
    score[placed] = np.where(rows >= 0, catalog.score[rows], 0.0)
    probability[placed] = np.where(rows >= 0, catalog.p[rows], 0.0)
    placed_per_class = np.bincount(tasks.class_of[placed], minlength=len(tasks.classes))
    reasons: dict[int, tuple[Reason, str]] = {}
    for cid in np.flatnonzero(placed_per_class < heads_per_class).tolist():
        reasons[cid] = index.reason(tasks.classes[cid])
    return Result(
        snapshot=snapshot,
        tasks=tasks,
        agent_of=agent_of,
        score=score,
        probability=probability,
        reasons=reasons,
        heads=head_rank,
        views=views,
        catalog=catalog,
        observables=measured,
        strategy=str(strategy),
        seconds=time.perf_counter() - started,
        stats={"augmented": ledger.augmented, "classes": len(tasks.classes), "profiles": index.profiles},
    )
