"""Step 2 of a cycle: the agents, as numpy arrays.

A `Snapshot` is what the scheduler knows about the fleet at the start of a
cycle: free slots, capability bitsets, clearance rank, readiness, breaker
state, success rate, cost, latency, labels and entanglement group. Columns,
not objects, so a million agents fit in a few dozen MiB and every filter and
scorer is a vectorised expression. It must never be mutated by a strategy:
collapse works on its own copy of the free-slot column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["BREAKER_CLOSED", "BREAKER_HALF_OPEN", "BREAKER_OPEN", "Snapshot", "Vocabulary"]

BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN = 0, 1, 2

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
WordArray = npt.NDArray[np.uint64]


@dataclass(slots=True)
class Vocabulary:
    """Interned strings -> dense ids (capabilities become bit positions)."""

    ids: dict[str, int] = field(default_factory=dict)

    def id(self, name: str) -> int:
        """The id of `name`, assigning the next one if new."""
        found = self.ids.get(name)
        if found is None:
            found = self.ids[name] = len(self.ids)
        return found

    def get(self, name: str) -> int | None:
        """The id of `name`, or None if never seen."""
        return self.ids.get(name)

    def __len__(self) -> int:
        """How many names are interned."""
        return len(self.ids)

    def words(self) -> int:
        """uint64 words needed for a bitset over this vocabulary (at least 1)."""
        return max(1, (len(self.ids) + 63) // 64)

    def bitset(self, names: Iterable[str], words: int) -> WordArray:
        """The bitset of `names`; unknown names get fresh ids (and may need more words)."""
        out = np.zeros(words, dtype=np.uint64)
        for name in names:
            bit = self.id(name)
            if bit // 64 >= words:
                raise IndexError("bitset too narrow")  # caller sizes words after interning
            out[bit // 64] |= np.uint64(1) << np.uint64(bit % 64)
        return out


@dataclass(slots=True)
class Snapshot:
    """The fleet, column by column. Row i is agent `names[i]`."""

    names: list[str]
    capacity: IntArray
    active: IntArray
    capabilities: WordArray  # (n, words) bitsets over `capability_vocab`
    clearance: npt.NDArray[np.int8]
    ready: BoolArray  # ready and not cordoned
    breaker: npt.NDArray[np.int8]
    success_rate: FloatArray
    cost: FloatArray
    latency_ms: FloatArray
    group: IntArray  # entanglement group id, -1 for none
    labels: dict[str, IntArray]  # label key -> value id per agent (-1 absent)
    capability_vocab: Vocabulary
    group_vocab: Vocabulary
    label_vocab: Vocabulary  # label values
    _rows: dict[str, int] | None = None  # name -> row, built on first use (names never change)

    def __len__(self) -> int:
        """Number of agents."""
        return len(self.names)

    def row_of(self, name: str) -> int:
        """The row of agent `name`, or -1 when the fleet has no such agent."""
        if self._rows is None:
            self._rows = {n: i for i, n in enumerate(self.names)}
        return self._rows.get(name, -1)

    @property
    def free(self) -> IntArray:
        """Slots an agent can take this cycle (0 for agents that cannot take work)."""
        free: IntArray = np.maximum(self.capacity - self.active, 0).astype(np.int32)
        free[~self.ready | (self.breaker == BREAKER_OPEN)] = 0
        half = self.breaker == BREAKER_HALF_OPEN
        free[half] = np.minimum(free[half], 1)  # a half-open breaker lets one probe through
        return free

    @property
    def capability_count(self) -> IntArray:
        """How many capabilities each agent has (versatility)."""
        counts = np.zeros(len(self), dtype=np.int32)
        for w in range(self.capabilities.shape[1]):
            counts += np.bitwise_count(self.capabilities[:, w]).astype(np.int32)
        return counts

    @classmethod
    def build(
        cls,
        *,
        names: Sequence[str],
        capabilities: Sequence[Sequence[str]],
        capacity: npt.ArrayLike,
        active: npt.ArrayLike | None = None,
        clearance: npt.ArrayLike | None = None,
        ready: npt.ArrayLike | None = None,
        breaker: npt.ArrayLike | None = None,
        success_rate: npt.ArrayLike | None = None,
        cost: npt.ArrayLike | None = None,
        latency_ms: npt.ArrayLike | None = None,
        groups: Sequence[str] | None = None,
        labels: Sequence[Mapping[str, str]] | None = None,
        capability_vocab: Vocabulary | None = None,
    ) -> Snapshot:
        """Build columns from per-agent values; omitted columns take the CRD defaults."""
        n = len(names)
        vocab = capability_vocab or Vocabulary()
        group_vocab = Vocabulary()
        group = np.full(n, -1, dtype=np.int32)
        for i, g in enumerate(groups or ()):
            if g:
                group[i] = group_vocab.id(g)
        label_vocab = Vocabulary()

        def column(values: npt.ArrayLike | None, dtype: npt.DTypeLike, default: object) -> npt.NDArray[Any]:
            return np.full(n, default, dtype=dtype) if values is None else np.asarray(values, dtype=dtype)

        return cls(
            names=list(names),
            capacity=column(capacity, np.int32, 1),
            active=column(active, np.int32, 0),
            capabilities=_bitsets(capabilities, vocab),
            clearance=column(clearance, np.int8, 1),
            ready=column(ready, np.bool_, True),  # noqa: FBT003 - a fill value, not a flag
            breaker=column(breaker, np.int8, BREAKER_CLOSED),
            success_rate=column(success_rate, np.float64, 1.0),
            cost=column(cost, np.float64, 0.0),
            latency_ms=column(latency_ms, np.float64, 0.0),
            group=group,
            labels=_label_columns(labels or (), n, label_vocab),
            capability_vocab=vocab,
            group_vocab=group_vocab,
            label_vocab=label_vocab,
        )


def _bitsets(capabilities: Sequence[Sequence[str]], vocab: Vocabulary) -> WordArray:
    """One bitset row per agent; each distinct set is encoded once (agents share profiles)."""
    distinct: dict[tuple[str, ...], int] = {}
    row_profile = np.empty(len(capabilities), dtype=np.int32)
    for i, caps in enumerate(capabilities):
        key = tuple(sorted(caps))
        found = distinct.get(key)
        if found is None:
            for cap in key:
                vocab.id(cap)
            found = distinct[key] = len(distinct)
        row_profile[i] = found
    words = vocab.words()
    table = np.zeros((max(len(distinct), 1), words), dtype=np.uint64)
    for key, pid in distinct.items():
        table[pid] = vocab.bitset(key, words)
    return table[row_profile] if len(capabilities) else np.zeros((0, words), dtype=np.uint64)


def _label_columns(labels: Sequence[Mapping[str, str]], n: int, vocab: Vocabulary) -> dict[str, IntArray]:
    """Label key -> value id per agent (-1 where the agent lacks the label)."""
    columns: dict[str, IntArray] = {}
    for i, agent_labels in enumerate(labels):
        for key, value in agent_labels.items():
            col = columns.get(key)
            if col is None:
                col = columns[key] = np.full(n, -1, dtype=np.int32)
            col[i] = vocab.id(value)
    return columns
