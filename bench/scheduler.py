"""Scheduler-core benchmark: quality, speed, growth, throughput, determinism, in one run.

Run:  .venv/bin/python bench/scheduler.py [--quick] [--write docs/benchmarks.md]
All ratios compare numbers taken in this same process, on this machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

import report
from measure import progress
from qorch.api.enums import Strategy
from qorch.scheduler import Policy, schedule, synthetic
from qorch.scheduler.index import CapabilityIndex
from qorch.scheduler.snapshot import Snapshot
from qorch.scheduler.tasks import TaskBatch

BEGIN, END = "<!-- scheduler-bench:begin -->", "<!-- scheduler-bench:end -->"
Row = tuple[str, str, str, str]


def value(work: synthetic.Workload, agent_of: np.ndarray) -> int:
    """Priority-weighted assigned value."""
    return int(work.tasks.priority[agent_of >= 0].sum())


def quality(seeds: int) -> tuple[list[Row], dict[str, Any]]:
    """Contended instances (free slots = 0.75 x tasks): every strategy against the exact optimum."""
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for tasks, agents in ((1000, 300), (4000, 1200)):
        ratios: dict[str, list[float]] = {s: [] for s in ("quantum", "greedy", "least-loaded", "round-robin")}
        for seed in range(seeds):
            work = synthetic.workload(agents, tasks, seed=seed, contention=0.75)
            exact = value(work, schedule(work.snapshot, work.tasks, Policy(strategy=Strategy.EXACT)).agent_of)
            for name, series in ratios.items():
                got = schedule(work.snapshot, work.tasks, Policy(strategy=Strategy(name))).agent_of
                series.append(value(work, got) / exact)
        raw[str(tasks)] = ratios
        q = ratios["quantum"]
        rows.append(
            (
                f"quality, {tasks} tasks / {agents} agents, {seeds} seeds: quantum ÷ exact optimum (mean / worst)",
                f"{statistics.mean(q):.5f} / {min(q):.5f}",
                "≥ 0.998 / ≥ 0.995",
                "met" if statistics.mean(q) >= 0.998 and min(q) >= 0.995 else "MISSED",
            )
        )
        bf, plain = ratios["greedy"], ratios["least-loaded"]
        rows.append(
            (
                f"baselines, {tasks} tasks: best-fit greedy / plain greedy (most free slots) ÷ exact, mean (worst)",
                f"{statistics.mean(bf):.5f} ({min(bf):.5f}) / {statistics.mean(plain):.5f} ({min(plain):.5f})",
                "quantum ≥ best-fit on every seed",
                "met" if all(x >= y - 1e-12 for x, y in zip(q, bf, strict=True)) else "MISSED",
            )
        )
    return rows, raw


def _exactly_slots(work: synthetic.Workload, slots: int) -> None:
    """Trim free slots so the fleet has exactly `slots` of them (for a fair LSA comparison)."""
    free = work.snapshot.free
    excess = int(free.sum()) - slots
    rng = np.random.default_rng(0)
    while excess > 0:
        have = np.flatnonzero(work.snapshot.free > 0)
        pick = rng.choice(have, size=min(excess, len(have)), replace=False)
        work.snapshot.active[pick] += 1
        excess = int(work.snapshot.free.sum()) - slots


def secondary(seeds: int) -> tuple[list[Row], dict[str, Any]]:
    """Total match quality (sum of scores) of quantum ÷ exact's, which maximises it among max-priority placements."""
    families = (
        ("contended, 1,000 tasks / 300 agents, 0.75 slots per task", 300, 1000, 0.75, seeds),
        ("plentiful, 1,000 tasks / 1,000 agents", 1000, 1000, None, seeds),
        ("pools over 256 candidates, 600 tasks / 3,000 agents, 3 slots per task", 3000, 600, 3.0, seeds),
        ("exact fit, 4,096 tasks = 4,096 slots / 1,392 agents", 1392, 4096, 1.1, 1),
    )
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for label, agents, tasks, contention, runs in families:
        ratios = []
        for seed in range(runs):
            work = synthetic.workload(agents, tasks, seed=seed if runs > 1 else 11, contention=contention)
            if runs == 1:
                _exactly_slots(work, tasks)
            progress(f"secondary objective: {label}, seed {seed}")
            best = schedule(work.snapshot, work.tasks, Policy(strategy=Strategy.EXACT))
            ours = schedule(work.snapshot, work.tasks, Policy())
            if value(work, ours.agent_of) != value(work, best.agent_of):
                raise SystemExit(f"{label}: quantum lost priority against exact (seed {seed})")
            ratios.append(float(ours.score.sum() / best.score.sum()))
        raw[label] = ratios
        rows.append(
            (
                f"second objective: quantum ÷ exact total score, {label}, {runs} seed(s), mean / worst",
                f"{statistics.mean(ratios):.5f} / {min(ratios):.5f}",
                "≥ 0.999",
                "met" if min(ratios) >= 0.999 else "MISSED",
            )
        )
    return rows, raw


