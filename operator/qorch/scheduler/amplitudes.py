"""Step 5 of a cycle: amplitudes, Born probabilities and entanglement.

Definitions (docs/scheduler.md has the reasoning and worked examples):

- amplitude   psi_t(a) = sqrt(softmax(s_t / T))(a) * exp(eta * (J[g_t, g_a] - J[h_t, g_a])),
  renormalised so that sum_a psi_t(a)^2 = 1. s_t are the class's weighted scores, T the
  temperature, g_t the task's entanglement group, h_t the failure domain of its last
  failed attempt, g_a the agent's group, and J the group correlation matrix (identity by
  default: an agent is fully correlated with its own group only).
- Born probability p_t(a) = psi_t(a)^2 = softmax(s_t / T + 2 eta (J[g_t, g_a] - J[h_t, g_a])).
- entanglement matrix over agents E[a, b] = J[g_a, g_b]: agents of one group (a shared
  failure domain or team) are correlated, so a task of that group is pulled toward all of
  them, and a retry is pushed away from all of them at once.
At T = 0 the distribution collapses onto the best-scoring agents (ties split evenly,
then tilted by entanglement), which is the deterministic optimum the collapse uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from qorch.scheduler.snapshot import Snapshot

__all__ = ["Entanglement", "born"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]


@dataclass(slots=True)
class Entanglement:
    """The group correlation matrix J (groups x groups) and its strength eta."""

    groups: int
    strength: float = 1.0
    couplings: dict[tuple[int, int], float] = field(default_factory=dict)

    def matrix(self) -> FloatArray:
        """J: identity plus symmetric couplings in [0, 1]."""
        j = np.eye(self.groups)
        for (a, b), value in self.couplings.items():
            j[a, b] = j[b, a] = value
        return j

    def bias(self, snapshot: Snapshot, rows: IntArray, group: IntArray, avoid: IntArray) -> FloatArray:
        """Return eta * (J[g_t, g_a] - J[h_t, g_a]) per row (0 where a group is unset).

        `group` and `avoid` are the task class's affinity group and failure domain per row.
        """
        out = np.zeros(len(rows))
        if self.strength == 0 or self.groups == 0 or not ((group >= 0).any() or (avoid >= 0).any()):
            return out
        agent_groups = snapshot.group[rows]
        j = self.matrix()
        pull = (group >= 0) & (agent_groups >= 0)
        out[pull] += j[group[pull], agent_groups[pull]]
        push = (avoid >= 0) & (agent_groups >= 0)
        out[push] -= j[avoid[push], agent_groups[push]]
        return self.strength * out


def born(scores: FloatArray, temperature: float, bias: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """(psi, p) for one task class over its candidates, as defined in the module docstring."""
    if len(scores) == 0:
        empty = np.zeros(0)
        return empty, empty
    tilt = 2.0 * bias if bias is not None else np.zeros(len(scores))
    if temperature <= 0:
        top = scores >= scores.max() - 1e-12
        logits = np.where(top, tilt, -np.inf)
    else:
        logits = scores / temperature + tilt
    logits = logits - logits.max()
    weights = np.exp(logits)
    p = weights / weights.sum()
    return np.sqrt(p), p
