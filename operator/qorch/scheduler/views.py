"""A task class's candidates, gathered (step 3), scored (step 4) and amplified (step 5).

The `Ranker` scores and ranks the candidates of many classes in one vectorised
pass (rows of all classes side by side, a softmax per class segment), so a
cycle's cost does not carry a Python loop of numpy calls per class. Each
`ClassView` keeps its candidates best-first as plain lists, which is what the
collapse's hot loop walks. When contention uses them up, a view gathers,
scores and ranks the next slice; it never re-ranks what it already handed out.
After the collapse, a `Catalog` holds every (class, agent) pair's score and
Born probability for vectorised look-ups.

A class that avoids an agent (the one that failed its tasks' last attempt) ranks it
last of all its candidates, whatever the strategy: the view holds it back until every
other candidate has been gathered, then appends it as a last resort. Its bias also
carries `AVOIDED`, so its Born probability (and so every reported probability and
explanation) shows it as all but excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from qorch.scheduler import amplitudes, scorers
from qorch.scheduler.partition import TIE, Partition, segment_logsumexp

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from qorch.scheduler.index import Candidates, CapabilityIndex
    from qorch.scheduler.tasks import TaskClass

__all__ = ["AVOIDED", "Catalog", "ClassView", "Ranker", "Ranking"]

#: Bias (log-amplitude) taken off the agent a class avoids: exp(-2 * AVOIDED) is 0 in floats,
#: so it has no probability while another candidate exists, and all of it when it is the only one.
AVOIDED = 1_000.0
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
Ranking = Literal["probability", "best-fit", "gathered"]


@dataclass(slots=True)
class Ranker:
    """Scores, entangles and ranks candidate rows of many classes at once."""

    index: CapabilityIndex
    free: IntArray  # free slots at the start of the cycle
    weights: Mapping[str, float]
    temperature: float
    entanglement: amplitudes.Entanglement
    capability_count: IntArray
    ranking: Ranking
    urgency_s: FloatArray  # per class id
    ranked_rows: list[tuple[IntArray, IntArray, FloatArray, FloatArray]] = field(default_factory=list)

    def logits(self, scores: FloatArray, biases: FloatArray) -> FloatArray:
        """s/T + 2*bias; at T = 0 only each class's top scores stay finite."""
        if self.temperature > 0:
            return scores / self.temperature + 2.0 * biases
        return 2.0 * biases  # callers mask non-top rows

    def score(
        self, classes: Sequence[TaskClass], rows: Sequence[IntArray]
    ) -> tuple[npt.NDArray[np.int64], IntArray, FloatArray, FloatArray, npt.NDArray[np.int64]]:
        """Score `rows[i]` for `classes[i]` in one pass: (segment per row, rows, scores, biases, lengths)."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        seg = np.repeat(np.arange(len(rows)), lengths)
        all_rows = np.concatenate(list(rows)).astype(np.int32) if len(rows) else np.zeros(0, dtype=np.int32)
        count = len(classes)
        ids = np.fromiter((c.id for c in classes), dtype=np.int64, count=count)
        score, bias = self.score_rows(
            all_rows,
            need=np.repeat(np.fromiter((len(c.requires) for c in classes), dtype=np.int32, count=count), lengths),
            urgency_s=np.repeat(self.urgency_s[ids], lengths),
            group=np.repeat(np.fromiter((c.group for c in classes), dtype=np.int32, count=count), lengths),
            avoid=np.repeat(np.fromiter((c.avoid_group for c in classes), dtype=np.int32, count=count), lengths),
            shun=np.repeat(np.fromiter((c.avoid_agent for c in classes), dtype=np.int32, count=count), lengths),
        )
        return seg, all_rows, score, bias, lengths

    def score_rows(
        self,
        rows: IntArray,
        *,
        need: IntArray,
        urgency_s: FloatArray,
        group: IntArray,
        avoid: IntArray,
        shun: IntArray | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """(score, bias) per row; a class enters only through these five columns.

        The bias is entanglement's, less `AVOIDED` where the row is the agent the class
        avoids (`shun`, -1 for none).
        """
        ctx = scorers.ScoreContext(
            snapshot=self.index.snapshot,
            rows=rows,
            need=need,
            urgency_s=urgency_s,
            free=self.free,
            capability_count=self.capability_count,
        )
        bias = self.entanglement.bias(self.index.snapshot, rows, group, avoid)
        if shun is not None:
            bias = bias - AVOIDED * (rows == shun)
        return scorers.combined(ctx, self.weights), bias

    def rank(self, views: Sequence[ClassView], rows: Sequence[IntArray]) -> None:
        """Score and rank `rows[i]` for `views[i]`, appending them best-first."""
        keep = [(v, r) for v, r in zip(views, rows, strict=True) if len(r)]
        if not keep:
            return
        classes = [v.task_class for v, _ in keep]
        seg, all_rows, score, bias, lengths = self.score(classes, [r for _, r in keep])
        if self.ranking == "probability":
            keys: tuple[npt.NDArray[np.generic], ...] = (
                (-self.logits(score, bias), seg) if self.temperature > 0 else (-bias, -score, seg)
            )
            order = np.lexsort(keys)
        elif self.ranking == "best-fit":
            order = np.lexsort((-score, self.capability_count[all_rows], seg))
        else:
            order = np.argsort(seg, kind="stable")
        class_ids = np.fromiter((c.id for c in classes), dtype=np.int32, count=len(keep))
        rows_sorted, score_sorted, bias_sorted = all_rows[order], score[order], bias[order]
        self.ranked_rows.append((class_ids[seg[order]], rows_sorted, score_sorted, bias_sorted))
        r_sorted = rows_sorted.tolist()
        s_sorted = score_sorted.tolist()
        b_sorted = bias_sorted.tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        for i, (view, _) in enumerate(keep):
            a, b = bounds[i], bounds[i + 1]
            view.take(r_sorted[a:b], s_sorted[a:b], b_sorted[a:b])


@dataclass(slots=True)
class ClassView:
    """Ranked candidates of one task class, extended on demand."""

    task_class: TaskClass
    cands: Candidates
    ranker: Ranker
    ranked: list[int] = field(default_factory=list)  # agent rows, best first within each gathered slice
    scores: list[float] = field(default_factory=list)
    biases: list[float] = field(default_factory=list)
    cursor: int = 0
    held: tuple[int, float, float] | None = None  # the avoided agent, gathered but not ranked yet
    last_resort: bool = False  # the avoided agent is ranked: the last of `ranked`

    @property
    def complete(self) -> bool:
        """Whether every feasible agent has been gathered."""
        return self.cands.complete

    @property
    def preferred(self) -> int:
        """How many of `ranked` come before the last resort (all of them when there is none)."""
        return len(self.ranked) - self.last_resort

    def take(self, rows: list[int], scores: list[float], biases: list[float]) -> None:
        """Append a ranked slice; the avoided agent waits until every other candidate is in."""
        avoid = self.task_class.avoid_agent
        if avoid >= 0 and avoid in rows:
            k = rows.index(avoid)
            self.held = (rows.pop(k), scores.pop(k), biases.pop(k))
        self.ranked.extend(rows)
        self.scores.extend(scores)
        self.biases.extend(biases)
        self._release()

    def _release(self) -> int:
        """Rank the held-back agent once every other candidate is in; 1 if it was ranked now."""
        if self.held is None or not self.cands.complete:
            return 0
        row, score, bias = self.held
        self.ranked.append(row)
        self.scores.append(score)
        self.biases.append(bias)
        self.held, self.last_resort = None, True
        return 1

    def extend(self, want: int) -> int:
        """Gather, score and rank about `want` more candidates; return how many were added."""
        rows = self.ranker.index.gather(self.cands, want)
        self.ranker.rank([self], [rows])
        return len(rows) + self._release()  # the last slice may be empty and still complete the set

    def next_free(self, free: list[int]) -> int:
        """The best-ranked candidate with a free slot (extending as needed), or -1."""
        ranked = self.ranked
        i = self.cursor
        while True:
            while i < len(ranked) and free[ranked[i]] <= 0:
                i += 1
            self.cursor = i
            if i < len(ranked):
                return ranked[i]
            if self.complete or not self.extend(max(2 * len(ranked), 64)):
                return -1

    def gather_all(self) -> None:
        """Gather every remaining candidate (for exact searches under contention)."""
        while not self.complete:
            self.extend(max(2 * len(self.ranked), 64))

    def probabilities(self) -> tuple[IntArray, FloatArray, FloatArray]:
        """(agents, scores, Born probabilities) over everything gathered."""
        agents = np.asarray(self.ranked, dtype=np.int32)
        score = np.asarray(self.scores, dtype=np.float64)
        bias = np.asarray(self.biases, dtype=np.float64)
        _, p = amplitudes.born(score, self.ranker.temperature, bias)
        return agents, score, p


@dataclass(slots=True)
class Catalog:
    """Every gathered (class, agent) pair with its score and Born probability, sorted by class then p."""

    cls: IntArray
    agent: IntArray
    score: FloatArray
    p: FloatArray
    starts: IntArray  # per class id: first row (classes without candidates have empty ranges)
    ends: IntArray
    _keys: npt.NDArray[np.int64]
    _key_order: npt.NDArray[np.int64]
    agents_total: int

    @classmethod
    def of(
        cls, ranker: Ranker, classes: int, agents_total: int, temperature: float, part: Partition | None = None
    ) -> Catalog:
        """Collect every ranked (class, agent) row with its Born probability (vectorised per class).

        Probabilities are normalised over the class's whole candidate set: the gathered rows
        `part` holds the normalisers of classes whose gathered rows are only a prefix of it.
        """
        parts = ranker.ranked_rows
        if parts:
            klass = np.concatenate([p[0] for p in parts])
            agent = np.concatenate([p[1] for p in parts])
            score = np.concatenate([p[2] for p in parts])
            bias = np.concatenate([p[3] for p in parts])
            by_class = np.argsort(klass, kind="stable")
            klass, agent, score, bias = klass[by_class], agent[by_class], score[by_class], bias[by_class]
        else:
            klass, agent = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
            score, bias = np.zeros(0), np.zeros(0)
        lengths = np.bincount(klass, minlength=classes).astype(np.int64)
        p = (
            _born(score, bias, lengths, temperature, part or Partition.gathered_only(classes, (temperature,)))
            if len(agent)
            else np.zeros(0)
        )
        order = np.lexsort((-p, klass))
        klass, agent, score, p = klass[order], agent[order], score[order], p[order]
        starts = np.searchsorted(klass, np.arange(classes), side="left").astype(np.int32)
        ends = np.searchsorted(klass, np.arange(classes), side="right").astype(np.int32)
        keys = klass.astype(np.int64) * max(agents_total, 1) + agent
        key_order = np.argsort(keys, kind="stable")
        return cls(klass, agent, score, p, starts, ends, keys[key_order], key_order, agents_total)

    def lookup(self, classes: IntArray, agents: IntArray) -> npt.NDArray[np.int64]:
        """Row of each (class, agent) pair, or -1 if the class never gathered that agent."""
        if not len(self._keys):
            return np.full(len(classes), -1, dtype=np.int64)
        wanted = classes.astype(np.int64) * max(self.agents_total, 1) + agents
        pos = np.minimum(np.searchsorted(self._keys, wanted), len(self._keys) - 1)
        found = self._keys[pos] == wanted
        return np.where(found, self._key_order[pos], -1)


def _born(
    score: FloatArray, bias: FloatArray, lengths: npt.NDArray[np.int64], temperature: float, part: Partition
) -> FloatArray:
    """Born probabilities of rows grouped by class, normalised over each class's whole candidate set."""
    ids = np.flatnonzero(lengths)
    n = lengths[ids]
    starts = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int32)
    if temperature > 0:
        logits = score / temperature + 2.0 * bias
        whole = part.log_z[temperature][ids]
        log_z = np.where(np.isnan(whole), segment_logsumexp(logits, starts), whole)
    else:  # the deterministic limit: mass only on the best score of the whole set, tilted by bias
        whole_top = part.top[ids]
        top = np.where(np.isnan(whole_top), np.maximum.reduceat(score, starts), whole_top)
        logits = np.where(score >= np.repeat(top, n) - TIE, 2.0 * bias, -np.inf)
        log_z = np.where(np.isnan(whole_top), segment_logsumexp(logits, starts), part.top_log_z[ids])
    out: FloatArray = np.exp(logits - np.repeat(log_z, n))
    return out
