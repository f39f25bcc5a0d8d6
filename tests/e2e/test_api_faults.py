"""Faults between the operator and the apiserver, injected by a loopback proxy (qorch.testing.faultproxy).

Every call can hang, reset, answer 5xx, or land and lose its answer. The
operator talks to the apiserver only through the proxy here; agent pools and
kubectl talk to it directly.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qorch.testing import Kubectl
from qorch.testing.faultproxy import Fault, FaultProxy
from qorch.testing.invariants import check
from support.api import Api
from support.manifests import agents, lease, policy, stream, tasks
from support.operators import OperatorFleet
from support.pools import CapacitySampler, PoolFleet, claims_per_attempt, wait_for

pytestmark = pytest.mark.e2e

FAST = (4.0, 3.0, 1.0)  # lease duration, renew deadline, retry period


def holder(kubectl: Kubectl, lease_name: str) -> str:
    """Who holds a leader Lease ('' if nobody, or no Lease)."""
    got = kubectl.run(
        "get", "lease", lease_name, "-n", "qorch-system", "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return got.stdout.strip() if got.returncode == 0 else ""


@pytest.mark.parametrize("action", ["reset", "hang"])
def test_a_leader_that_cannot_renew_steps_down_in_time(
    kubectl: Kubectl, operators: OperatorFleet, proxy: FaultProxy, tmp_path: Path, action: str
) -> None:
    """Defect 1: resets or a hung renew: the leader exits 3 within renewDeadline, and the follower leads."""
    lease = f"renew-{action}-{kubectl.namespace}"[:60]
    proxied = operators.start(
        "op-proxied", lease_name=lease, timings=FAST, kubeconfig=proxy.kubeconfig(tmp_path / "kc")
    )
    wait_for(lambda: holder(kubectl, lease) == "op-proxied", 30, what="the proxied replica to lead")
    operators.start("op-direct", lease_name=lease, timings=FAST)
    time.sleep(1)
    started = time.monotonic()
    proxy.add(Fault(action, path=f"/leases/{lease}"))
    code = proxied.wait(timeout=FAST[1] + 6)
    stepped_down = time.monotonic() - started
    assert code == 3, (code, proxied.tail())
    assert stepped_down <= FAST[1] + FAST[2] + 2.0, f"stepped down after {stepped_down:.1f}s"
    wait_for(lambda: holder(kubectl, lease) == "op-direct", FAST[0] + FAST[2] + 5, what="the follower to lead")
    assert "Traceback" not in proxied.log_text()


def test_a_leader_that_reads_another_holder_steps_down_at_once(kubectl: Kubectl, operators: OperatorFleet) -> None:
    """Defect 1: someone else's name on the Lease (an overwrite): the leader exits at its next renewal."""
    lease = f"usurp-{kubectl.namespace}"[:60]
    leader = operators.start("op-a", lease_name=lease, timings=(30.0, 20.0, 1.0))
    wait_for(lambda: holder(kubectl, lease) == "op-a", 30, what="op-a to lead")
    started = time.monotonic()
    kubectl.run("patch", "lease", lease, "-n", "qorch-system", "--type=merge", "-p",
                '{"spec":{"holderIdentity":"intruder"}}')  # fmt: skip
    code = leader.wait(timeout=10)
    assert code == 3, leader.tail()
    assert time.monotonic() - started < 4.0  # one retry period, not the 20 s renew deadline
    assert "intruder holds the lease" in leader.log_text()


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault("reset", method="PATCH", path="/tasks/", times=40), id="resets"),
        pytest.param(Fault("status", method="PATCH", path="/tasks/", status=503, times=40), id="503s"),
        pytest.param(Fault("hang", method="PATCH", path="/tasks/", times=10, seconds=30), id="hangs"),
        pytest.param(Fault("lost", method="PATCH", path="/tasks/", times=40), id="answers-lost"),
        pytest.param(Fault("status", method="PATCH", path="/tasks/", status=500, times=10), id="500s"),
        pytest.param(Fault("status", method="PATCH", path="/tasks/", status=504, times=10), id="504s"),
        pytest.param(Fault("status", method="PATCH", path="/tasks/", status=409, times=40), id="409s"),
        pytest.param(
            Fault("status", method="PATCH", path="/tasks/", status=429, times=40, retry_after=1), id="429s-retry-after"
        ),
        pytest.param(Fault("delay", path="/", seconds=0.3), id="latency"),
    ],
)
def test_failed_status_writes_never_strand_a_task(
    kubectl: Kubectl, operators: OperatorFleet, proxy: FaultProxy, api: Api, tmp_path: Path, fault: Fault
) -> None:
    """Defect 2: writes that reset, fail, hang or lose their answer: every task still gets exactly one assignment."""
    kubectl.apply(policy())
    kubectl.apply(stream(agents("a", 10, 10)))
    kubectl.apply(stream([lease(f"a-{i}") for i in range(10)]))
    op = operators.start("op", kubeconfig=proxy.kubeconfig(tmp_path / "kc"), health=True)
    proxy.add(fault)
    kubectl("create", "-f", "-", stdin=tasks("t", 60))
    wait_for(lambda: api.count(kubectl.namespace, "Assigned") == 60, 120, what="all 60 assigned")
    assert fault.hits > 0
    time.sleep(2)
    assert api.count(kubectl.namespace, "Assigned") == 60
    for item in api.tasks(kubectl.namespace):
        assert item["status"]["assignment"]["attempt"] == 1, item["metadata"]["name"]
        assert [h["reason"] for h in item["status"]["history"]] == ["Scheduled"], item["metadata"]["name"]
    assert op.metric("qorch_writes_open") <= 10  # only agents' status writes, settling
    assert op.healthz() == 200
    assert "Traceback" not in op.log_text()
    check(api, kubectl.namespace, created=[f"t-{i}" for i in range(60)]).assert_ok()


