"""Collapse strategies, selected by name: quantum (default) and six others.

Every strategy gets the same ranked candidates (steps 3-5) and must return a
`Ledger` that respects free slots and places each task at most once. Only
`quantum` and `exact` are optimal for the priority objective; the others are
the familiar heuristics, kept for comparison and for users who want them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from qorch.api.enums import Strategy
from qorch.scheduler import collapse

if TYPE_CHECKING:
    from collections.abc import Callable

    from qorch.scheduler.snapshot import Snapshot
    from qorch.scheduler.tasks import TaskBatch
    from qorch.scheduler.views import ClassView, Ranking

__all__ = ["RANKING", "REGISTRY", "CollapseInput", "ScheduleError"]

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]


class ScheduleError(ValueError):
    """A strategy cannot run on this input (e.g. exact on a batch too large)."""


@dataclass(slots=True)
class CollapseInput:
    """What a strategy works with."""

    order: list[int]  # task indices in queue order
    effective_priority: FloatArray
    views: list[ClassView]
    class_of: list[int]
    tasks: TaskBatch
    snapshot: Snapshot
    free: IntArray
    rng: np.random.Generator
    sample: bool
    exact_limit: int


def _quantum(inp: CollapseInput) -> collapse.Ledger:
    ledger = collapse.Ledger.start(inp.free, len(inp.tasks))
    samples: dict[int, int] | None = None
    if inp.sample:
        samples = {}
        for view in inp.views:
            members = view.task_class.members
            if not len(members) or not view.ranked:
                continue
            agents, _, p = view.probabilities()
            picks = inp.rng.choice(agents, size=len(members), p=p)
            samples.update(zip(members.tolist(), picks.tolist(), strict=True))
    collapse.collapse(inp.order, inp.views, inp.class_of, ledger, exact=True, samples=samples)
    if samples is None:  # sampling asked for Born draws: keep them
        collapse.improve(inp.views, inp.class_of, ledger)
    return ledger


def _greedy(inp: CollapseInput) -> collapse.Ledger:
    """Best-fit greedy: priority order, then fewest candidates first, onto the least versatile agent."""
    pool = {v.task_class.id: len(v.ranked) + v.cands.remaining for v in inp.views}
    order = sorted(inp.order, key=lambda t: (-inp.effective_priority[t], pool[inp.class_of[t]], t))
    ledger = collapse.Ledger.start(inp.free, len(inp.tasks))
    return collapse.collapse(order, inp.views, inp.class_of, ledger, exact=False)


def _pick_loop(inp: CollapseInput, choose: Callable[[int, ClassView, IntArray, IntArray], int]) -> collapse.Ledger:
    """Shared loop for strategies that pick among a class's gathered candidates by current load."""
    ledger = collapse.Ledger.start(inp.free, len(inp.tasks))
    free_np = inp.free.copy()
    cache: dict[int, IntArray] = {}
    for t in inp.order:
        view = inp.views[inp.class_of[t]]
        agents = cache.get(view.task_class.id)
        preferred = view.preferred  # the agent a retry avoids is no choice, only a last resort
        if agents is None or len(agents) != preferred:
            agents = cache[view.task_class.id] = np.asarray(view.ranked[:preferred], dtype=np.int32)
        if not len(view.ranked):
            continue
        agent = choose(t, view, agents, free_np) if len(agents) else -1
        if agent < 0 or free_np[agent] <= 0:
            agent = view.next_free(ledger.free)
        if agent >= 0:
            ledger.assign(t, agent)
            free_np[agent] -= 1
    return ledger


def _least_loaded(inp: CollapseInput) -> collapse.Ledger:
    """Plain greedy: priority order, onto the candidate with the most free slots."""

    def choose(_t: int, _v: ClassView, agents: IntArray, free: IntArray) -> int:
        i = int(np.argmax(free[agents]))
        return int(agents[i]) if free[agents[i]] > 0 else -1

    return _pick_loop(inp, choose)


def _round_robin(inp: CollapseInput) -> collapse.Ledger:
    """Each class hands its tasks to its candidates in turn."""
    turn: dict[int, int] = {}

    def choose(_t: int, view: ClassView, agents: IntArray, free: IntArray) -> int:
        start = turn.get(view.task_class.id, 0)
        for k in range(len(agents)):
            i = (start + k) % len(agents)
            if free[agents[i]] > 0:
                turn[view.task_class.id] = i + 1
                return int(agents[i])
        return -1

    return _pick_loop(inp, choose)


