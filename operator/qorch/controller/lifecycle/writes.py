"""Rule 6, our own writes: an object whose status writes keep failing is decided again ever more slowly.

A write refused with 409 (the object changed since the decision), or answered with
a 5xx or not at all, goes back to the loop as a fresh decision on fresh state. Once
is ordinary optimistic concurrency, so the first failure adds no wait (the ledger's
own settling still applies). Failures in a row, though, mean something keeps
refusing that object: from the second on, the object is not decided again for a
delay that doubles from `BASE` up to `CAP`, with "equal jitter" (between half and
all of it) so that objects failing together do not come back together. A written
write resets the count. The jitter is drawn from the object and the count, so the
rule gives the same answer twice.
"""

from __future__ import annotations

from qorch.controller.lifecycle.retry import jitter

__all__ = ["BASE", "CAP", "delay"]

BASE = 1.0  # seconds of wait after the second failure in a row
CAP = 60.0  # never longer (the apiserver's own request timeout is of that order)


def delay(failures: int, name: str) -> float:
    """Seconds before object `name` is decided again after `failures` failed writes in a row."""
    if failures < 2:  # noqa: PLR2004 - the first failure is a plain conflict: decide again at once
        return 0.0
    doubled = min(CAP, BASE * 2.0 ** (failures - 2))
    return doubled * (0.5 + 0.5 * jitter(name, failures))
