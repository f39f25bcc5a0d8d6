"""LLM providers' circuit breakers: one per provider, shared by all its agents (the rule is lifecycle/breaker.py).

A rate limit or a 5xx comes from the provider, not from the agent that met it:
counted per agent, it would open breakers one agent at a time while the provider
stays down, and tasks would hop among agents that all fail the same way. So an
attempt that fails with a provider error (`ProviderError: [Kind] ...`, see
qorch.api.protocol) counts here, for every agent naming that provider; an Open
provider breaker takes all of them out of scheduling at once, and capable agents
of other providers get the work. HalfOpen: one agent of the provider (the first
by name) takes one probe attempt at a time; its success closes the breaker.

Seeded from SchedulingPolicy `status.providers` (the leader publishes it), so a
new leader continues what the old one counted, up to the last publication.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qorch.api.enums import BreakerState
from qorch.controller.breakers import Change
from qorch.controller.lifecycle import breaker as rule

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qorch.controller.records import Breaker

__all__ = ["ProviderBreakers"]


def _stamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class ProviderBreakers:
    """Breakers by provider name."""

    held: dict[str, Breaker] = field(default_factory=dict)

    def seed(self, published: Mapping[str, Breaker]) -> None:
        """Take over what the last leader published (on winning the Lease)."""
        self.held = dict(published)

    def state(self, provider: str, now: float) -> Breaker:
        """The breaker of `provider` at wall time `now` (an Open one past its cool-down reads HalfOpen)."""
        return rule.now_state(self.held.get(provider, rule.CLOSED), now)

    def ended(self, provider: str, *, succeeded: bool, now: float, threshold: int, cooldown: float) -> Change | None:
        """An attempt on one of the provider's agents ended (written); the state change, if it moved."""
        before = self.state(provider, now)
        after = rule.after(before, succeeded=succeeded, now=now, threshold=threshold, cooldown=cooldown)
        if after == rule.CLOSED:
            self.held.pop(provider, None)  # nothing to remember: the published list stays short
        else:
            self.held[provider] = after
        return Change(before, after) if after.state is not before.state else None

    def counts(self, now: float) -> Counter[str]:
        """How many providers' breakers are in each state (those that saw errors)."""
        return Counter(rule.now_state(b, now).state.value for b in self.held.values())

    def status(self) -> list[dict[str, Any]]:
        """SchedulingPolicy `status.providers`: every breaker that is not plainly Closed, by name."""
        out = []
        for name in sorted(self.held):
            held = self.held[name]
            entry: dict[str, Any] = {
                "name": name,
                "state": held.state.value,
                "consecutiveFailures": held.failures,
            }
            if held.open_until is not None and held.state is BreakerState.OPEN:
                entry["openUntil"] = _stamp(held.open_until)
            out.append(entry)
        return out
