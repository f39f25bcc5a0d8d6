"""Each strategy behaves as its name promises; quantum moves tasks along augmenting paths."""

from __future__ import annotations

import numpy as np
import pytest

from qorch.api.enums import Strategy
from qorch.scheduler import Policy, schedule, synthetic
from qorch.scheduler.strategies import ScheduleError
from qorch.scheduler.tasks import TaskBatch
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


# ---------------------------------------------------------------------------------------------- retries (issue 13)
FAILED = {"name": "failed", "capabilities": ["c"], "successRate": 1.0}  # the better one: chosen when nothing is avoided
OTHER = {"name": "other", "capabilities": ["c"], "successRate": 0.5}


@pytest.mark.parametrize("strategy", list(Strategy), ids=[s.value for s in Strategy])
def test_a_retry_avoids_the_agent_that_failed_it_but_never_starves(strategy: Strategy) -> None:
    """Every strategy: another capable agent with room gets the retry; else the agent that failed it does."""
    retry = [{"name": "t", "requires": ["c"], "avoidAgent": "failed"}]
    assert placed(run([FAILED, OTHER], [{"name": "t", "requires": ["c"]}], strategy="quantum")) == {"t": "failed"}
    assert placed(run([FAILED, OTHER], retry, strategy=strategy.value)) == {"t": "other"}
    assert placed(run([FAILED], retry, strategy=strategy.value)) == {"t": "failed"}  # the only capable one
    full = {**OTHER, "activeTasks": 1}
    assert placed(run([FAILED, full], retry, strategy=strategy.value)) == {"t": "failed"}  # the only one with room
    unknown = [{**retry[0], "avoidAgent": "gone"}]  # an agent no longer in the fleet avoids nothing
    fresh = [{"name": "t", "requires": ["c"]}]
    assert placed(run([FAILED, OTHER], unknown, strategy=strategy.value)) == placed(
        run([FAILED, OTHER], fresh, strategy=strategy.value)
    )


def test_the_avoided_agent_has_no_probability_while_another_candidate_exists() -> None:
    """Its bias is AVOIDED lower: the explanation lists it last with p = 0, the choice gets all of it."""
    res = run([FAILED, OTHER], [{"name": "t", "requires": ["c"], "avoidAgent": "failed"}])
    shown = [(c.agent, c.probability) for c in res.explain(0).candidates]
    assert shown == [("other", 1.0), ("failed", 0.0)]
    assert res.probability[0] == 1.0
    alone = run([FAILED], [{"name": "t", "requires": ["c"], "avoidAgent": "failed"}])
    assert alone.probability[0] == 1.0  # the last resort, when it is the only one, is certain


def test_avoiding_an_agent_never_costs_a_placement() -> None:
    """The retry comes first and avoids `failed`, but the later task can only run on `other`.

    The augmenting path moves the retry to its last resort so that both run: avoidance is a
    preference, never a reason to leave work unplaced.
    """
    agents = [{"name": "failed", "capabilities": ["c"]}, {"name": "other", "capabilities": ["c", "d"]}]
    tasks = [
        {"name": "retry", "requires": ["c"], "priority": 900, "avoidAgent": "failed"},
        {"name": "special", "requires": ["d"], "priority": 100},
    ]
    for strategy in ("quantum", "exact"):
        assert placed(run(agents, tasks, strategy=strategy)) == {"retry": "failed", "special": "other"}, strategy
    assert placed(run(agents, tasks[:1])) == {"retry": "other"}


def test_a_retry_avoids_its_agent_in_a_pool_read_in_slices() -> None:
    """3,000 agents: a class reads its candidates lazily, so the avoided agent is held back, not just ranked low.

    The agent the fresh task gets is the one its retry avoids; the retry goes elsewhere, its
    class is a class of its own, and the quality pass never moves it back.
    """
    snap = synthetic.fleet(3000, seed=3)
    fresh = schedule(snap, TaskBatch.build(snap, names=["t"], requires=[["skill-0"]]), Policy())
    best = snap.names[int(fresh.agent_of[0])]
    view = fresh.views[0]
    assert not view.complete  # more than 256 candidates: read in slices
    batch = TaskBatch.build(snap, names=["t", "u"], requires=[["skill-0"], ["skill-0"]], avoid_agents=[best, ""])
    assert len(batch.classes) == 2
    assert batch.classes[int(batch.class_of[0])].avoid_agent == snap.row_of(best)
    assert batch.subset(np.array([0], dtype=np.int32)).classes[0].avoid_agent == snap.row_of(best)
    for strategy in Strategy:
        if strategy is Strategy.EXACT:
            continue  # 3,000 agents are too many for it
        res = schedule(snap, batch, Policy(strategy=strategy))
        assert res.agent_of[0] >= 0, strategy
        assert snap.names[int(res.agent_of[0])] != best, strategy
    res = schedule(snap, batch, Policy())
    assert res.views[int(batch.class_of[0])].held is not None  # gathered, held back, never needed
    assert snap.names[int(res.agent_of[1])] == best  # the task that avoids nothing still gets it
