"""Born normalisers over each class's whole candidate set, not only what was gathered.

A class gathers its candidates lazily, so its ranked list is a prefix of them.
Probabilities normalised over that prefix would change with how many sibling
tasks share the batch (more siblings, longer prefix, smaller p). Normalising over
the whole candidate set makes p_t(a) a property of the task, the agent and the
candidate set alone, which is what `status.assignment.probability` promises.

Cost stays per profile, not per candidate: a score depends on the class only
through its number of required capabilities and its deadline, and the
entanglement bias only through the agent's group. So for a class without a
deadline, log Z = logsumexp over its profiles p and agent groups g of
(S[p, g] + 2 bias(g)), where S[p, g] = logsumexp of s/T over pool p's agents of
group g that pass the class's selector and budget. S is computed once per cycle
for each (required-capability count, selector and budget, temperature) that
occurs. Classes with a deadline, classes that avoid one agent (a retry's: its bias
depends on the agent itself, not only its group), and T = 0 score every candidate instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from qorch.scheduler.tasks import Selector, TaskClass
    from qorch.scheduler.views import ClassView, Ranker

__all__ = ["TIE", "Partition", "partition", "segment_logsumexp"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
TIE = 1e-12  # scores this close count as tied at T = 0


@dataclass(frozen=True, slots=True)
class Partition:
    """Per class id, normalisers over the whole candidate set (NaN: the gathered rows are the whole set)."""

    log_z: dict[float, FloatArray]  # per temperature T > 0: log sum exp(s/T + 2b)
    top: FloatArray  # T = 0: the best score of the whole set
    top_log_z: FloatArray  # T = 0: log sum exp(2b) over the rows tied at `top`

    @classmethod
    def gathered_only(cls, classes: int, temperatures: Sequence[float] = ()) -> Partition:
        """Every class's gathered rows are its whole candidate set."""
        nan = np.full(classes, np.nan)
        return cls({t: nan.copy() for t in temperatures if t > 0}, nan.copy(), nan.copy())


def segment_logsumexp(values: FloatArray, starts: IntArray) -> FloatArray:
    """Log-sum-exp within each segment (segments start at `starts`, none empty); -inf for all -inf."""
    peak = np.maximum.reduceat(values, starts)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    lengths = np.diff(np.append(starts, len(values)))
    with np.errstate(divide="ignore"):
        total = np.log(np.add.reduceat(np.exp(values - np.repeat(safe, lengths)), starts))
    out: FloatArray = safe + total
    return out


@dataclass(slots=True)
class _Pools:
    """Per-cycle caches over every pooled agent (agents with a free slot, grouped by profile)."""

    ranker: Ranker
    groups: int  # agent groups + 1 (slot 0: no group)
    scores: dict[int, FloatArray] = field(default_factory=dict)  # per required-capability count
    admits: dict[tuple[Selector, float], npt.NDArray[np.bool_]] = field(default_factory=dict)
    sums: dict[tuple[int, Selector, float, float], FloatArray] = field(default_factory=dict)

    def score(self, need: int) -> FloatArray:
        """Every pooled agent's score for a class with `need` requirements and no deadline."""
        found = self.scores.get(need)
        if found is None:
            pooled = self.ranker.index.pooled
            n = len(pooled)
            none = np.full(n, -1, dtype=np.int32)
            found, _ = self.ranker.score_rows(
                pooled,
                need=np.full(n, need, dtype=np.int32),
                urgency_s=np.full(n, np.inf),
                group=none,
                avoid=none,
            )
            self.scores[need] = found
        return found

    def admitted(self, task_class: TaskClass) -> npt.NDArray[np.bool_]:
        key = (task_class.selector, task_class.max_cost)
        found = self.admits.get(key)
        if found is None:
            found = self.admits[key] = self.ranker.index.admits(task_class, self.ranker.index.pooled)
        return found

    def per_profile(self, task_class: TaskClass, temperature: float) -> FloatArray:
        """S[p, g]: log sum exp(s/T) over pool p's admitted agents of group g-1 (profiles x groups)."""
        key = (len(task_class.requires), task_class.selector, task_class.max_cost, temperature)
        found = self.sums.get(key)
        if found is not None:
            return found
        index = self.ranker.index
        pooled = index.pooled
        profiles = index.profiles
        out = np.full((profiles, self.groups), -np.inf)
        if len(pooled):
            logits = self.score(len(task_class.requires)) / temperature
            logits = np.where(self.admitted(task_class), logits, -np.inf)
            lengths = np.diff(index.pool_bounds)
            nonempty = np.flatnonzero(lengths)
            peak = np.full(profiles, -np.inf)
            peak[nonempty] = np.maximum.reduceat(logits, index.pool_bounds[nonempty])
            base = np.where(np.isfinite(peak), peak, 0.0)
            profile_of = np.repeat(np.arange(profiles), lengths)
            cell = profile_of * self.groups + (index.snapshot.group[pooled] + 1)
            total = np.bincount(cell, weights=np.exp(logits - base[profile_of]), minlength=profiles * self.groups)
            with np.errstate(divide="ignore"):
                out = np.log(total.reshape(profiles, self.groups)) + base[:, None]
        self.sums[key] = out
        return out


