"""Step 3 of a cycle: candidate agents per task class, from a capability index.

Agents are grouped into *profiles* (identical capability bitset and clearance).
A task class's candidates come from the profiles whose capabilities include
what it requires and whose clearance is high enough: a check over profiles
(a few hundred), never over agents (up to millions). Within a profile, agents
with free slots are pre-sorted by static desirability, and a class gathers
only as many as its demand calls for, extending lazily when contention uses
them up. So the cost of a cycle grows with candidates, not with the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from qorch.api.enums import Clearance, Reason
from qorch.scheduler.snapshot import BREAKER_OPEN

if TYPE_CHECKING:
    from qorch.scheduler.snapshot import Snapshot
    from qorch.scheduler.tasks import TaskClass

__all__ = ["WHOLE_POOL", "CapabilityIndex", "Candidates"]  # noqa: RUF022 - constant first

IntArray = npt.NDArray[np.int32]

#: A candidate pool at most this big (or at most 4x what is wanted) is read whole.
WHOLE_POOL = 256


@dataclass(slots=True)
class Candidates:
    """The agents gathered so far for one class, and where gathering stopped."""

    task_class: TaskClass
    profiles: IntArray
    positions: IntArray  # next unread offset in each profile's pool
    agents: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    complete: bool = False
    remaining: int = 0  # pooled agents not read yet
    next_profile: int = 0  # profiles before this one are read to the end


class CapabilityIndex:
    """Profiles of the fleet and, per profile, its agents that can take work."""

    def __init__(self, snapshot: Snapshot, free: IntArray | None = None) -> None:
        """Group agents into profiles; O(n log n) once per snapshot, not per cycle."""
        self.snapshot = snapshot
        free = snapshot.free if free is None else free
        n = len(snapshot)
        words = snapshot.capabilities.shape[1]
        key = np.empty((n, words + 1), dtype=np.uint64)
        key[:, :words] = snapshot.capabilities
        key[:, words] = snapshot.clearance.astype(np.uint64)
        rows = np.ascontiguousarray(key).view(np.dtype((np.void, key.itemsize * (words + 1)))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        self.profile_of = inverse.astype(np.int32).ravel()
        self.profile_caps = snapshot.capabilities[first] if n else np.zeros((0, words), dtype=np.uint64)
        self.profile_clearance = snapshot.clearance[first] if n else np.zeros(0, dtype=np.int8)
        count = len(first)
        # All members per profile (for reasons), and the schedulable pool sorted by desirability.
        order = np.argsort(self.profile_of, kind="stable")
        bounds = np.searchsorted(self.profile_of[order], np.arange(count + 1))
        self._members = [order[bounds[p] : bounds[p + 1]] for p in range(count)]
        usable = free > 0
        idx = np.flatnonzero(usable).astype(np.int32)
        pool_order = np.lexsort(
            (idx, snapshot.latency_ms[idx], snapshot.cost[idx], -snapshot.success_rate[idx], self.profile_of[idx])
        )
        pooled = idx[pool_order]
        pbounds = np.searchsorted(self.profile_of[pooled], np.arange(count + 1))
        self.pooled = pooled  # every agent with a free slot, grouped by profile (pool p is a slice)
        self.pool_bounds = pbounds
        self._pools = [pooled[pbounds[p] : pbounds[p + 1]] for p in range(count)]
        self._pool_sizes = np.diff(pbounds).astype(np.int64)
        self._pool_cache: dict[tuple[tuple[str, ...], int], IntArray] = {}
        self._profile_cache: dict[tuple[str, ...], IntArray] = {}
        self._ordered_cache: dict[tuple[tuple[str, ...], int], tuple[IntArray, int]] = {}
        # Best fit first: least versatile profiles, then the best agent they pool.
        versatility = np.zeros(count, dtype=np.int64)
        for w in range(words):
            versatility += np.bitwise_count(self.profile_caps[:, w]).astype(np.int64)
        best = np.array([-snapshot.success_rate[pool[0]] if len(pool) else 1.0 for pool in self._pools])
        self._preference = np.empty(count, dtype=np.int64)
        self._preference[np.lexsort((np.arange(count), best, versatility))] = np.arange(count)

    @property
    def profiles(self) -> int:
        """Number of distinct profiles."""
        return len(self._pools)

    def _requires_words(self, requires: tuple[str, ...]) -> npt.NDArray[np.uint64] | None:
        vocab = self.snapshot.capability_vocab
        words = np.zeros(self.profile_caps.shape[1] if self.profiles else 1, dtype=np.uint64)
        for cap in requires:
            bit = vocab.get(cap)
            if bit is None or bit // 64 >= words.size:
                return None  # nobody offers it
            words[bit // 64] |= np.uint64(1) << np.uint64(bit % 64)
        return words

    def capable_profiles(self, requires: tuple[str, ...]) -> IntArray:
        """Profiles offering every required capability, at any clearance."""
        cached = self._profile_cache.get(requires)
        if cached is not None:
            return cached
        words = self._requires_words(requires)
        if words is None or not self.profiles:
            found = np.zeros(0, dtype=np.int32)
        else:
            ok = np.all((self.profile_caps & words) == words, axis=1)
            found = np.flatnonzero(ok).astype(np.int32)
        self._profile_cache[requires] = found
        return found

    def candidates(self, task_class: TaskClass) -> Candidates:
        """An empty candidate set for `task_class`, ready to `gather`."""
        key = (task_class.requires, task_class.classification)
        cached = self._ordered_cache.get(key)
        if cached is None:
            capable = self.capable_profiles(task_class.requires)
            profiles = capable[self.profile_clearance[capable] >= task_class.classification]
            profiles = profiles[np.argsort(self._preference[profiles], kind="stable")]
            cached = self._ordered_cache[key] = (profiles, int(self._pool_sizes[profiles].sum()))
        profiles, pooled = cached
        cands = Candidates(task_class, profiles, np.zeros(len(profiles), dtype=np.int64))
        cands.remaining = pooled
        cands.complete = pooled == 0
        return cands

    def gather(self, cands: Candidates, want: int) -> IntArray:
        """Read about `want` more usable agents for the class; return the newly accepted ones.

        Profiles are read in best-fit order (least versatile first), so a class
        usually touches one to three of them. Small pools are read whole and shared
        between classes with the same needs. Reads are filtered by selector and budget.
        """
        if cands.complete:
            return np.zeros(0, dtype=np.int32)
        if cands.remaining <= max(WHOLE_POOL, 4 * want):
            new = self._filter(cands.task_class, self._whole_pool(cands))
        else:
            new = self._slices(cands, want)
        cands.complete = cands.remaining == 0
        cands.agents = np.concatenate([cands.agents, new]) if len(cands.agents) else new
        return new

    def _whole_pool(self, cands: Candidates) -> IntArray:
        key = (cands.task_class.requires, cands.task_class.classification)
        untouched = not cands.positions.any()
        pooled = self._pool_cache.get(key) if untouched else None
        if pooled is None:
            parts = [self._pools[p][int(cands.positions[j]) :] for j, p in enumerate(cands.profiles)]
            pooled = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, dtype=np.int32)
            if untouched:
                self._pool_cache[key] = pooled
        cands.positions[:] = self._pool_sizes[cands.profiles]
        cands.next_profile = len(cands.profiles)
        cands.remaining = 0
        return pooled

    def _slices(self, cands: Candidates, want: int) -> IntArray:
        taken: list[IntArray] = []
        got = 0
        j = cands.next_profile
        while got < want and j < len(cands.profiles):
            raw: list[IntArray] = []
            read = 0
            while read < want - got and j < len(cands.profiles):  # read a round, then filter it once
                pool = self._pools[cands.profiles[j]]
                start = int(cands.positions[j])
                chunk = pool[start : start + (want - got - read)]
                cands.positions[j] = start + len(chunk)
                cands.remaining -= len(chunk)
                if cands.positions[j] >= len(pool):
                    j += 1
                raw.append(chunk)
                read += len(chunk)
            chunk = self._filter(cands.task_class, np.concatenate(raw) if len(raw) > 1 else raw[0])
            if len(chunk):
                taken.append(chunk)
                got += len(chunk)
        cands.next_profile = j
        if not taken:
            return np.zeros(0, dtype=np.int32)
        return (np.concatenate(taken) if len(taken) > 1 else taken[0]).astype(np.int32, copy=False)

    def rest(self, cands: Candidates) -> IntArray:
        """The candidates not gathered yet (filtered), without gathering them: for normalisers."""
        if cands.complete:
            return np.zeros(0, dtype=np.int32)
        parts = [self._pools[p][int(cands.positions[j]) :] for j, p in enumerate(cands.profiles.tolist())]
        parts = [part for part in parts if len(part)]
        if not parts:
            return np.zeros(0, dtype=np.int32)
        return self._filter(cands.task_class, np.concatenate(parts).astype(np.int32, copy=False))

    def admits(self, task_class: TaskClass, rows: IntArray) -> npt.NDArray[np.bool_]:
        """Which of `rows` pass the class's selector and budget (capability and clearance aside)."""
        ok = np.ones(len(rows), dtype=np.bool_)
        if task_class.selector:
            ok &= task_class.selector.mask(self.snapshot, rows)
        if task_class.max_cost != float("inf"):
            ok &= self.snapshot.cost[rows] <= task_class.max_cost
        return ok

    def _filter(self, task_class: TaskClass, rows: IntArray) -> IntArray:
        if task_class.selector:
            rows = rows[task_class.selector.mask(self.snapshot, rows)]
        if task_class.max_cost != float("inf"):
            rows = rows[self.snapshot.cost[rows] <= task_class.max_cost]
        return rows

    def reason(self, task_class: TaskClass) -> tuple[Reason, str]:
        """Why nothing can be (or was) assigned to this class: (reason, message).

        Only called for classes left unassigned, so it may look at every capable agent.
        """
        need = ", ".join(task_class.requires) or "nothing"
        capable = self.capable_profiles(task_class.requires)
        if not len(capable):
            return Reason.NO_CAPABLE_AGENT, f"no agent offers all of [{need}]"
        cleared = capable[self.profile_clearance[capable] >= task_class.classification]
        if not len(cleared):
            return Reason.CLEARANCE_TOO_LOW, (
                f"{sum(len(self._members[p]) for p in capable)} agent(s) offer [{need}] but none has "
                f"clearance >= {Clearance.at(task_class.classification)}"
            )
        rows = np.concatenate([self._members[p] for p in cleared]).astype(np.int32)
        if task_class.selector:
            rows = rows[task_class.selector.mask(self.snapshot, rows)]
            if not len(rows):
                return Reason.SELECTOR_MISMATCH, (
                    f"agents offer [{need}] at this clearance, but none matches selector "
                    f"{task_class.selector.describe()}"
                )
        if np.isfinite(task_class.max_cost):
            rows = rows[self.snapshot.cost[rows] <= task_class.max_cost]
            if not len(rows):
                return Reason.OVER_BUDGET, f"every capable agent costs more than the budget {task_class.max_cost:g}"
        snap = self.snapshot
        ready = snap.ready[rows] & (snap.breaker[rows] != BREAKER_OPEN)
        if not ready.any():
            return (
                Reason.NO_READY_AGENT,
                f"{len(rows)} agent(s) fit but none is ready (NotReady, cordoned or breaker open)",
            )
        return Reason.CAPACITY_EXHAUSTED, (
            f"{int(ready.sum())} agent(s) fit but their free slots went to tasks of equal or higher priority"
        )
