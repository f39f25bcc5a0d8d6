"""Warm start and stop of the local control plane (binaries already built).

Run: .venv/bin/python bench/controlplane.py [--runs N]
Prints a markdown table; the target (issue: foundation) is a warm start of ~15 s or less.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from qorch.devcluster import ControlPlane

TARGET_SECONDS = 15.0


def main() -> None:
    """Start and stop a control plane N times and report the timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    starts: list[float] = []
    stops: list[float] = []
    with tempfile.TemporaryDirectory() as base:
        for _ in range(args.runs):
            plane = ControlPlane(base_dir=Path(base))
            t0 = time.perf_counter()
            plane.start()
            starts.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            plane.stop()
            stops.append(time.perf_counter() - t1)
    worst = max(starts)
    print("| measure | median | worst | target | verdict |")
    print("|---|---|---|---|---|")
    print(
        f"| warm start (etcd + kube-apiserver, until `default` ns exists), {args.runs} runs "
        f"| {statistics.median(starts):.2f} s | {worst:.2f} s | ≤ {TARGET_SECONDS:.0f} s "
        f"| {'met' if worst <= TARGET_SECONDS else 'MISSED'} ({worst / TARGET_SECONDS:.2f} of the limit) |"
    )
    print(f"| stop (TERM, wait, remove dir) | {statistics.median(stops):.2f} s | {max(stops):.2f} s | — | — |")


if __name__ == "__main__":
    main()
