"""The scheduler's knobs, as the pure core sees them (parsed from SchedulingPolicy or JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field

from qorch.api.enums import Strategy
from qorch.scheduler.scorers import DEFAULT_WEIGHTS

__all__ = ["DEFAULT_TEMPERATURE", "Policy"]

DEFAULT_TEMPERATURE = 0.05


@dataclass(frozen=True, slots=True)
class Policy:
    """How one cycle decides. Defaults match the CRD's defaults."""

    strategy: Strategy = Strategy.QUANTUM
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = 0
    sample: bool = False  # draw first choices from the Born distribution (exploration)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    batch_size: int | None = None  # None: every queued task is a head
    namespace_weights: dict[str, float] = field(default_factory=dict)
    namespace_quota: dict[str, int] = field(default_factory=dict)  # free concurrent slots per namespace
    entanglement_strength: float = 1.0
    couplings: dict[tuple[str, str], float] = field(default_factory=dict)
    exact_limit: int = 25_000_000  # largest tasks x slots matrix the exact strategy accepts
