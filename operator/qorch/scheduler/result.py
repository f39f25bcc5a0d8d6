"""What a cycle decided: an answer for every task, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from qorch.api.enums import Reason

if TYPE_CHECKING:
    from qorch.scheduler.observables import Observables
    from qorch.scheduler.snapshot import Snapshot
    from qorch.scheduler.tasks import TaskBatch
    from qorch.scheduler.views import Catalog, ClassView

__all__ = ["Candidate", "Explanation", "Result"]

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
_TOP = 3


@dataclass(frozen=True, slots=True)
class Candidate:
    """An agent a task's class considered."""

    agent: str
    score: float
    probability: float


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a task went where it went, or why it is still waiting."""

    summary: str
    candidates: tuple[Candidate, ...]


@dataclass(slots=True)
class Result:
    """Per task: agent row (-1 if unassigned), score and Born probability of the choice."""

    snapshot: Snapshot
    tasks: TaskBatch
    agent_of: IntArray
    score: FloatArray
    probability: FloatArray
    reasons: dict[int, tuple[Reason, str]]  # class id -> (reason, message) for classes left short
    heads: IntArray  # rank in decision order, -1 when the task was not a head this cycle
    views: list[ClassView]
    catalog: Catalog  # every ranked (class, agent) pair with its score and calibrated probability
    observables: Observables
    strategy: str
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def assigned(self) -> int:
        """How many tasks were assigned."""
        return int(np.sum(self.agent_of >= 0))

    def reason(self, task: int) -> tuple[Reason, str] | None:
        """(reason, message) for an unassigned task; None if it was assigned."""
        if self.agent_of[task] >= 0:
            return None
        if self.heads[task] < 0:
            return Reason.NOT_IN_BATCH, "not taken into this cycle's batch (batch size, fair share or quota)"
        return self.reasons.get(int(self.tasks.class_of[task]), (Reason.CAPACITY_EXHAUSTED, "no free slot"))

    def explain(self, task: int) -> Explanation:
        """The best candidates of the task's class and a one-line summary."""
        cid = int(self.tasks.class_of[task])
        first, end = int(self.catalog.starts[cid]), int(self.catalog.ends[cid])  # rows sorted by p, best first
        names = self.snapshot.names
        cat = self.catalog
        cands = tuple(
            Candidate(names[int(cat.agent[i])], float(cat.score[i]), float(cat.p[i]))
            for i in range(first, min(end, first + _TOP))
        )
        chosen = int(self.agent_of[task])
        if chosen >= 0:
            summary = (
                f"assigned to {names[chosen]} (score {self.score[task]:.3f}, probability {self.probability[task]:.3f}) "
                f"by {self.strategy} among {end - first} ranked candidate(s)"
            )
        else:
            reason = self.reason(task)
            summary = f"{reason[0]}: {reason[1]}" if reason else "unassigned"
        return Explanation(summary, cands)

    def to_contract(self) -> dict[str, Any]:
        """The offline contract's output document (see docs/scheduler.md)."""
        names = self.snapshot.names
        assignments = [
            {
                "task": self.tasks.names[t],
                "agent": names[a],
                "probability": round(float(self.probability[t]), 6),
                "score": round(float(self.score[t]), 6),
            }
            for t, a in enumerate(self.agent_of.tolist())
            if a >= 0
        ]
        unassigned = []
        for t in np.flatnonzero(self.agent_of < 0).tolist():
            reason, message = self.reason(t) or ("", "")
            entry: dict[str, Any] = {"task": self.tasks.names[t], "reason": reason, "message": message}
            expl = self.explain(t)
            if expl.candidates:
                entry["candidates"] = [
                    {"agent": c.agent, "score": round(c.score, 6), "probability": round(c.probability, 6)}
                    for c in expl.candidates
                ]
            unassigned.append(entry)
        obs = self.observables
        return {
            "assignments": assignments,
            "unassigned": unassigned,
            "observables": {
                "entropy": round(obs.entropy, 6),
                "coherence": round(obs.coherence, 6),
                "fidelity": round(obs.fidelity, 6),
            },
            "stats": {"seconds": round(self.seconds, 6), "strategy": self.strategy, **self.stats},
        }
