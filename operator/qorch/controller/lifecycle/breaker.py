"""Rule 5, breakers: an agent whose handlers keep failing gets no new work for a while.

Per agent, as in a service mesh's outlier detection:
- Closed: work flows. `failures` consecutive failed attempts open it.
- Open: no new work until `open_until` (wall time, the cool-down).
- HalfOpen: after the cool-down, one probe attempt at a time. Its success closes the
  breaker; its failure opens it again for another cool-down.
Only attempts the agent ran and reported count (a handler's error, a timeout); a
refusal, or an agent judged lost, is liveness's business, not the breaker's. A
success while Open (an attempt that started before it opened) changes nothing.
Pure: the state is a value, time is passed in.
"""

from __future__ import annotations

from qorch.api.enums import BreakerState
from qorch.controller.records import Breaker

__all__ = ["CLOSED", "after", "now_state"]

CLOSED = Breaker()


def now_state(breaker: Breaker, now: float) -> Breaker:
    """The breaker at wall time `now`: an Open one whose cool-down is over is HalfOpen."""
    if breaker.state is BreakerState.OPEN and breaker.open_until is not None and now >= breaker.open_until:
        return Breaker(BreakerState.HALF_OPEN, breaker.failures, None)
    return breaker


def after(breaker: Breaker, *, succeeded: bool, now: float, threshold: int, cooldown: float) -> Breaker:
    """The breaker after one attempt of the agent ended (`succeeded` or failed) at wall time `now`."""
    current = now_state(breaker, now)
    if current.state is BreakerState.OPEN:
        return current if succeeded else Breaker(BreakerState.OPEN, current.failures + 1, current.open_until)
    if succeeded:
        return CLOSED
    failures = current.failures + 1
    if current.state is BreakerState.HALF_OPEN or failures >= threshold:
        return Breaker(BreakerState.OPEN, failures, now + cooldown)
    return Breaker(BreakerState.CLOSED, failures, None)
