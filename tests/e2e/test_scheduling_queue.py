"""Defect 17, the kernel issue's acceptance: 20,000 tasks that cannot run never delay one that can.

A new schedulable task is assigned within the p95 it gets on an empty queue
(+-50%), and every task, the 20,000 included, gets its first status decided
within two cycles of the operator first seeing it (a histogram the operator
exports, `qorch_task_cycles_to_first_status`).

Latency is measured from just before the client's create call to the
assignment's `assignedAt`, both read from this machine's one clock. The
loaded probes start once the operator has settled after writing the 20,000
statuses (no write open, echoes back): the claim is about work that waits, not
about the burst that created it.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qorch.testing import Kubectl
from support.api import Api
from support.manifests import agent, lease, policy, stream, task
from support.operators import OperatorFleet
from support.pools import wait_for

pytestmark = pytest.mark.e2e

HOPELESS = 20_000
# 60 probes: with 30, the p95 rests on the two slowest creates, and one stall of a shared
# machine (a kubectl process start is most of the ~55 ms measured) decides the verdict.
PROBES = 60


def p95(values: list[float]) -> float:
    """The 95th percentile."""
    return statistics.quantiles(values, n=20)[-1]


def probe(kubectl: Kubectl, api: Api, prefix: str) -> list[float]:
    """Create tasks one by one, 5 a second; seconds from just before each create to its assignedAt."""
    started: dict[str, float] = {}
    for i in range(PROBES):
        name = f"{prefix}-{i}"
        started[name] = time.time()
        kubectl("create", "-f", "-", stdin=stream(task(name)))
        time.sleep(0.2)

    def assigned() -> dict[str, float] | None:
        got = {}
        for t in api.tasks(kubectl.namespace):
            name = t["metadata"]["name"]
            at = ((t.get("status") or {}).get("assignment") or {}).get("assignedAt")
            if name in started and at:
                got[name] = dt.datetime.fromisoformat(at).timestamp() - started[name]
        return got if len(got) == PROBES else None

    return list(wait_for(assigned, 60, what=f"the {prefix} probes to be assigned").values())


def histogram(text: str, name: str) -> dict[str, float]:
    """A Prometheus histogram's cumulative buckets, by `le`."""
    return {m[0]: float(m[1]) for m in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.MULTILINE)}


def test_twenty_thousand_unschedulable_tasks_do_not_slow_a_new_one(
    kubectl: Kubectl, operators: OperatorFleet, api: Api
) -> None:
    """p95 create->assigned with 20,000 hopeless tasks queued is within +-50% of the empty queue's."""
    kubectl.apply(policy())
    kubectl.apply(stream(agent("worker", capacity=1000), lease("worker")))
    op = operators.start("op")
    wait_for(lambda: kubectl.json("get", "qagent", "worker").get("status", {}).get("phase") == "Ready", 30,
             what="the agent to be Ready")  # fmt: skip
    empty = probe(kubectl, api, "empty")

    chunks = 8
    documents = [task(f"hopeless-{i}", requires=("quantum-physics",)) for i in range(HOPELESS)]

    def create(part: int) -> None:
        argv = [
            str(kubectl.binary),
            f"--kubeconfig={kubectl.kubeconfig}",
            "-n",
            str(kubectl.namespace),
            "create",
            "-f",
            "-",
        ]
        subprocess.run(
            argv, input=stream(documents[part::chunks]), text=True, capture_output=True, check=True, timeout=600
        )

    with ThreadPoolExecutor(chunks) as pool:
        list(pool.map(create, range(chunks)))

    def all_have_status() -> bool:
        items = api.get(
            f"/apis/qorch.io/v1alpha1/namespaces/{kubectl.namespace}/tasks?fieldSelector=status.phase=Queued"
        )
        return len(items["items"]) >= HOPELESS

    wait_for(all_have_status, 300, period=2, what="every hopeless task to carry a status")
    # Probe the steady state "20,000 queued", not the tail of the burst that created them: wait
    # until the operator has no write open and the echoes of its 20,000 writes have come back.
    wait_for(lambda: op.metric("qorch_writes_open") == 0, 60, what="the operator to settle")
    time.sleep(10)
    loaded = probe(kubectl, api, "loaded")

    reasons = {
        (t.get("status") or {}).get("conditions", [{}])[0].get("reason")
        for t in api.tasks(kubectl.namespace)
        if t["metadata"]["name"].startswith("hopeless-")
    }
    assert reasons == {"NoCapableAgent"}
    assert op.metric('qorch_scheduling_queue{state="parked"}') == HOPELESS
    metrics = op.metrics_text()
    buckets = histogram(metrics, "qorch_task_cycles_to_first_status")
    total = buckets["+Inf"]
    assert total >= HOPELESS + 2 * PROBES
    assert buckets["2.0"] == total, f"some tasks waited more than two cycles for a status: {buckets}"
    print(  # noqa: T201 - the measured numbers belong in the log
        f"\np95 create->assigned: empty {p95(empty) * 1000:.0f} ms, with {HOPELESS} parked "
          f"{p95(loaded) * 1000:.0f} ms (ratio {p95(loaded) / p95(empty):.2f})")  # fmt: skip
    print(  # noqa: T201 - the measured numbers belong in the log
        "empty ms: ", " ".join(f"{x * 1000:.0f}" for x in sorted(empty))
    )
    print(  # noqa: T201 - the measured numbers belong in the log
        "loaded ms:", " ".join(f"{x * 1000:.0f}" for x in sorted(loaded))
    )
    assert p95(loaded) <= 1.5 * p95(empty), (sorted(empty), sorted(loaded))
