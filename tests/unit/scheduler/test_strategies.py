"""Each strategy behaves as its name promises; quantum moves tasks along augmenting paths."""

from __future__ import annotations

import numpy as np
import pytest

from qorch.api.enums import Strategy
from qorch.scheduler import Policy, schedule, synthetic
from qorch.scheduler.strategies import ScheduleError
from support.instances import placed, run, value

POOL = [{"name": f"a{i}", "capabilities": ["c"], "capacity": 4} for i in range(4)]


def test_augmenting_path_frees_a_versatile_agent() -> None:
    """t1 first takes the likelier versatile agent; t2 needs it, so t1 is moved to the specialist."""
    agents = [
        {"name": "versatile", "capabilities": ["a", "b"], "successRate": 1.0},
        {"name": "specialist", "capabilities": ["a"], "successRate": 0.2},
    ]
    tasks = [{"name": "t1", "requires": ["a"], "priority": 900}, {"name": "t2", "requires": ["b"], "priority": 800}]
    weights = {"success-rate": 1.0, "capability-fit": 0.0}
    res = run(agents, tasks, weights=weights)
    assert placed(res) == {"t1": "specialist", "t2": "versatile"}
    assert res.stats["augmented"] == 1
    assert res.explain(0).candidates[0].agent == "versatile"  # t1's most probable agent, given up for t2


def test_higher_priority_wins_the_last_slot() -> None:
    """With one slot, the task with higher priority gets it, whatever the input order."""
    res = run(
        [{"name": "a", "capabilities": ["c"]}],
        [{"name": "low", "requires": ["c"], "priority": 10}, {"name": "high", "requires": ["c"], "priority": 990}],
    )
    assert placed(res) == {"high": "a"}


def test_greedy_best_fit_prefers_the_least_versatile_agent() -> None:
    """Best-fit puts a [c] task on the [c] agent, keeping the [c, d, e] agent free."""
    res = run(
        [{"name": "wide", "capabilities": ["c", "d", "e"]}, {"name": "narrow", "capabilities": ["c"]}],
        [{"name": "t", "requires": ["c"]}],
        strategy="greedy",
    )
    assert placed(res) == {"t": "narrow"}


def test_least_loaded_spreads_by_free_slots() -> None:
    """Least-loaded sends each task to the agent with the most free slots at that moment."""
    agents = [{"name": "big", "capabilities": ["c"], "capacity": 6}, {"name": "small", "capabilities": ["c"]}]
    res = run(agents, [{"name": f"t{i}", "requires": ["c"]} for i in range(4)], strategy="least-loaded")
    assert sorted(placed(res).values()) == ["big"] * 4  # big always has more room left
    even = [{"name": "x", "capabilities": ["c"], "capacity": 2}, {"name": "y", "capabilities": ["c"], "capacity": 3}]
    res = run(even, [{"name": f"t{i}", "requires": ["c"]} for i in range(5)], strategy="least-loaded")
    assert sorted(placed(res).values()) == ["x", "x", "y", "y", "y"]


def test_round_robin_takes_turns() -> None:
    """Round-robin hands four tasks to four agents, one each."""
    res = run(POOL, [{"name": f"t{i}", "requires": ["c"]} for i in range(4)], strategy="round-robin")
    assert sorted(placed(res).values()) == ["a0", "a1", "a2", "a3"]


def test_power_of_two_is_seeded() -> None:
    """Same seed, same choices; the choices respect capacity."""
    tasks = [{"name": f"t{i}", "requires": ["c"]} for i in range(10)]
    first = placed(run(POOL, tasks, strategy="power-of-two", seed=3))
    assert first == placed(run(POOL, tasks, strategy="power-of-two", seed=3))
    assert len(first) == 10
    assert max(list(first.values()).count(a["name"]) for a in POOL) <= 4


def test_consistent_hash_is_sticky_by_key() -> None:
    """A key keeps its agent when unrelated agents join the fleet."""
    tasks = [{"name": f"t{i}", "requires": ["c"], "key": f"session-{i}"} for i in range(6)]
    before = placed(run(POOL, tasks, strategy="consistent-hash"))
    grown = [*POOL, {"name": "late", "capabilities": ["other"], "capacity": 4}]
    assert placed(run(grown, tasks, strategy="consistent-hash")) == before
    same_key = [{"name": f"u{i}", "requires": ["c"], "key": "session-0"} for i in range(2)]
    chosen = placed(run(POOL, same_key, strategy="consistent-hash"))
    assert chosen["u0"] == chosen["u1"] == before["t0"]