def partition(ranker: Ranker, views: Sequence[ClassView], temperatures: Sequence[float]) -> Partition:
    """Normalisers of every class whose gathered rows are not yet its whole candidate set."""
    out = Partition.gathered_only(len(views), temperatures)
    pools = _Pools(ranker, len(ranker.index.snapshot.group_vocab) + 1)
    tilt_of = _GroupBias(ranker)
    by_key: dict[tuple[int, Selector, float], list[ClassView]] = {}
    for view in views:
        if view.complete or not view.ranked:
            continue  # the gathered rows are the whole set, or no task of the class was a head
        c = view.task_class
        exact = bool(np.isfinite(ranker.urgency_s[c.id])) or c.avoid_agent >= 0
        if exact or any(t <= 0 for t in temperatures):
            _score_all(ranker, view, out)
        if not exact:
            by_key.setdefault((len(c.requires), c.selector, c.max_cost), []).append(view)
    for group in by_key.values():
        # One vectorised pass per key: rows are (class, profile) pairs, columns agent groups.
        ids = np.fromiter((v.task_class.id for v in group), dtype=np.int64, count=len(group))
        counts = np.fromiter((len(v.cands.profiles) for v in group), dtype=np.int64, count=len(group))
        profiles = np.concatenate([v.cands.profiles for v in group])
        tilt = np.repeat(2.0 * np.stack([tilt_of(v.task_class) for v in group]), counts, axis=0)
        starts = (np.concatenate([[0], np.cumsum(counts)[:-1]]) * pools.groups).astype(np.int32)
        for t, log_z in out.log_z.items():
            cells = (pools.per_profile(group[0].task_class, t)[profiles] + tilt).ravel()
            log_z[ids] = segment_logsumexp(cells, starts)
    return out


@dataclass(slots=True)
class _GroupBias:
    """bias(class, agent group) for every agent group (slot 0: agents without a group), per (group, avoid)."""

    ranker: Ranker
    cache: dict[tuple[int, int], FloatArray] = field(default_factory=dict)

    def __call__(self, task_class: TaskClass) -> FloatArray:
        key = (task_class.group, task_class.avoid_group)
        found = self.cache.get(key)
        if found is not None:
            return found
        groups = len(self.ranker.index.snapshot.group_vocab)
        agent_group = np.arange(-1, groups, dtype=np.int32)
        ent = self.ranker.entanglement
        out = np.zeros(groups + 1)
        if ent.strength != 0 and groups:
            j = ent.matrix()
            has = agent_group >= 0
            if task_class.group >= 0:
                out[has] += j[task_class.group, agent_group[has]]
            if task_class.avoid_group >= 0:
                out[has] -= j[task_class.avoid_group, agent_group[has]]
            out *= ent.strength
        self.cache[key] = out
        return out


def _score_all(ranker: Ranker, view: ClassView, out: Partition) -> None:
    """Score every candidate of the class (gathered and not): the exact path."""
    rest = ranker.index.rest(view.cands)
    rows = np.concatenate([view.cands.agents, rest]).astype(np.int32)
    _, _, score, bias, _ = ranker.score([view.task_class], [rows])
    cid = view.task_class.id
    for t, log_z in out.log_z.items():
        log_z[cid] = float(segment_logsumexp(score / t + 2.0 * bias, np.zeros(1, dtype=np.int32))[0])
    top = float(score.max())
    out.top[cid] = top
    tied = score >= top - TIE
    out.top_log_z[cid] = float(segment_logsumexp(2.0 * bias[tied], np.zeros(1, dtype=np.int32))[0])
