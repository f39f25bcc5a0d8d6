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
from scipy.optimize import linear_sum_assignment

import report
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


def speed() -> tuple[list[Row], dict[str, Any]]:
    """Quantum cycle vs linear_sum_assignment's solve alone, on the same 4,096-slot batch."""
    work = synthetic.workload(1400, 4096, seed=11, contention=1.1)
    _exactly_slots(work, 4096)
    slots = int(work.snapshot.free.sum())
    res = schedule(work.snapshot, work.tasks, Policy())
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        res = schedule(work.snapshot, work.tasks, Policy())
        times.append(time.perf_counter() - t0)
    ours = statistics.median(times)
    # The same matrix the exact strategy builds: priority first, score second, 0 = infeasible.
    views = res.views
    free = work.snapshot.free
    agents = sorted({a for v in views for a in v.ranked if free[a] > 0})
    column = {a: i for i, a in enumerate(agents)}
    starts = np.concatenate([[0], np.cumsum(free[agents])])
    matrix = np.zeros((len(work.tasks), int(starts[-1])))
    for t in range(len(work.tasks)):
        view = views[int(work.tasks.class_of[t])]
        view.gather_all()
        for a, s in zip(view.ranked, view.scores, strict=True):
            c = column.get(a)
            if c is not None:
                matrix[t, starts[c] : starts[c + 1]] = work.tasks.priority[t] + 1 + 1e-4 * s
    t0 = time.perf_counter()
    linear_sum_assignment(matrix, maximize=True)
    lsa = time.perf_counter() - t0
    ratio = ours / lsa
    return [
        (
            f"speed: quantum cycle ÷ linear_sum_assignment solve, {len(work.tasks)} tasks × {slots} slots",
            f"{ours * 1000:.0f} ms ÷ {lsa * 1000:.0f} ms = {ratio:.4f}",
            "≤ 0.05",
            "met" if ratio <= 0.05 else "MISSED",
        )
    ], {"ours_s": ours, "lsa_s": lsa, "slots": slots}


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
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
            f"peak memory at {sizes[1]:,} agents (fleet + index + {tasks:,}-task batch, ru_maxrss)",
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
    """Decisions per second, scheduling `tasks` in batches of `batch` against one fleet."""
    snap = synthetic.fleet(agents, seed=9)
    work = synthetic.tasks_for(snap, tasks, seed=9)
    index = CapabilityIndex(snap)
    latencies = []
    decided = 0
    for start in range(0, tasks, batch):
        part = work.subset(np.arange(start, min(start + batch, tasks)))
        t0 = time.perf_counter()
        res = schedule(snap, part, Policy(), index=index)
        latencies.append(time.perf_counter() - t0)
        decided += len(part)
        del res
    total = sum(latencies)
    rate = decided / total
    t0 = time.perf_counter()
    whole = schedule(snap, work, Policy(), index=index)
    one = time.perf_counter() - t0
    p50 = float(np.percentile(latencies, 50))
    p95 = float(np.percentile(latencies, 95))
    return [
        (
            f"throughput: {tasks:,} tasks at {agents:,} agents in batches of {batch:,}",
            f"{rate:,.0f} decisions/s (batch p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms)",
            "≥ 100,000/s",
            "met" if rate >= 100_000 else "MISSED",
        ),
        (
            f"throughput: the same {tasks:,} tasks in one batch",
            f"{tasks / one:,.0f} decisions/s ({one * 1000:.0f} ms, {whole.assigned:,} assigned)",
            "≥ 100,000/s",
            "met" if tasks / one >= 100_000 else "MISSED",
        ),
    ], {"rate": rate, "p50": p50, "p95": p95, "one_batch_s": one}


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
    s_rows, raw["speed"] = speed()
    rows += s_rows
    g_rows, raw["growth"] = growth(10_000, (10_000, 100_000 if args.quick else 1_000_000))
    rows += g_rows
    t_rows, raw["throughput"] = throughput(100_000, 20_000 if args.quick else 100_000, 10_000)
    rows += t_rows
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
