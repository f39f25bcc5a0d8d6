"""The agent protocol's reading of a Task body: which attempt an agent may claim, or must finish."""

from __future__ import annotations

from qorch.api import protocol
from support import bodies


def test_the_assigned_agent_may_claim_the_current_attempt() -> None:
    """Assigned to `a` as attempt 2: `a` may claim (uid, 2); nobody else may."""
    body = bodies.task("t", status=bodies.assigned("a", 2))
    assert protocol.claimable(body, "a") == protocol.AttemptId("uid-t", 2)
    assert protocol.claimable(body, "b") is None


def test_a_cancelled_task_is_never_claimed() -> None:
    """spec.cancel: no claim, even while the operator has not written Cancelled yet."""
    body = bodies.task("t", cancel=True, status=bodies.assigned("a", 1))
    assert protocol.cancelled(body)
    assert protocol.claimable(body, "a") is None
    assert protocol.current(body, "a") == protocol.AttemptId("uid-t", 1)  # still finishable


def test_a_claimed_attempt_is_not_claimed_twice() -> None:
    """A report showing the claim of the current attempt closes it to claims."""
    body = bodies.task("t", status=bodies.assigned("a", 1, execution=bodies.execution("a", 1)))
    assert protocol.claimable(body, "a") is None
