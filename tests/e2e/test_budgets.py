"""Per-namespace caps, cost budgets and weighted shares, end to end (issue 13, item 9).

Tasks run only on agents of their own namespace (docs/scheduler.md), so namespaces
contend for the operator itself: each cycle decides at most `batchSize` tasks, and the
policy's weights split that batch. Caps and cost budgets limit what one namespace runs
at once. Real operator; real agent runtimes where tasks must run, Lease-only agents
where only placements are measured.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
import yaml

from qorch.testing import Kubectl
from qorch.testing.invariants import CapacitySampler, check
from support.api import Api
from support.manifests import agent, lease, policy, stream, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

ACTIVE = ("Assigned", "Running")


class Sampler:
    """Samples a namespace's tasks continuously: the most ever active at once, and reasons seen."""

    def __init__(self, api: Api, namespace: str) -> None:
        """Start sampling in a thread."""
        self.api, self.namespace = api, namespace
        self.most = 0
        self.reasons: Counter[str] = Counter()
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            tasks = self.api.tasks(self.namespace)
            self.most = max(self.most, sum((t.get("status") or {}).get("phase") in ACTIVE for t in tasks))
            for t in tasks:
                for c in (t.get("status") or {}).get("conditions") or ():
                    if c["type"] == "Scheduled" and t["status"].get("phase") == "Queued":
                        self.reasons[c["reason"]] += 1
                        self.messages.append(c["message"])

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.parametrize(
    ("quota", "provider", "limit", "says"),
    [
        pytest.param({"maxConcurrentTasks": 2}, None, 2, "maxConcurrentTasks", id="concurrent-cap"),
        pytest.param({"maxCost": 3}, {"name": "p", "costPerTask": 1}, 3, "cost quota", id="cost-budget"),
    ],
)
def test_a_namespace_at_its_cap_waits_with_that_reason(
    kubectl: Kubectl,
    operators: OperatorFleet,
    runtimes: Callable[..., Runtime],
    api: Api,
    quota: dict,
    provider: dict | None,
    limit: int,
    says: str,
) -> None:
    """Never more than the cap runs at once (sampled throughout); the others wait as OverQuota; all run once."""
    ns = kubectl.namespace
    assert ns is not None
    kubectl.apply(policy(quotas=[{"namespace": ns, **quota}]))
    kubectl.apply(stream(agent("worker", capacity=8, **({"provider": provider} if provider else {}))))
    operators.start("op")
    worker = runtimes("worker", "--capabilities=code", "--capacity=8")
    sampler = Sampler(api, ns)
    try:
        with CapacitySampler(api, ns) as capacity:
            work = [task(f"t{i}", input={"sleep": "1.5"}) for i in range(6)]
            kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(work))
            wait_for(lambda: api.count(ns, "Succeeded") == 6, 60, what="every task to succeed")
    finally:
        sampler.stop()
    capacity.assert_ok()
    assert 0 < capacity.peak["worker"] <= limit, capacity.peak
    assert 0 < sampler.most <= limit, sampler.most
    assert sampler.reasons["OverQuota"] > 0, sampler.reasons
    assert any(says in m for m in sampler.messages), sampler.messages[:3]
    assert Counter(c["task"] for c in worker.handled()) == {f"t{i}": 1 for i in range(6)}
    check(api, ns, created=[f"t{i}" for i in range(6)], completions=worker.handled("finished")).assert_ok()


def test_weighted_namespaces_share_the_operator_in_proportion(
    kubectl: Kubectl, operators: OperatorFleet, api: Api
) -> None:
    """Weights 3:1, a batch of 8 per cycle, both backlogs waiting: the first 200 placements split 3:1 (±10%)."""
    ns = kubectl.namespace
    assert ns is not None
    heavy, light = f"{ns[:55]}-heavy", f"{ns[:55]}-light"
    admin = kubectl.in_namespace(None)
    for name in (heavy, light):
        admin("create", "namespace", name)
    try:
        kubectl.apply(
            policy(batchSize=8, quotas=[{"namespace": heavy, "weight": 3}, {"namespace": light, "weight": 1}])
        )
        for name in (heavy, light):
            scoped = kubectl.in_namespace(name)
            scoped.apply(stream(agent("pool", capacity=1000), lease("pool")))
            scoped("create", "-f", "-", stdin=yaml.safe_dump_all([task(f"t{i}") for i in range(200)]))
        operators.start("op", also=(heavy, light))

        def assigned() -> list[tuple[str, str]]:
            return [
                (t["status"]["assignment"]["assignedAt"], name)
                for name in (heavy, light)
                for t in api.tasks(name)
                if (t.get("status") or {}).get("assignment")
            ]

        wait_for(lambda: len(assigned()) == 400, 120, what="all 400 tasks to be placed")
        first = [name for _, name in sorted(assigned())[:200]]
        share = first.count(heavy) / len(first)
        assert 0.75 * 0.9 <= share <= 0.75 * 1.1, share
    finally:
        for name in (heavy, light):
            admin("delete", "namespace", name, "--wait=false")
