"""Step 7 of a cycle: observables that say how the cycle went.

- **von Neumann entropy** S = -Tr(rho ln rho) of the demand density matrix
  rho = sum_c w_c |psi_c><psi_c|, where psi_c is class c's amplitude vector over
  agents and w_c its share of the batch's tasks. S = 0 when all demand wants the
  same agents (a hotspot); S = ln k for k equally weighted classes wanting
  disjoint agents. It is computed from the eigenvalues of the classes' Gram
  matrix sqrt(w_c w_d) <psi_c|psi_d>, which shares rho's non-zero spectrum.
- **coherence**: the share of Born probability mass that survives the collapse.
  Without competition from other classes, the k-th task (queue order) of a class
  would get the k-th best slot of its candidates (slots ranked by Born
  probability), with probability p_ideal. Coherence = sum p(assigned agent) /
  sum p_ideal over the cycle's heads, an unassigned task contributing 0. It is
  1.0 when contention displaced nobody, barely moves when a task is nudged to a
  nearly as probable agent, and falls when contention forces tasks onto much
  less probable agents or leaves them unassigned.
- **fidelity** F = (sum_i sqrt(d_i s_i))^2 between demand d (share of required
  capabilities, by task) and supply s (share of free slots offering each
  capability): 1 when the fleet's free capacity has the shape of the demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from qorch.scheduler.policy import DEFAULT_TEMPERATURE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from qorch.scheduler.index import CapabilityIndex
    from qorch.scheduler.views import Catalog, ClassView

__all__ = ["REFERENCE_TEMPERATURE", "Observables", "coherence", "entropy", "fidelity", "measure"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
REFERENCE_TEMPERATURE = DEFAULT_TEMPERATURE
ENTROPY_CLASSES = 256
ENTROPY_AGENTS = 64
_EIGEN_FLOOR = 1e-12  # eigenvalues below this are numerical noise


@dataclass(frozen=True, slots=True)
class Observables:
    """The cycle's observables (exported as metrics)."""

    entropy: float
    coherence: float
    fidelity: float


def entropy(amplitudes: Sequence[tuple[IntArray, FloatArray]], weights: Sequence[float]) -> float:
    """S(rho) for rho = sum_c w_c |psi_c><psi_c| (weights are normalised here)."""
    pairs = [(a, psi, w) for (a, psi), w in zip(amplitudes, weights, strict=True) if w > 0 and len(a)]
    if not pairs:
        return 0.0
    union: dict[int, int] = {}
    for agents, _, _ in pairs:
        for a in agents.tolist():
            union.setdefault(a, len(union))
    total = sum(w for _, _, w in pairs)
    dense = np.zeros((len(pairs), len(union)))
    for i, (agents, psi, w) in enumerate(pairs):
        cols = np.fromiter((union[a] for a in agents.tolist()), dtype=np.int64, count=len(agents))
        dense[i, cols] = psi / np.linalg.norm(psi) * np.sqrt(w / total)
    gram = dense @ dense.T if dense.shape[0] <= dense.shape[1] else dense.T @ dense  # same non-zero spectrum
    eig = np.linalg.eigvalsh(gram)
    eig = eig[eig > _EIGEN_FLOOR]
    return max(0.0, float(-(eig * np.log(eig)).sum()))


def coherence(catalog: Catalog, free: IntArray, head_rank: IntArray, agent_of: IntArray, class_of: IntArray) -> float:
    """Probability mass retained: sum p(assigned) / sum p(uncontended slot), over heads (vectorised)."""
    heads = np.flatnonzero(head_rank >= 0)
    if not len(heads) or not len(catalog.agent):
        return 1.0  # nobody had a candidate: nothing could be displaced
    heads = heads[np.lexsort((head_rank[heads], class_of[heads]))]
    cls = class_of[heads]
    has_cands = catalog.ends[cls] > catalog.starts[cls]
    first_of_class = np.searchsorted(cls, cls, side="left")
    k = np.arange(len(heads)) - first_of_class  # rank of the task within its class, in queue order
    slots = np.cumsum(free[catalog.agent]) if len(catalog.agent) else np.zeros(0, dtype=np.int64)
    base = np.where(catalog.starts[cls] > 0, slots[np.maximum(catalog.starts[cls] - 1, 0)], 0)
    target = base + k
    idx = np.searchsorted(slots, target, side="right")
    ok_slot = has_cands & (idx < catalog.ends[cls])
    ideal = np.where(ok_slot, catalog.p[np.minimum(idx, max(len(catalog.p) - 1, 0))], 0.0)
    got = agent_of[heads]
    rows = catalog.lookup(cls, np.maximum(got, 0))
    got_p = np.where((got >= 0) & (rows >= 0), catalog.p[rows], 0.0)
    total = float(ideal.sum())
    return min(1.0, float(got_p.sum()) / total) if total > 0 else 1.0


def fidelity(demand: dict[str, float], supply: dict[str, float]) -> float:
    """Classical (Bhattacharyya) fidelity of two distributions over capability names."""
    d_total = sum(demand.values())
    s_total = sum(supply.values())
    if d_total <= 0:
        return 1.0
    if s_total <= 0:
        return 0.0
    overlap = sum(np.sqrt((d / d_total) * (supply.get(k, 0.0) / s_total)) for k, d in demand.items())
    return float(min(1.0, overlap**2))


def _supply(index: CapabilityIndex, free: IntArray) -> dict[str, float]:
    snap = index.snapshot
    per_profile = np.bincount(index.profile_of, weights=free, minlength=index.profiles)
    out: dict[str, float] = {}
    for name, bit in snap.capability_vocab.ids.items():
        word, mask = bit // 64, np.uint64(1) << np.uint64(bit % 64)
        has = (index.profile_caps[:, word] & mask) != 0
        out[name] = float(per_profile[has].sum())
    return out


def measure(  # noqa: PLR0917 - one call site, the cycle's step 7
    views: Sequence[ClassView],
    catalog: Catalog,
    index: CapabilityIndex,
    free: IntArray,
    head_rank: IntArray,
    agent_of: IntArray,
    class_of: IntArray,
) -> Observables:
    """All three observables for a finished cycle.

    Entropy uses the ENTROPY_CLASSES heaviest classes, each truncated to its
    ENTROPY_AGENTS most probable agents (renormalised): exact for small batches,
    a bounded-cost estimate for large ones.
    """
    heads_per_class = np.bincount(class_of[head_rank >= 0], minlength=len(views))
    demand: dict[str, float] = {}
    for cid in np.flatnonzero(heads_per_class).tolist():
        for cap in views[cid].task_class.requires:
            demand[cap] = demand.get(cap, 0.0) + float(heads_per_class[cid])
    heaviest = np.argsort(-heads_per_class, kind="stable")[:ENTROPY_CLASSES]
    amps: list[tuple[IntArray, FloatArray]] = []
    weights: list[float] = []
    for cid in heaviest.tolist():
        a, b = int(catalog.starts[cid]), int(catalog.ends[cid])
        if heads_per_class[cid] == 0 or a == b:
            continue
        b = min(b, a + ENTROPY_AGENTS)
        amps.append((catalog.agent[a:b], np.sqrt(catalog.p[a:b])))
        weights.append(float(heads_per_class[cid]))
    return Observables(
        entropy=entropy(amps, weights),
        coherence=coherence(catalog, free, head_rank, agent_of, class_of),
        fidelity=fidelity(demand, _supply(index, free)),
    )
