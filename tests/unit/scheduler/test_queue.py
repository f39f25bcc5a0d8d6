"""Step 1: effective priority with deadline and waiting aging, weighted fair share, quotas."""

from __future__ import annotations

import numpy as np
import pytest

from qorch.scheduler import queue
from qorch.scheduler.snapshot import Snapshot
from qorch.scheduler.tasks import TaskBatch

SNAP = Snapshot.build(names=["a"], capabilities=[["c"]], capacity=[1])


def batch(**columns: object) -> TaskBatch:
    """A batch of tasks named t0.. with the given columns."""
    n = len(next(iter(columns.values())))  # type: ignore[arg-type]
    return TaskBatch.build(SNAP, names=[f"t{i}" for i in range(n)], **columns)  # type: ignore[arg-type]


def test_deadline_aging_raises_effective_priority_up_to_the_boost() -> None:
    """No deadline: +0; an hour or more away: +0; half an hour: +125; due now: +250."""
    b = batch(priority=[500] * 4, deadline_s=[np.inf, 7200.0, 1800.0, 0.0])
    assert queue.effective_priority(b).tolist() == pytest.approx([500, 500, 625, 750])


def test_waiting_aging_is_one_point_a_minute_capped() -> None:
    """Ten minutes waited: +10; a day: +100 (the cap)."""
    b = batch(priority=[500, 500], waited_s=[600.0, 86400.0])
    assert queue.effective_priority(b).tolist() == pytest.approx([510, 600])


def test_an_urgent_task_overtakes_a_slightly_higher_priority() -> None:
    """Priority 450 due in a minute is decided before priority 500 with no deadline."""
    b = batch(priority=[500, 450], deadline_s=[np.inf, 60.0])
    order, _ = queue.heads(b)
    assert order.tolist() == [1, 0]


def test_weighted_fair_share_splits_a_full_batch() -> None:
    """Namespaces weighted 2:1 with 30 heads among 60 equal tasks get 20 and 10."""
    b = batch(priority=[500] * 60, namespaces=["a"] * 30 + ["b"] * 30)
    order, _ = queue.heads(b, batch_size=30, weights={"a": 2.0, "b": 1.0})
    picked = [b.namespaces[b.namespace[i]] for i in order.tolist()]
    assert picked.count("a") == 20
    assert picked.count("b") == 10


def test_fair_share_never_overrides_priority_inside_the_batch() -> None:
    """Within the chosen heads, decisions go by effective priority."""
    b = batch(priority=[100, 900, 500], namespaces=["a", "b", "a"])
    order, _ = queue.heads(b)
    assert order.tolist() == [1, 2, 0]


def test_quota_caps_heads_per_namespace() -> None:
    """A namespace with 2 free concurrent slots contributes at most 2 heads, its best ones."""
    b = batch(priority=[100, 900, 500, 700], namespaces=["a", "a", "a", "b"])
    order, _ = queue.heads(b, quota={"a": 2})
    assert sorted(order.tolist()) == [1, 2, 3]
