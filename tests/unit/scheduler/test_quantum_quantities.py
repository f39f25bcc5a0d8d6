"""Every quantum quantity matches a hand-computed value (definitions in docs/scheduler.md)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qorch.scheduler import amplitudes, observables, partition, synthetic
from qorch.scheduler import schedule as run_cycle
from qorch.scheduler.policy import Policy
from qorch.scheduler.snapshot import Snapshot
from qorch.scheduler.tasks import TaskBatch
from support.instances import run


def test_born_probability_is_a_softmax_and_amplitudes_square_to_it() -> None:
    """Scores [1, 0] at T=1 give p = [e/(e+1), 1/(e+1)] and psi = sqrt(p)."""
    psi, p = amplitudes.born(np.array([1.0, 0.0]), 1.0)
    e = math.e
    assert p == pytest.approx([e / (e + 1), 1 / (e + 1)])
    assert psi == pytest.approx(np.sqrt(p))
    assert float(np.sum(psi**2)) == pytest.approx(1.0)


def test_temperature_sharpens_and_zero_collapses_onto_the_best() -> None:
    """Lower T concentrates probability; T=0 is one-hot, with exact ties split evenly."""
    scores = np.array([0.9, 0.8, 0.1])
    _, hot = amplitudes.born(scores, 1.0)
    _, cold = amplitudes.born(scores, 0.05)
    assert cold[0] > hot[0]
    assert cold[0] == pytest.approx(1 / (1 + math.exp(-2) + math.exp(-16)))
    _, frozen = amplitudes.born(scores, 0.0)
    assert frozen.tolist() == [1.0, 0.0, 0.0]
    _, tie = amplitudes.born(np.array([0.5, 0.5, 0.2]), 0.0)
    assert tie.tolist() == [0.5, 0.5, 0.0]


def test_entanglement_pulls_toward_the_group_and_pushes_retries_away() -> None:
    """bias = eta*(J[g_t,g_a] - J[h_t,g_a]); with J[g0,g1] = 0.5 the pull is [1, 0.5, 0]."""
    snap = Snapshot.build(
        names=["a0", "a1", "a2"], capabilities=[[], [], []], capacity=[1, 1, 1], groups=["g0", "g1", ""]
    )
    rows = np.array([0, 1, 2], dtype=np.int32)
    plain = amplitudes.Entanglement(groups=2)
    assert plain.bias(snap, rows, np.full(3, 0), np.full(3, -1)).tolist() == [1.0, 0.0, 0.0]
    assert plain.bias(snap, rows, np.full(3, -1), np.full(3, 0)).tolist() == [-1.0, 0.0, 0.0]
    coupled = amplitudes.Entanglement(groups=2, couplings={(0, 1): 0.5})
    assert coupled.matrix().tolist() == [[1.0, 0.5], [0.5, 1.0]]
    assert coupled.bias(snap, rows, np.full(3, 0), np.full(3, -1)).tolist() == [1.0, 0.5, 0.0]
    # p = softmax(s/T + 2*bias): equal scores, T = 1, bias [1, 0.5, 0] -> weights e^2 : e^1 : 1
    _, p = amplitudes.born(np.zeros(3), 1.0, np.array([1.0, 0.5, 0.0]))
    w = np.array([math.e**2, math.e, 1.0])
    assert p == pytest.approx(w / w.sum())


def test_a_retry_lands_outside_the_failure_domain() -> None:
    """A task whose last attempt failed in zone-a goes to an equally good agent elsewhere."""
    agents = [
        {"name": "a", "capabilities": ["c"], "entanglementGroup": "zone-a"},
        {"name": "b", "capabilities": ["c"], "entanglementGroup": "zone-b"},
    ]
    fresh = run(agents, [{"name": "t", "requires": ["c"], "entanglementGroup": "zone-a"}])
    retry = run(agents, [{"name": "t", "requires": ["c"], "avoidGroup": "zone-a"}])
    assert fresh.snapshot.names[fresh.agent_of[0]] == "a"
    assert retry.snapshot.names[retry.agent_of[0]] == "b"


def test_von_neumann_entropy_of_hand_built_density_matrices() -> None:
    """Orthogonal demand: ln 2; identical demand: 0; overlapping: from the 2x2 eigenvalues."""
    a = np.array([0, 1], dtype=np.int32)
    orth = observables.entropy([(a[:1], np.array([1.0])), (a[1:], np.array([1.0]))], [1, 1])
    assert orth == pytest.approx(math.log(2))
    same = observables.entropy([(a, np.array([0.6, 0.8])), (a, np.array([0.6, 0.8]))], [3, 1])
    assert same == pytest.approx(0.0, abs=1e-9)
    # rho = 0.5|0><0| + 0.5|+><+| = [[0.75, 0.25], [0.25, 0.25]]: eigenvalues (1 +- 1/sqrt 2) / 2
    lam = np.array([(1 + 1 / math.sqrt(2)) / 2, (1 - 1 / math.sqrt(2)) / 2])
    expected = float(-(lam * np.log(lam)).sum())
    got = observables.entropy([(a[:1], np.array([1.0])), (a, np.array([1, 1]) / math.sqrt(2))], [1, 1])
    assert got == pytest.approx(expected)
    assert expected == pytest.approx(0.4165, abs=1e-4)


def test_fidelity_of_demand_and_supply() -> None:
    """F = (sum sqrt(d_i s_i))^2: 1 for the same shape, 0.5 for half overlap, 0 for disjoint."""
    assert observables.fidelity({"a": 2, "b": 2}, {"a": 5, "b": 5}) == pytest.approx(1.0)
    assert observables.fidelity({"a": 1}, {"a": 1, "b": 1}) == pytest.approx(0.5)
    assert observables.fidelity({"a": 1}, {"b": 1}) == pytest.approx(0.0)
    assert observables.fidelity({}, {"b": 1}) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_coherence_is_high_with_plenty_of_capacity_and_falls_under_contention(seed: int) -> None:
    """1,000 agents for 100 tasks: > 0.95. The same kind of fleet with 0.4 slots per task: far lower."""
    plenty = synthetic.workload(1000, 100, seed=seed)
    assert int(plenty.snapshot.free.sum()) > 10 * 100
    high = run_cycle(plenty.snapshot, plenty.tasks, Policy()).observables.coherence
    tight = synthetic.workload(1000, 2000, seed=seed, contention=0.4)
    low = run_cycle(tight.snapshot, tight.tasks, Policy()).observables.coherence
    assert high > 0.95
    assert low < 0.5


def test_coherence_counts_tasks_pushed_off_their_best_agent() -> None:
    """Two classes wanting one slot: the loser keeps none of its probability mass, so 0.5."""
    res = run(
        [
            {"name": "best", "capabilities": ["c"], "successRate": 1.0},
            {"name": "other", "capabilities": ["c", "d"], "successRate": 0.5},
        ],
        [{"name": "t1", "requires": ["c"], "priority": 900}, {"name": "t2", "requires": ["c", "d"], "priority": 100}],
    )
    assert res.snapshot.names[res.agent_of[0]] == "best"
    assert res.observables.coherence == pytest.approx(1.0)
    clash = run(
        [{"name": "only", "capabilities": ["c"]}],
        [
            {"name": "t1", "requires": ["c"], "priority": 900},
            {"name": "t2", "requires": ["c"], "classification": "public"},
        ],
    )
    assert clash.observables.coherence == pytest.approx(0.5)


def test_observables_are_finite_and_bounded_on_a_real_cycle() -> None:
    """Entropy >= 0, coherence and fidelity in [0, 1], on a contended synthetic batch."""
    work = synthetic.workload(300, 1000, seed=2, contention=0.7)
    obs = run_cycle(work.snapshot, work.tasks, Policy()).observables
    assert obs.entropy >= 0
    assert 0 <= obs.coherence <= 1
    assert 0 <= obs.fidelity <= 1


def test_observables_do_not_move_with_temperature_alone() -> None:
    """Same batch, same decisions at T = 0.01 ... 5: the same coherence and entropy (issue 10, finding 3)."""
    work = synthetic.workload(300, 600, seed=4, contention=0.8)
    runs = [run_cycle(work.snapshot, work.tasks, Policy(temperature=t)) for t in (0.01, 0.05, 0.5, 5.0)]
    for other in runs[1:]:
        assert np.array_equal(other.agent_of, runs[0].agent_of)
        assert other.observables.coherence == pytest.approx(runs[0].observables.coherence, abs=1e-9)
        assert other.observables.entropy == pytest.approx(runs[0].observables.entropy, abs=1e-9)


def test_coherence_falls_as_slots_per_task_shrink() -> None:
    """A sweep of contention on one kind of fleet: coherence never rises as slots get scarcer, and ends far lower."""
    sweep = (4.0, 2.0, 1.0, 0.7, 0.4, 0.2)
    seen = []
    for slots_per_task in sweep:
        work = synthetic.workload(600, 600, seed=8, contention=slots_per_task)
        seen.append(run_cycle(work.snapshot, work.tasks, Policy()).observables.coherence)
    assert all(later <= earlier + 0.02 for earlier, later in itertools.pairwise(seen)), seen
    assert seen[0] > 0.9
    assert seen[-1] < 0.5 * seen[0], seen


def _fleet_of_600(seed: int = 1) -> list[dict[str, object]]:
    """600 agents that all do `c` (more than the 256 read whole), with varied quality, several profiles and zones."""
    rng = np.random.default_rng(seed)
    return [
        {
            "name": f"a{i}",
            "capabilities": ["c"] + (["d"] if i % 3 == 0 else []) + (["e"] if i % 5 == 0 else []),
            "capacity": int(rng.integers(1, 4)),
            "successRate": float(np.round(rng.uniform(0.5, 1.0), 3)),
            "costPerTask": float(np.round(rng.uniform(0.0, 2.0), 2)),
            "latencyMs": float(np.round(rng.uniform(0, 3000))),
            "labels": {"zone": "z1" if i % 2 else "z2"},
            "entanglementGroup": "g1" if i % 4 == 0 else "",
        }
        for i in range(600)
    ]


@pytest.mark.parametrize("temperature", [0.05, 1.0, 0.0])
@pytest.mark.parametrize("extra", [{}, {"agentSelector": {"matchLabels": {"zone": "z1"}}}, {"entanglementGroup": "g1"}])
def test_a_reported_probability_does_not_depend_on_the_rest_of_the_batch(
    temperature: float, extra: dict[str, object]
) -> None:
    """The same task, agent and candidates report the same p alone or among 200 siblings (issue 10, finding 2).

    And that p is the softmax over the class's whole candidate set, not over what was gathered.
    """
    agents = _fleet_of_600()
    lone = {"name": "t0", "requires": ["c"], "priority": 1000, **extra}
    siblings = [{"name": f"s{i}", "requires": ["c"], "priority": 10, **extra} for i in range(200)]
    alone = run(agents, [lone], temperature=temperature)
    crowded = run(agents, [lone, *siblings], temperature=temperature)
    assert alone.agent_of[0] == crowded.agent_of[0] >= 0
    assert crowded.probability[0] == pytest.approx(alone.probability[0], rel=1e-9)
    view = alone.views[int(alone.tasks.class_of[0])]
    view.gather_all()
    assert view.complete
    assert len(view.ranked) > 256
    agents_all, _, p_all = view.probabilities()
    expected = float(p_all[list(agents_all).index(int(alone.agent_of[0]))])
    assert alone.probability[0] == pytest.approx(expected, rel=1e-9)
    shown = {c.agent: c.probability for c in crowded.explain(0).candidates}
    chosen = crowded.snapshot.names[int(crowded.agent_of[0])]
    assert shown[chosen] == pytest.approx(crowded.probability[0], rel=1e-12)


def test_per_profile_normalisers_equal_scoring_every_candidate() -> None:
    """The fast normaliser (sums per profile and agent group) equals a logsumexp over every candidate's logit."""
    snap = synthetic.fleet(3000, seed=6)
    zones = list(synthetic.ZONES)
    batch = TaskBatch.build(
        snap,
        names=[f"t{i}" for i in range(60)],
        requires=[["skill-0"], ["skill-1"], ["skill-0", "skill-2"]] * 20,
        groups=[zones[i % 3] if i % 2 else "" for i in range(60)],
        avoid_groups=[zones[(i + 1) % 3] if i % 5 == 0 else "" for i in range(60)],
        selectors=[{"zone": zones[i % 3]} if i % 7 == 0 else None for i in range(60)],
        max_cost=[0.5 if i % 11 == 0 else None for i in range(60)],
    )
    result = run_cycle(snap, batch, Policy(temperature=0.2, couplings={("eu-west", "us-east"): 0.5}))
    ranker = result.views[0].ranker
    incomplete = [v for v in result.views if v.ranked and not v.complete]
    assert len(incomplete) >= 5
    assert any(v.task_class.group >= 0 and v.task_class.avoid_group >= 0 for v in incomplete)
    assert any(v.task_class.selector for v in incomplete)
    assert any(np.isfinite(v.task_class.max_cost) for v in incomplete)
    part = partition.partition(ranker, result.views, (0.2, 1.0))
    for view in incomplete:
        view.gather_all()
        _, _, score, bias, _ = ranker.score([view.task_class], [np.asarray(view.ranked, dtype=np.int32)])
        for t in (0.2, 1.0):
            expected = np.logaddexp.reduce(score / t + 2.0 * bias)
            assert part.log_z[t][view.task_class.id] == pytest.approx(expected, rel=1e-12, abs=1e-9)