def _slot_edges(work: synthetic.Workload, views: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Every feasible (task, slot) pair with its value: dense rank of priority first, score second."""
    free = work.snapshot.free
    agents = np.array(sorted({a for v in views for a in v.ranked if free[a] > 0}), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(free[agents])])
    first = np.full(len(free), -1, dtype=np.int64)
    first[agents] = starts[:-1]
    rank = np.unique(work.tasks.priority, return_inverse=True)[1] + 1.0
    eps = 0.5 / (len(work.tasks) + 1)
    task_parts, slot_parts, value_parts = [], [], []
    for view in views:
        ag = np.asarray(view.ranked, dtype=np.int64)
        sc = np.asarray(view.scores)
        keep = free[ag] > 0
        ag, sc = ag[keep], sc[keep]
        k = free[ag].astype(np.int64)
        slots = np.repeat(first[ag], k) + (np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k))
        slot_score = np.repeat(sc, k)
        for t in view.task_class.members.tolist():
            task_parts.append(np.full(len(slots), t))
            slot_parts.append(slots)
            value_parts.append(rank[t] + eps * slot_score)
    return np.concatenate(task_parts), np.concatenate(slot_parts), np.concatenate(value_parts), int(starts[-1])


def _time(fn: Any, *args: Any, **kwargs: Any) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def speed(sizes: tuple[int, ...], budget_s: float) -> tuple[list[Row], dict[str, Any]]:
    """Quantum cycle vs two exact peers (dense LSA, sparse matching) from 256 to 16,384 tasks on as many slots.

    A peer is not run at a size where its last two times project above `budget_s`.
    """
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    last: dict[str, list[tuple[int, float]]] = {"dense": [], "sparse": []}

    def projected(peer: str, n: int) -> float:
        seen = last[peer]
        if len(seen) < 2:
            return 0.0
        (n0, t0), (n1, t1) = seen[-2], seen[-1]
        growth = max(t1 / max(t0, 1e-9), (n1 / n0) ** 2)
        return t1 * growth ** (np.log(n / n1) / np.log(n1 / n0))

    for n in sizes:
        work = synthetic.workload(max(64, int(n * 0.34)), n, seed=11, contention=1.1)
        _exactly_slots(work, n)
        progress(f"speed curve: {n} tasks")
        res = schedule(work.snapshot, work.tasks, Policy())
        ours = min(_time(schedule, work.snapshot, work.tasks, Policy()) for _ in range(3))
        for view in res.views:
            view.gather_all()
        t0 = time.perf_counter()
        task, slot, val, slots = _slot_edges(work, res.views)
        edges_s = time.perf_counter() - t0
        entry: dict[str, Any] = {"ours_s": ours, "edges": len(task), "edge_list_s": edges_s, "slots": slots}
        if projected("dense", n) <= budget_s:
            t0 = time.perf_counter()
            matrix = np.zeros((n, slots))
            matrix[task, slot] = val
            entry["dense_build_s"] = edges_s + time.perf_counter() - t0
            entry["dense_solve_s"] = _time(linear_sum_assignment, matrix, maximize=True)
            del matrix
            last["dense"].append((n, entry["dense_build_s"] + entry["dense_solve_s"]))
        if projected("sparse", n) <= budget_s:
            t0 = time.perf_counter()
            big = float(val.max()) + 2.0  # cost = big - value; a dummy column per task (cost big) keeps it full
            graph = sp.csr_matrix(
                (
                    np.concatenate([big - val, np.full(n, big)]),
                    (np.concatenate([task, np.arange(n)]), np.concatenate([slot, slots + np.arange(n)])),
                ),
                shape=(n, slots + n),
            )
            entry["sparse_build_s"] = edges_s + time.perf_counter() - t0
            entry["sparse_solve_s"] = _time(min_weight_full_bipartite_matching, graph)
            del graph
            last["sparse"].append((n, entry["sparse_build_s"] + entry["sparse_solve_s"]))
        del task, slot, val
        raw[str(n)] = entry
        rows.append(_speed_row(n, entry))
    return rows, raw


def _speed_row(n: int, e: dict[str, Any]) -> Row:
    peers = []
    totals = []
    for peer, label in (("dense", "dense LSA"), ("sparse", "sparse matching")):
        if f"{peer}_solve_s" in e:
            total = e[f"{peer}_build_s"] + e[f"{peer}_solve_s"]
            totals.append(total)
            peers.append(f"{label} {total * 1000:,.0f} ms (build {e[f'{peer}_build_s'] * 1000:,.0f})")
        else:
            peers.append(f"{label} not run (projected over the time budget)")
    fastest = min(totals) if totals else float("nan")
    ratio = e["ours_s"] / fastest
    target = "—" if n < 1024 else ("≤ 0.05 of the faster peer" if n >= 4096 else "faster than both peers")
    if n < 1024 or not totals:
        verdict = "—"
    elif n >= 4096:
        verdict = "met" if ratio <= 0.05 else "MISSED"
    else:
        verdict = "met" if ratio < 1 else "MISSED"
    return (
        f"speed: {n:,} tasks × {e['slots']:,} slots ({e['edges']:,} feasible pairs)",
        f"quantum {e['ours_s'] * 1000:,.0f} ms; " + "; ".join(peers) + f"; ÷ faster peer = {ratio:.3f}",
        target,
        verdict,
    )


def _full_scan(snapshot: Snapshot, tasks: TaskBatch) -> float:
    """Baseline filter: per class, a mask over every agent (what the index avoids)."""
    t0 = time.perf_counter()
    free = snapshot.free
    vocab = snapshot.capability_vocab
    for c in tasks.classes:
        words = np.zeros(snapshot.capabilities.shape[1], dtype=np.uint64)
        for cap in c.requires:
            bit = vocab.get(cap)
            if bit is not None:
                words[bit // 64] |= np.uint64(1) << np.uint64(bit % 64)
        ok = np.all((snapshot.capabilities & words) == words, axis=1)
        ok &= (snapshot.clearance >= c.classification) & (free > 0)
        np.flatnonzero(ok)
    return time.perf_counter() - t0


def _peak_rss_mib() -> float:
    """This process's peak RSS since exec (VmHWM).

    Not ru_maxrss: Linux carries the spawning parent's high-water mark over exec into
    ru_maxrss, so a child started after the speed curve's 8,192-task matrices reported
    the parent's 1.2 GiB as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def growth_child(agents: int, tasks: int) -> dict[str, float]:
    """Run in a fresh process: build a fleet, index it, time one batch, report peak RSS."""
    t0 = time.perf_counter()
    snap = synthetic.fleet(agents, seed=5)
    batch = synthetic.tasks_for(snap, tasks, seed=5)
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    index = CapabilityIndex(snap)
    index_s = time.perf_counter() - t1
    times = []
    for _ in range(3):
        t2 = time.perf_counter()
        result = schedule(snap, batch, Policy(), index=index)
        times.append(time.perf_counter() - t2)
    scan = _full_scan(snap, batch)
    rss = _peak_rss_mib()
    return {
        "build_s": build,
        "index_s": index_s,
        "batch_s": statistics.median(times),
        "scan_s": scan,
        "rss_mib": rss,
        "assigned": result.assigned,
    }


def growth(tasks: int, sizes: tuple[int, int]) -> tuple[list[Row], dict[str, Any]]:
    """Time per batch at a small and a huge fleet, each in its own process (clean peak RSS)."""
    out = {}
    for agents in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--growth-child", str(agents), str(tasks)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[agents] = json.loads(proc.stdout)
    small, big = out[sizes[0]], out[sizes[1]]
    ratio = big["batch_s"] / small["batch_s"]
    scan_ratio = big["scan_s"] / small["scan_s"]
    rows = [
        (
            f"growth: {tasks:,}-task batch at {sizes[1]:,} agents ÷ at {sizes[0]:,} agents",
            f"{big['batch_s'] * 1000:.0f} ms ÷ {small['batch_s'] * 1000:.0f} ms = {ratio:.2f}×",
            "≤ 2×",
            "met" if ratio <= 2 else "MISSED",
        ),
        (
            "growth baseline: full-scan filter (a mask over every agent per class), same batches",
            f"{big['scan_s'] * 1000:.0f} ms ÷ {small['scan_s'] * 1000:.0f} ms = {scan_ratio:.0f}×",
            "— (shows what the index avoids)",
            "—",
        ),
        (
            f"peak memory at {sizes[1]:,} agents (fleet + index + {tasks:,}-task batch, VmHWM)",
            f"{big['rss_mib']:.0f} MiB",
            "≤ 1024 MiB",
            "met" if big["rss_mib"] <= 1024 else "MISSED",
        ),
        (
            f"one-off at {sizes[1]:,} agents: build the fleet / build the index (not per cycle)",
            f"{big['build_s']:.1f} s / {big['index_s']:.2f} s",
            "reported",
            "—",
        ),
    ]
    return rows, out


def throughput(agents: int, tasks: int, batch: int) -> tuple[list[Row], dict[str, Any]]:
    """Drain a queue of `tasks` against one fleet in batches of `batch`; the fleet fills up between batches.

    Each batch is decided as the operator decides a cycle: the capability index is built
    from the current free slots, then the cycle runs; assignments then occupy their slots.
    """
    snap = synthetic.fleet(agents, seed=9)
    work = synthetic.tasks_for(snap, tasks, seed=9)
    free_before = int(snap.free.sum())
    index_s, cycle_s, latencies, placed_total = 0.0, 0.0, [], 0
    for start in range(0, tasks, batch):
        part = work.subset(np.arange(start, min(start + batch, tasks)))
        progress(f"throughput: batch at {start:,} of {tasks:,}")
        t0 = time.perf_counter()
        index = CapabilityIndex(snap)
        t1 = time.perf_counter()
        res = schedule(snap, part, Policy(), index=index)
        t2 = time.perf_counter()
        index_s += t1 - t0
        cycle_s += t2 - t1
        latencies.append(t2 - t0)
        placed = res.agent_of[res.agent_of >= 0]
        np.add.at(snap.active, placed, 1)  # the fleet fills up
        placed_total += len(placed)
    total = index_s + cycle_s
    rate = tasks / total
    p50 = float(np.percentile(latencies, 50))
    p95 = float(np.percentile(latencies, 95))
    return [
        (
            (
                f"throughput: drain {tasks:,} tasks against {agents:,} agents in batches of {batch:,} "
                f"(the operator's default), the fleet filling up ({free_before:,} free slots at the start, "
                f"{placed_total:,} taken)"
            ),
            (
                f"{rate:,.0f} decisions/s (batch p50 {p50 * 1000:,.0f} ms, p95 {p95 * 1000:,.0f} ms; "
                f"index {index_s:.2f} s + cycles {cycle_s:.2f} s)"
            ),
            "≥ 100,000/s",
            "met" if rate >= 100_000 else "MISSED",
        ),
    ], {"rate": rate, "p50": p50, "p95": p95, "index_s": index_s, "cycle_s": cycle_s, "placed": placed_total}


def determinism() -> list[Row]:
    """Same input and seed, same output, for every strategy (sampling on for quantum)."""
    work = synthetic.workload(500, 1500, seed=3, contention=0.8)
    same = True
    for strategy in Strategy:
        policy = Policy(strategy=strategy, seed=42, sample=strategy == Strategy.QUANTUM)
        a = schedule(work.snapshot, work.tasks, policy).agent_of
        b = schedule(work.snapshot, work.tasks, policy).agent_of
        same &= bool(np.array_equal(a, b))
    return [
        (
            "determinism: same input and seed twice, all 7 strategies",
            "identical" if same else "DIFFERENT",
            "identical",
            "met" if same else "MISSED",
        )
    ]


def _section(raw: dict[str, Any], name: str, result: tuple[list[Row], dict[str, Any]]) -> list[Row]:
    rows, raw[name] = result
    return rows


def main() -> None:
    """Run everything and print (and optionally write) the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer seeds and smaller fleets (smoke run)")
    parser.add_argument("--write", type=Path, help="replace the scheduler section of this markdown file")
    parser.add_argument("--growth-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.growth_child:
        print(json.dumps(growth_child(*args.growth_child)))
        return
    started = time.perf_counter()
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    q_rows, raw["quality"] = quality(2 if args.quick else 5)
    rows += q_rows
    rows += _section(raw, "secondary", secondary(2 if args.quick else 5))
    sizes = (256, 1024, 2048, 4096) if args.quick else (256, 512, 1024, 2048, 4096, 8192, 16384)
    rows += _section(raw, "speed", speed(sizes, budget_s=120.0))
    g_rows, raw["growth"] = growth(10_000, (10_000, 100_000 if args.quick else 1_000_000))
    rows += g_rows
    rows += _section(raw, "throughput", throughput(100_000, 20_000 if args.quick else 100_000, 16_384))
    rows += determinism()
    command = (
        "`.venv/bin/python bench/scheduler.py" + (" --quick" if args.quick else "") + " --write docs/benchmarks.md`"
    )
    text = report.render(
        BEGIN,
        END,
        f"Command: {command} ({time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s in all, "
        "2 cores, numpy with its default BLAS threads).",
        rows,
    )
    print(text)
    if args.write:
        report.write_section(args.write, BEGIN, END, "Scheduler core (issue: the scheduler core)", text)


if __name__ == "__main__":
    main()
