"""The operator's memory of every agent's circuit breaker (the rule itself is lifecycle/breaker.py).

Seeded from each Agent's `status.breaker` when the kernel first looks at the agent (and
again on every take-over: another leader may have moved it meanwhile), so a new leader
continues what the old one counted; changed only by attempts whose end was written (a
transition that did not land is decided again, and must not count twice) and by the end
of a cool-down. A breaker belongs to one Agent incarnation (its uid): an Agent recreated
under the same name starts from its own status, not from the old one's failures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qorch.api.enums import BreakerState
from qorch.controller.lifecycle import breaker as rule

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qorch.controller.records import AgentRecord, Breaker, Key

__all__ = ["Breakers", "Change"]


@dataclass(frozen=True, slots=True)
class Change:
    """A breaker moved from one state to another."""

    before: Breaker
    after: Breaker


@dataclass(slots=True)
class Breakers:
    """Breakers by agent."""

    held: dict[Key, Breaker] = field(default_factory=dict)
    uids: dict[Key, str] = field(default_factory=dict)  # agent -> uid of the Agent its held breaker belongs to

    def state(self, key: Key, agents: Mapping[Key, AgentRecord], now: float) -> Breaker:
        """The breaker of `key` at wall time `now` (an Open one past its cool-down reads HalfOpen)."""
        agent = agents.get(key)
        current = self._held(key, agent)
        if current is None:
            current = agent.breaker if agent is not None else rule.CLOSED
        return rule.now_state(current, now)

    def _held(self, key: Key, agent: AgentRecord | None) -> Breaker | None:
        """The breaker held for `key`, unless it was another incarnation's (then it is forgotten)."""
        current = self.held.get(key)
        if current is not None and agent is not None and self.uids.get(key) != agent.uid:
            self.forget(key)
            return None
        return current

    def recreated(self, agent: AgentRecord) -> bool:
        """Whether the breaker held under `agent`'s name was another incarnation's (it is forgotten now)."""
        return agent.key in self.held and self._held(agent.key, agent) is None

    def seed(self, agent: AgentRecord) -> None:
        """Hold the breaker `agent`'s status shows, unless one is held for it already (or it is plain Closed)."""
        if self._held(agent.key, agent) is not None or agent.breaker == rule.CLOSED:
            return
        self.held[agent.key] = agent.breaker
        self.uids[agent.key] = agent.uid

    def cooled(self, key: Key, now: float) -> Change | None:
        """The move Open -> HalfOpen of a held breaker whose cool-down is over at wall time `now`, once."""
        before = self.held.get(key)
        if before is None or before.state is not BreakerState.OPEN:
            return None
        after = rule.now_state(before, now)
        if after.state is BreakerState.OPEN:
            return None
        self.held[key] = after
        return Change(before, after)

    def ended(
        self,
        key: Key,
        agents: Mapping[Key, AgentRecord],
        *,
        succeeded: bool,
        now: float,
        threshold: int,
        cooldown: float,
    ) -> Change | None:
        """An attempt of `key` ended and its end was written; the state change, if the state moved."""
        before = self.state(key, agents, now)
        after = rule.after(before, succeeded=succeeded, now=now, threshold=threshold, cooldown=cooldown)
        agent = agents.get(key)
        self.held[key] = after
        self.uids[key] = agent.uid if agent is not None else ""
        return Change(before, after) if after.state is not before.state else None

    def forget(self, key: Key) -> None:
        """The agent is gone (or was replaced by another of the same name)."""
        self.held.pop(key, None)
        self.uids.pop(key, None)

    def clear(self) -> None:
        """Forget every breaker: a new term takes them from the Agents' status again."""
        self.held.clear()
        self.uids.clear()

    def counts(self, now: float) -> Counter[str]:
        """How many known breakers are in each state (Closed ones included once they failed)."""
        return Counter(rule.now_state(b, now).state.value for b in self.held.values())

    @staticmethod
    def admits(current: Breaker) -> bool:
        """Whether the agent may be offered work at all (HalfOpen: one probe, see `probe_load`)."""
        return current.state is not BreakerState.OPEN
