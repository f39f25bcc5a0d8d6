"""Step 4 of a cycle: pluggable scorers, each bounded to [0, 1], weighted by policy.

Like kube-scheduler's Score plugins: one tiny interface, a registry from name to
factory, bounded scores. A scorer sees candidate (task class, agent) pairs,
one per row, and returns one score per row; it must be pure (no state across calls) and
vectorised (no Python loop over agents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from qorch.scheduler.snapshot import Snapshot

__all__ = ["DEFAULT_WEIGHTS", "REGISTRY", "ScoreContext", "Scorer", "combined", "register"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class ScoreContext:
    """What a scorer may look at: candidate (class, agent) pairs, one per row.

    Rows of many task classes are scored in one call, so every field is per row:
    `rows` are agent indices, `need` the class's number of required capabilities,
    `urgency_s` the seconds to the class's tightest deadline (inf if none).
    """

    snapshot: Snapshot
    rows: IntArray
    need: IntArray
    urgency_s: FloatArray
    free: IntArray
    capability_count: IntArray


class Scorer(Protocol):
    """Scores candidate agents for one task class. Must return values in [0, 1]."""

    @property
    def name(self) -> str:
        """The registry name, which is also the policy's weight key."""
        ...

    def __call__(self, ctx: ScoreContext) -> FloatArray:
        """One score per row of `ctx.rows`."""
        ...


@dataclass(frozen=True, slots=True)
class _Fn:
    name: str
    fn: Callable[[ScoreContext], FloatArray]

    def __call__(self, ctx: ScoreContext) -> FloatArray:
        return self.fn(ctx)


REGISTRY: dict[str, Callable[[], Scorer]] = {}


def register(name: str) -> Callable[[Callable[[ScoreContext], FloatArray]], Callable[[ScoreContext], FloatArray]]:
    """Register a scoring function under `name` (the policy's weight key)."""

    def wrap(fn: Callable[[ScoreContext], FloatArray]) -> Callable[[ScoreContext], FloatArray]:
        REGISTRY[name] = lambda: _Fn(name, fn)
        return fn

    return wrap


@register("capability-fit")
def capability_fit(ctx: ScoreContext) -> FloatArray:
    """Best fit: prefer the least versatile agent that can do it, keeping versatile ones free."""
    have = ctx.capability_count[ctx.rows].astype(np.float64)
    return (ctx.need + 1.0) / (have + 1.0)


@register("headroom")
def headroom(ctx: ScoreContext) -> FloatArray:
    """Spread load: the share of the agent's slots that are still free."""
    cap = ctx.snapshot.capacity[ctx.rows].astype(np.float64)
    return np.clip(ctx.free[ctx.rows] / np.maximum(cap, 1.0), 0.0, 1.0)


@register("success-rate")
def success_rate(ctx: ScoreContext) -> FloatArray:
    """Prefer agents whose tasks succeed."""
    return np.clip(ctx.snapshot.success_rate[ctx.rows], 0.0, 1.0)


@register("cost")
def cost(ctx: ScoreContext) -> FloatArray:
    """Prefer cheaper providers: 1 at zero cost, 0.5 at one unit per task."""
    return 1.0 / (1.0 + np.maximum(ctx.snapshot.cost[ctx.rows], 0.0))


@register("latency")
def latency(ctx: ScoreContext) -> FloatArray:
    """Prefer faster providers: 1 at zero latency, 0.5 at one second."""
    return 1.0 / (1.0 + np.maximum(ctx.snapshot.latency_ms[ctx.rows], 0.0) / 1000.0)


@register("deadline-slack")
def deadline_slack(ctx: ScoreContext) -> FloatArray:
    """For urgent classes, the share of the remaining time left after the agent's latency."""
    urgent = np.isfinite(ctx.urgency_s)
    out = np.ones(len(ctx.rows))
    if urgent.any():
        slack = np.maximum(ctx.urgency_s[urgent], 1e-3)
        out[urgent] = np.clip(1.0 - (ctx.snapshot.latency_ms[ctx.rows[urgent]] / 1000.0) / slack, 0.0, 1.0)
    return out


DEFAULT_WEIGHTS: dict[str, float] = {
    "capability-fit": 1.0,
    "headroom": 1.0,
    "success-rate": 2.0,
    "cost": 0.5,
    "latency": 0.5,
    "deadline-slack": 1.0,
}


def combined(ctx: ScoreContext, weights: Mapping[str, float]) -> FloatArray:
    """The weighted mean of every registered scorer with a positive weight; in [0, 1]."""
    total = np.zeros(len(ctx.rows))
    norm = 0.0
    for name, weight in weights.items():
        if weight <= 0:
            continue
        factory = REGISTRY.get(name)
        if factory is None:
            continue  # validated at the edge (policy parsing); ignore here
        total += weight * np.clip(factory()(ctx), 0.0, 1.0)
        norm += weight
    return total / norm if norm else np.full(len(ctx.rows), 0.5)
