"""Step 1 of a cycle: which queued tasks are heads, and in what order.

- Effective priority = spec priority + deadline aging + waiting aging. A task
  whose deadline is DEADLINE_HORIZON_S away starts gaining, up to
  DEADLINE_BOOST points at its deadline; a task gains one point per
  WAIT_STEP_S waited, up to WAIT_BOOST. Aging is bounded so that it breaks
  near-ties and rescues starving work without overturning the priority scale.
- Weighted fairness across namespaces: each namespace's tasks are ranked by
  effective priority, and a task's virtual time is (rank + 1) / weight. When
  the batch cannot take everyone, heads are chosen by virtual time, so a
  namespace of weight 2 gets twice the heads of one of weight 1.
- Quotas cap how many heads a namespace gets (its free concurrent slots).
Heads are then ordered by effective priority (virtual time breaks ties); the
collapse maximises total effective priority in that order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qorch.scheduler.tasks import TaskBatch

__all__ = [
    "DEADLINE_BOOST",
    "DEADLINE_HORIZON_S",
    "WAIT_BOOST",
    "WAIT_STEP_S",
    "effective",
    "effective_priority",
    "heads",
]

DEADLINE_BOOST = 250.0
DEADLINE_HORIZON_S = 3600.0
WAIT_BOOST = 100.0
WAIT_STEP_S = 60.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]


def effective(priority: float, deadline_s: float, waited_s: float) -> float:
    """The effective priority of one task: the scalar twin of `effective_priority` (same formula)."""
    urgency = 0.0
    if deadline_s != float("inf"):
        urgency = min(max(1.0 - deadline_s / DEADLINE_HORIZON_S, 0.0), 1.0)
    return priority + DEADLINE_BOOST * urgency + min(max(waited_s, 0.0) / WAIT_STEP_S, WAIT_BOOST)


def effective_priority(tasks: TaskBatch) -> FloatArray:
    """Priority plus bounded deadline and waiting aging."""
    urgency = np.clip(1.0 - tasks.deadline_s / DEADLINE_HORIZON_S, 0.0, 1.0)
    urgency[~np.isfinite(tasks.deadline_s)] = 0.0
    waited = np.minimum(np.maximum(tasks.waited_s, 0.0) / WAIT_STEP_S, WAIT_BOOST)
    return tasks.priority.astype(np.float64) + DEADLINE_BOOST * urgency + waited


def heads(
    tasks: TaskBatch,
    *,
    batch_size: int | None = None,
    weights: Mapping[str, float] | None = None,
    quota: Mapping[str, int] | None = None,
) -> tuple[IntArray, FloatArray]:
    """(head task indices in decision order, effective priority of every task)."""
    eff = effective_priority(tasks)
    n = len(tasks)
    if n == 0:
        return np.zeros(0, dtype=np.int32), eff
    ns = tasks.namespace
    ns_weight = np.array([float((weights or {}).get(name, 1.0)) for name in tasks.namespaces])
    # rank within namespace by effective priority (stable by index)
    by_ns = np.lexsort((np.arange(n), -eff, ns))
    starts = np.searchsorted(ns[by_ns], np.arange(len(tasks.namespaces)))
    rank = np.empty(n, dtype=np.int64)
    rank[by_ns] = np.arange(n) - starts[ns[by_ns]]
    vtime = (rank + 1) / ns_weight[ns]
    eligible = np.ones(n, dtype=np.bool_)
    if quota:
        limit = np.array([quota.get(name, n) for name in tasks.namespaces])
        eligible &= rank < limit[ns]
    candidates = np.flatnonzero(eligible)
    if batch_size is not None and len(candidates) > batch_size:
        fair = np.lexsort((candidates, -eff[candidates], vtime[candidates]))
        candidates = candidates[fair[:batch_size]]
    order = candidates[np.lexsort((candidates, vtime[candidates], -eff[candidates]))]
    return order.astype(np.int32), eff
