"""The soak's short profile (bench/soak.py, issue 15.3): random faults under steady load lose and double nothing.

Its own control plane (the soak restarts the apiserver and installs a cluster-wide policy), two
operator replicas, three agent runtimes and two simulated pools; about 40 faults drawn with a fresh
seed each run (QORCH_SOAK_SEED replays one), printed in every failure message.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak

pytestmark = pytest.mark.e2e

LIMIT_S = 180


@pytest.mark.timeout(LIMIT_S + 60)
def test_short_soak_loses_nothing_doubles_nothing_and_keeps_the_invariants(tmp_path: Path) -> None:
    """0 lost, 0 doubled, I1-I4 and the capacity sampler clean, the drain done, within 3 minutes."""
    seed = int(os.environ.get("QORCH_SOAK_SEED") or random.randrange(10**6))
    profile = soak.PROFILES["short"]
    began = time.monotonic()
    out = asyncio.run(soak.soak(profile, seed, tmp_path))
    took = time.monotonic() - began
    where = f"seed {seed} (QORCH_SOAK_SEED={seed} replays the draws), logs in {tmp_path}"
    assert out.faults.total() >= profile.faults * 0.75, (out.faults, where)
    assert out.lost == [], (out.lost[:10], where)
    assert out.doubled == [], (out.doubled[:10], where)
    assert [str(v) for v in out.violations] == [], where
    assert out.drained, (out.unfinished[:10], where)
    assert out.unfinished == [], where
    assert out.crashes == [], (out.crashes[:5], where)  # agent processes exiting on their own
    assert out.completed > 100, (out.completed, where)
    assert took <= LIMIT_S, f"the short soak took {took:.0f} s; {where}"
