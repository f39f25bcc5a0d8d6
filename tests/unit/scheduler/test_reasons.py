"""Every unassigned task says why, with the best candidates: 'why is my task pending?'."""

from __future__ import annotations

import pytest

from support.instances import run

CODER = {
    "name": "coder",
    "capabilities": ["code"],
    "clearance": "internal",
    "labels": {"zone": "a"},
    "costPerTask": 2.0,
}


@pytest.mark.parametrize(
    ("agents", "task", "reason", "words"),
    [
        pytest.param([CODER], {"requires": ["gpu"]}, "NoCapableAgent", "gpu", id="no-capable-agent"),
        pytest.param(
            [CODER],
            {"requires": ["code"], "classification": "secret"},
            "ClearanceTooLow",
            "secret",
            id="clearance-too-low",
        ),
        pytest.param(
            [CODER],
            {"requires": ["code"], "agentSelector": {"zone": "b"}},
            "SelectorMismatch",
            "zone=b",
            id="selector-mismatch",
        ),
        pytest.param([CODER], {"requires": ["code"], "maxCost": 1.0}, "OverBudget", "budget", id="over-budget"),
        pytest.param([{**CODER, "ready": False}], {"requires": ["code"]}, "NoReadyAgent", "ready", id="no-ready-agent"),
        pytest.param(
            [{**CODER, "breaker": "Open"}], {"requires": ["code"]}, "NoReadyAgent", "breaker", id="breaker-open"
        ),
        pytest.param(
            [{**CODER, "activeTasks": 1}], {"requires": ["code"]}, "CapacityExhausted", "slots", id="capacity-exhausted"
        ),
    ],
)
def test_the_reason_names_the_obstacle(agents: list[dict], task: dict, reason: str, words: str) -> None:
    """The reason is the first obstacle in order: capability, clearance, selector, budget, readiness, capacity."""
    doc = run(agents, [{"name": "t", **task}]).to_contract()
    assert doc["assignments"] == []
    (entry,) = doc["unassigned"]
    assert entry["reason"] == reason
    assert words in entry["message"]


def test_losing_to_higher_priority_explains_with_candidates() -> None:
    """A task that lost its only agent to a more important one lists that agent as its best candidate."""
    res = run(
        [CODER],
        [
            {"name": "vip", "requires": ["code"], "priority": 1000},
            {"name": "me", "requires": ["code"], "priority": 1, "classification": "public"},
        ],
    )
    doc = res.to_contract()
    (entry,) = doc["unassigned"]
    assert entry["task"] == "me"
    assert entry["reason"] == "CapacityExhausted"
    assert entry["candidates"][0]["agent"] == "coder"
    explanation = res.explain(1)
    assert explanation.summary.startswith("CapacityExhausted")
    assigned = res.explain(0)
    assert "assigned to coder" in assigned.summary
    assert assigned.candidates[0].agent == "coder"


def test_tasks_left_out_of_the_batch_say_so() -> None:
    """With batchSize 1, the second task is NotInBatch rather than silently dropped."""
    doc = run(
        [{**CODER, "capacity": 5}],
        [{"name": "a", "requires": ["code"], "priority": 900}, {"name": "b", "requires": ["code"]}],
        batchSize=1,
    ).to_contract()
    assert [a["task"] for a in doc["assignments"]] == ["a"]
    assert doc["unassigned"][0]["reason"] == "NotInBatch"
