"""Hypothesis: no strategy ever breaks feasibility or capacity, and quantum is exactly optimal."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qorch.api.enums import Strategy
from support.instances import run, value

LEVELS = ["public", "internal", "confidential", "secret", "topsecret"]
CAPS = ["a", "b", "c", "d"]

agent_st = st.fixed_dictionaries(
    {
        "capabilities": st.lists(st.sampled_from(CAPS), max_size=3, unique=True),
        "capacity": st.integers(1, 3),
        "activeTasks": st.integers(0, 3),
        "clearance": st.sampled_from(LEVELS),
        "ready": st.booleans(),
        "cordoned": st.booleans(),
        "successRate": st.floats(0, 1),
        "costPerTask": st.floats(0, 3),
        "labels": st.fixed_dictionaries({"zone": st.sampled_from(["x", "y"])}),
        "breaker": st.sampled_from(["Closed", "Closed", "HalfOpen", "Open"]),
    }
)
task_st = st.fixed_dictionaries(
    {
        "requires": st.lists(st.sampled_from(CAPS), max_size=2, unique=True),
        "priority": st.integers(0, 1000),
        "classification": st.sampled_from(LEVELS),
    },
    optional={
        "agentSelector": st.fixed_dictionaries({"zone": st.sampled_from(["x", "y"])}),
        "maxCost": st.floats(0, 3),
        "avoidAgent": st.sampled_from([f"a{i}" for i in range(8)]),  # a retry: the agent that failed it
    },
)
instance_st = st.tuples(st.lists(agent_st, min_size=1, max_size=8), st.lists(task_st, max_size=14))


def _named(agents: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    return (
        [{"name": f"a{i}", **a} for i, a in enumerate(agents)],
        [{"name": f"t{i}", **t} for i, t in enumerate(tasks)],
    )


def _feasible(agent: dict[str, Any], task: dict[str, Any]) -> bool:
    """An independent restatement of DESIGN.md's feasibility rule."""
    return (
        agent["ready"]
        and not agent["cordoned"]
        and agent["breaker"] != "Open"
        and set(task["requires"]) <= set(agent["capabilities"])
        and LEVELS.index(task["classification"]) <= LEVELS.index(agent["clearance"])
        and all(agent["labels"].get(k) == v for k, v in task.get("agentSelector", {}).items())
        and agent["costPerTask"] <= task.get("maxCost", float("inf"))
    )


def _slots(agent: dict[str, Any]) -> int:
    free = max(agent["capacity"] - agent["activeTasks"], 0)
    return min(free, 1) if agent["breaker"] == "HalfOpen" else free


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance_st, st.sampled_from(list(Strategy)), st.integers(0, 5))
def test_no_strategy_breaks_feasibility_or_capacity(
    instance: tuple[list[Any], list[Any]], strategy: Strategy, seed: int
) -> None:
    """No infeasible pair, no agent over its free slots, no task twice, for every strategy."""
    agents, tasks = _named(*instance)
    result = run(agents, tasks, strategy=strategy.value, seed=seed, sample=seed % 2 == 1)
    by_name = {a["name"]: a for a in agents}
    load: dict[str, int] = {}
    seen: set[str] = set()
    for t, a in enumerate(result.agent_of.tolist()):
        if a < 0:
            continue
        task, agent = tasks[t], by_name[result.snapshot.names[a]]
        assert task["name"] not in seen
        seen.add(task["name"])
        assert _feasible(agent, task), (task, agent)
        load[agent["name"]] = load.get(agent["name"], 0) + 1
    for name, used in load.items():
        assert used <= _slots(by_name[name])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance_st)
def test_quantum_reaches_the_exact_optimum(instance: tuple[list[Any], list[Any]]) -> None:
    """Priority-weighted value equals linear_sum_assignment's optimum on every instance."""
    agents, tasks = _named(*instance)
    assert value(run(agents, tasks)) == value(run(agents, tasks, strategy="exact"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance_st)
def test_avoiding_the_agent_that_failed_a_retry_never_costs_priority(instance: tuple[list[Any], list[Any]]) -> None:
    """Retries avoid their failed agent, yet quantum places exactly the priority it would place without that."""
    agents, tasks = _named(*instance)
    plain = [{k: v for k, v in t.items() if k != "avoidAgent"} for t in tasks]
    assert value(run(agents, tasks)) == value(run(agents, plain)) == value(run(agents, tasks, strategy="exact"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(agent_st, min_size=1, max_size=8), task_st, st.integers(0, 7), st.sampled_from(list(Strategy)))
def test_a_lone_retry_runs_on_its_failed_agent_only_when_no_other_can(
    agents: list[dict[str, Any]], task: dict[str, Any], failed: int, strategy: Strategy
) -> None:
    """Alone in its batch, a retry lands on the agent it avoids only when no other feasible agent has room."""
    named, [retry] = _named(agents, [{**task, "avoidAgent": f"a{failed}"}])
    result = run(named, [retry], strategy=strategy.value)
    others = [a for a in named if a["name"] != retry["avoidAgent"] and _feasible(a, retry) and _slots(a) > 0]
    chosen = int(result.agent_of[0])
    if chosen >= 0 and result.snapshot.names[chosen] == retry["avoidAgent"]:
        assert not others, (retry, others)
    if others:
        assert chosen >= 0


@settings(max_examples=60, deadline=None)
@given(instance_st, st.integers(0, 10))
def test_every_task_gets_an_answer(instance: tuple[list[Any], list[Any]], seed: int) -> None:
    """Each task is assigned or carries a reason and a message."""
    agents, tasks = _named(*instance)
    result = run(agents, tasks, seed=seed)
    doc = result.to_contract()
    answered = {a["task"] for a in doc["assignments"]} | {u["task"] for u in doc["unassigned"]}
    assert answered == {t["name"] for t in tasks}
    for entry in doc["unassigned"]:
        assert entry["reason"]
        assert entry["message"]
