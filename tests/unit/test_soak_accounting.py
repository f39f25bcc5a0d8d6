"""The soak's accounting (bench/soak.py): what counts as lost, doubled and fenced, and the memory trend."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak


def body(*history: tuple[int, str], phase: str = "Succeeded") -> dict[str, Any]:
    """A task body whose history ends each (attempt, outcome)."""
    entries = [{"attempt": a, "agent": "rt-0", "outcome": o, "phase": phase} for a, o in history]
    return {"metadata": {"name": "t"}, "status": {"phase": phase, "history": entries}}


def test_a_task_that_succeeded_on_record_is_neither_lost_nor_doubled() -> None:
    """One Lost attempt, then one Succeeded with its completion on record: all is well."""
    inc = soak.Incarnation("t", 0, "u", body((1, "Lost"), (2, "Succeeded")))
    done = [{"task": "t~0", "attempt": 2, "agent": "rt-0", "outcome": "Succeeded"}]
    assert soak.lost(done, [inc]) == []
    assert soak.doubled(done, Counter({("t~0", 1): 1, ("t~0", 2): 1}), [inc]) == []


def test_lost_counts_unfinished_tasks_and_successes_nobody_completed() -> None:
    """A task still waiting, and a Succeeded one no agent recorded, are lost; one deleted on purpose is not."""
    waiting = soak.Incarnation("w", 0, "u1", body(phase="Queued"))
    unseen = soak.Incarnation("s", 0, "u2", body((1, "Succeeded")))
    deleted = soak.Incarnation("d", 0, "u3", body(phase="Running"), deleted=True)
    assert [line.split(":")[0] for line in soak.lost([], [waiting, unseen, deleted])] == ["w~0", "s~0"]


def test_doubled_counts_an_attempt_run_twice_and_a_task_succeeding_twice() -> None:
    """Every way of doing the work twice is counted."""
    inc = soak.Incarnation("t", 0, "u", body((1, "Succeeded"), (2, "Succeeded")))
    done = [
        {"task": "t~0", "attempt": 1, "agent": "a", "outcome": "Succeeded"},
        {"task": "t~0", "attempt": 2, "agent": "b", "outcome": "Succeeded"},
        {"task": "t~0", "attempt": 2, "agent": "b", "outcome": "Succeeded"},
    ]
    found = soak.doubled(done, Counter({("t~0", 2): 2}), [inc])
    assert len(found) == 4, found  # started twice, completed twice, two successes, two Succeeded entries


def test_a_late_finish_of_an_attempt_the_operator_ended_as_lost_is_fenced_not_a_success() -> None:
    """A zombie's finish is fenced; a finish on a task deleted on purpose is neither."""
    run = soak.Soak.__new__(soak.Soak)
    run.out = soak.Outcome(seed=0, profile="short")
    inc = soak.Incarnation("t", 0, "u", body((1, "Lost"), (2, "Succeeded")))
    assert run.classify({"task": "t~0", "attempt": 1, "agent": "rt-0", "of": inc}) == "Fenced:Lost"
    assert run.classify({"task": "t~0", "attempt": 2, "agent": "rt-1", "of": inc}) == "Succeeded"
    gone = soak.Incarnation("t", 1, "v", body(phase="Running"), deleted=True)
    assert run.classify({"task": "t~1", "attempt": 1, "agent": "rt-0", "of": gone}) == "Deleted"
    assert run.out.fenced == 1


def test_trend_compares_the_first_and_last_thirds() -> None:
    """+1 MiB a minute reads as +1 MiB/min."""
    samples = [(float(t), 100.0 + t / 60) for t in range(0, 600, 10)]  # +1 MiB a minute
    first, last, slope = soak.trend(samples)
    assert first < last
    assert abs(slope - 1.0) < 0.05
