"""Events have a budget: a token bucket, with room kept for Warnings."""

from __future__ import annotations

from qorch.controller import metrics
from qorch.controller.events import EventRecorder


def post(recorder: EventRecorder, *, warning: bool) -> None:
    """One Event about a task."""
    recorder.post(kind="Task", namespace="ns", name="t", uid="u", warning=warning, reason="R", message="m")


def test_normal_events_stop_at_three_quarters_of_the_burst_and_warnings_still_go() -> None:
    """Burst 3 x 10/s = 30: Normal ones stop at 22 tokens spent; Warnings use the rest; refill is per second."""
    now = [0.0]
    recorder = EventRecorder(api=None, identity="op", per_second=10.0, clock=lambda: now[0])  # type: ignore[arg-type]
    dropped = metrics.EVENTS_DROPPED._value.get()
    for _ in range(30):
        post(recorder, warning=False)
    assert recorder._queue.qsize() == 22
    for _ in range(10):
        post(recorder, warning=True)
    assert recorder._queue.qsize() == 30
    assert metrics.EVENTS_DROPPED._value.get() == dropped + 8 + 2
    now[0] = 0.5  # five tokens back: below the Warnings' reserve of 7.5, so only a Warning goes
    post(recorder, warning=False)
    post(recorder, warning=True)
    assert recorder._queue.qsize() == 31
    now[0] = 1.5  # ten more: Normal ones go again
    post(recorder, warning=False)
    assert recorder._queue.qsize() == 32


def test_an_essential_event_goes_when_a_storm_of_warnings_spent_the_budget() -> None:
    """A breaker opening amid hundreds of failed attempts' Warnings is still posted (bench/workflows.py lost it)."""
    now = [0.0]
    recorder = EventRecorder(api=None, identity="op", per_second=10.0, clock=lambda: now[0])  # type: ignore[arg-type]
    for _ in range(100):
        post(recorder, warning=True)
    assert recorder._queue.qsize() == 30  # the bucket is empty
    recorder.post(
        kind="Agent",
        namespace="ns",
        name="bad",
        uid="u",
        warning=True,
        reason="BreakerOpen",
        message="m",
        essential=True,
    )
    assert recorder._queue.qsize() == 31