def test_a_write_that_landed_unseen_never_overfills_an_agent(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, proxy: FaultProxy, api: Api, tmp_path: Path
) -> None:
    """Defect 9: assignment answers are lost while slots are scarce; no agent ever holds more than its capacity."""
    kubectl.apply(policy())
    kubectl.apply(stream(agents("a", 4, 1)))
    pools.start("a", selector="pool=a", work="1,2")
    operators.start("op", kubeconfig=proxy.kubeconfig(tmp_path / "kc"))
    lost = proxy.add(Fault("lost", method="PATCH", path="/tasks/", times=25))

    def held() -> int:
        worst = 0
        load: dict[str, int] = {}
        for t in api.tasks(kubectl.namespace):
            status = t.get("status") or {}
            if status.get("phase") in ("Assigned", "Running"):
                agent = status["assignment"]["agent"]
                load[agent] = load.get(agent, 0) + 1
                worst = max(worst, load[agent])
        return worst

    worst = 0
    with CapacitySampler(api, kubectl.namespace, period=0.2) as sampler:
        kubectl("create", "-f", "-", stdin=tasks("t", 30))
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and api.count(kubectl.namespace, "Succeeded") < 30:
            worst = max(worst, held())
            time.sleep(0.1)
    assert api.count(kubectl.namespace, "Succeeded") == 30
    assert lost.hits == 25
    assert worst <= 1, f"an agent held {worst} assignments with capacity 1"
    assert sampler.violations == []
    assert max(claims_per_attempt(pools.records()).values()) == 1
    assert not [r for r in pools.records() if r["event"] == "refuse"], "the operator overfilled; the agent refused"
    check(api, kubectl.namespace, created=[f"t-{i}" for i in range(30)]).assert_ok()


def test_a_hung_events_api_does_not_slow_scheduling(
    kubectl: Kubectl, operators: OperatorFleet, proxy: FaultProxy, api: Api, tmp_path: Path
) -> None:
    """Defect 15: every Event POST hangs; assignments go on at full speed and the Events are dropped, counted."""
    kubectl.apply(policy())
    kubectl.apply(stream(agents("a", 10, 30)))
    kubectl.apply(stream([lease(f"a-{i}") for i in range(10)]))
    op = operators.start("op", kubeconfig=proxy.kubeconfig(tmp_path / "kc"))
    hung = proxy.add(Fault("hang", method="POST", path="/events", seconds=600))
    started = time.monotonic()
    kubectl("create", "-f", "-", stdin=tasks("t", 200))
    wait_for(lambda: api.count(kubectl.namespace, "Assigned") == 200, 60, what="all 200 assigned")
    assert time.monotonic() - started < 30
    assert hung.hits >= 1
    assert op.metric("qorch_writes_open") <= 10
    check(api, kubectl.namespace, created=[f"t-{i}" for i in range(200)]).assert_ok()


def test_a_missing_operator_namespace_is_one_clear_line(kubectl: Kubectl, operators: OperatorFleet) -> None:
    """Defect 16: without the Lease's namespace the operator says what to create, once, then leads when it exists."""
    namespace = f"missing-{kubectl.namespace}"[:60]
    op = operators.start("op", lease_namespace=namespace, timings=FAST)
    time.sleep(8)
    log = op.log_text()
    assert f"namespace {namespace} does not exist" in log
    assert f"kubectl create namespace {namespace}" in log
    assert log.count("does not exist") == 1, log
    assert "HTTP response headers" not in log
    assert "Traceback" not in log
    kubectl.run("create", "namespace", namespace)
    try:
        wait_for(
            lambda: kubectl.run("get", "lease", "qorch-operator", "-n", namespace, check=False).returncode == 0,
            30,
            what="the operator to lead once the namespace exists",
        )
    finally:
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