def test_exact_refuses_a_batch_too_large_with_advice() -> None:
    """The exact strategy names the limit and what to use instead."""
    work = synthetic.workload(50, 200, seed=1)
    with pytest.raises(ScheduleError, match="use quantum"):
        schedule(work.snapshot, work.tasks, Policy(strategy=Strategy.EXACT, exact_limit=100))


@pytest.mark.parametrize("strategy", list(Strategy), ids=[s.value for s in Strategy])
def test_every_strategy_places_an_easy_batch_fully(strategy: Strategy) -> None:
    """With room for everyone, every strategy assigns every feasible task."""
    res = run(POOL, [{"name": f"t{i}", "requires": ["c"]} for i in range(12)], strategy=strategy.value)
    assert res.assigned == 12


@pytest.mark.parametrize("seed", range(3))
def test_quantum_is_never_below_best_fit_greedy(seed: int) -> None:
    """On contended synthetic batches quantum's value is at least best-fit greedy's and equals exact."""
    work = synthetic.workload(150, 500, seed=seed, contention=0.7)
    got = {
        s: schedule(work.snapshot, work.tasks, Policy(strategy=s))
        for s in (Strategy.QUANTUM, Strategy.GREEDY, Strategy.EXACT)
    }
    vals = {s: int(work.tasks.priority[r.agent_of >= 0].sum()) for s, r in got.items()}
    assert vals[Strategy.QUANTUM] >= vals[Strategy.GREEDY]
    assert vals[Strategy.QUANTUM] == vals[Strategy.EXACT]


def test_same_input_and_seed_give_the_same_output() -> None:
    """Determinism, sampling included; a different seed may differ."""
    work = synthetic.workload(200, 600, seed=8, contention=0.9)
    policy = Policy(seed=5, sample=True, temperature=0.5)
    a = schedule(work.snapshot, work.tasks, policy).agent_of
    b = schedule(work.snapshot, work.tasks, policy).agent_of
    assert np.array_equal(a, b)
    c = schedule(work.snapshot, work.tasks, Policy(seed=6, sample=True, temperature=0.5)).agent_of
    assert not np.array_equal(a, c)


def test_sampling_explores_but_keeps_the_optimum() -> None:
    """Born sampling changes where tasks go, not how much priority is placed."""
    work = synthetic.workload(200, 600, seed=8, contention=0.8)
    greedy_collapse = schedule(work.snapshot, work.tasks, Policy())
    sampled = schedule(work.snapshot, work.tasks, Policy(sample=True, seed=1, temperature=1.0))
    assert not np.array_equal(greedy_collapse.agent_of, sampled.agent_of)
    assert value(sampled) == value(greedy_collapse) > 0


def test_exact_is_priority_first_when_aging_makes_fractional_gaps() -> None:
    """Issue 10, finding 6: 500.005 beats 500 for the last slot, however much better the other fits."""
    agents = [{"name": "a", "capabilities": ["c", "d"]}]
    tasks = [
        {"name": "aged", "requires": ["c"], "priority": 500, "waitedSeconds": 0.3},  # 500.005
        {"name": "fresh", "requires": ["c", "d"], "priority": 500},
    ]
    for strategy in ("exact", "quantum"):
        res = run(agents, tasks, strategy=strategy, weights={"capability-fit": 1.0})
        assert placed(res) == {"aged": "a"}, strategy


@pytest.mark.parametrize(
    ("agents", "tasks", "contention"),
    [(300, 1000, 0.75), (1000, 1000, None), (3000, 600, 3.0)],
    ids=["contended", "plentiful", "pools-over-256"],
)
def test_quantum_keeps_within_a_thousandth_of_the_best_total_match_quality(
    agents: int, tasks: int, contention: float | None
) -> None:
    """Same priority as exact, and total score >= 0.999 of exact's, where exact maximises it (issue 10, finding 1)."""
    work = synthetic.workload(agents, tasks, seed=0, contention=contention)
    best = schedule(work.snapshot, work.tasks, Policy(strategy=Strategy.EXACT))
    ours = schedule(work.snapshot, work.tasks, Policy())
    assert value(ours) == value(best)
    assert ours.score.sum() >= 0.999 * best.score.sum(), ours.score.sum() / best.score.sum()