def _power_of_two(inp: CollapseInput) -> collapse.Ledger:
    """Sample two candidates (seeded) and take the one with more free slots."""

    def choose(_t: int, _v: ClassView, agents: IntArray, free: IntArray) -> int:
        i, j = inp.rng.integers(0, len(agents), size=2)
        a, b = int(agents[i]), int(agents[j])
        best = a if (free[a], -i) >= (free[b], -j) else b
        return best if free[best] > 0 else -1

    return _pick_loop(inp, choose)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _consistent_hash(inp: CollapseInput) -> collapse.Ledger:
    """Rendezvous hashing: the same key lands on the same agent while it has room (sticky)."""
    names = inp.snapshot.names
    agent_hash: dict[int, npt.NDArray[np.uint64]] = {}

    def choose(t: int, view: ClassView, agents: IntArray, free: IntArray) -> int:
        hashes = agent_hash.get(view.task_class.id)
        if hashes is None or len(hashes) != len(agents):
            hashes = agent_hash[view.task_class.id] = np.array([_hash64(names[a]) for a in agents], dtype=np.uint64)
        mixed = _splitmix(hashes ^ np.uint64(_hash64(inp.tasks.key[t])))
        mixed[free[agents] <= 0] = 0
        i = int(np.argmax(mixed))
        return int(agents[i]) if free[agents[i]] > 0 else -1

    return _pick_loop(inp, choose)


def _splitmix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(0xFFFFFFFFFFFFFFFF)
        return x ^ (x >> np.uint64(31))


def _exact(inp: CollapseInput) -> collapse.Ledger:
    """Solve with scipy's linear_sum_assignment on expanded slots: priority first, score second."""
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415 - optional heavy import

    for view in inp.views:
        view.gather_all()
    agents = sorted({a for v in inp.views for a in v.ranked if inp.free[a] > 0})
    slot_agent = np.repeat(np.asarray(agents, dtype=np.int32), inp.free[agents]) if agents else np.zeros(0, np.int32)
    tasks = inp.order
    if len(tasks) * len(slot_agent) > inp.exact_limit:
        raise ScheduleError(
            f"the exact strategy is for small batches: {len(tasks)} tasks x {len(slot_agent)} slots exceeds "
            f"{inp.exact_limit:,} cells; use quantum (also exact for priority) or a smaller batchSize"
        )
    ledger = collapse.Ledger.start(inp.free, len(inp.tasks))
    if not len(slot_agent) or not tasks:
        return ledger
    column_of = {a: i for i, a in enumerate(agents)}
    starts = np.concatenate([[0], np.cumsum(inp.free[agents])])
    value = np.zeros((len(tasks), len(slot_agent)))
    eps = 0.5 / (len(tasks) + 1)
    # Priority first, exactly: which tasks a maximum-priority placement takes depends only on
    # the *order* of their priorities (the placeable sets form a matroid, whose greedy optimum
    # is the same for any order-preserving weights). So weigh each task by the dense rank of its
    # effective priority: gaps are then at least 1, and the score term (below 0.5 in all) can
    # only break ties, however small the gap aging made.
    order_of = np.unique(inp.effective_priority[tasks], return_inverse=True)[1]
    # The agent a retry avoids takes -1 for its score: below every other candidate, still a placement.
    for row, t in enumerate(tasks):
        view = inp.views[inp.class_of[t]]
        weight = float(order_of[row]) + 1.0
        shun = view.task_class.avoid_agent
        for a, s in zip(view.ranked, view.scores, strict=True):
            c = column_of.get(a)
            if c is not None:
                value[row, starts[c] : starts[c + 1]] = weight + eps * (s if a != shun else -1.0)
    rows, cols = linear_sum_assignment(value, maximize=True)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        if value[r, c] > 0:
            ledger.assign(tasks[r], int(slot_agent[c]))
    return ledger


REGISTRY: dict[Strategy, Callable[[CollapseInput], collapse.Ledger]] = {
    Strategy.QUANTUM: _quantum,
    Strategy.GREEDY: _greedy,
    Strategy.LEAST_LOADED: _least_loaded,
    Strategy.ROUND_ROBIN: _round_robin,
    Strategy.POWER_OF_TWO: _power_of_two,
    Strategy.CONSISTENT_HASH: _consistent_hash,
    Strategy.EXACT: _exact,
}

#: How each strategy wants candidates ranked before it walks them.
RANKING: dict[Strategy, Ranking] = {
    Strategy.QUANTUM: "probability",
    Strategy.GREEDY: "best-fit",
    Strategy.LEAST_LOADED: "gathered",
    Strategy.ROUND_ROBIN: "gathered",
    Strategy.POWER_OF_TWO: "gathered",
    Strategy.CONSISTENT_HASH: "gathered",
    Strategy.EXACT: "probability",
}
