"""Approvals bound to one Task incarnation, and every part of the SchedulingPolicy applied in a cluster."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl, KubectlError
from support.api import Api
from support.manifests import agent, approval, policy, stream, task
from support.operators import OperatorFleet
from support.pools import CapacitySampler, PoolFleet, wait_for

pytestmark = pytest.mark.e2e

QORCH = Path(sys.executable).parent / "qorch"


def phase(kubectl: Kubectl, name: str) -> str:
    """A task's phase, read with kubectl."""
    return (kubectl.json("get", "qtask", name).get("status") or {}).get("phase", "")


def test_a_recreated_task_waits_for_a_new_approval(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet
) -> None:
    """Defect 13: an Approval binds to the Task it found; the same name recreated is not approved by it."""
    kubectl.apply(policy())
    kubectl.apply(stream(agent("worker", capacity=4, pool="all")))
    pools.start("all", selector="pool=all", work="0.2,0.4")
    operators.start("op")
    gated = task("deploy", approval={"required": True})
    kubectl.apply(yaml.safe_dump(gated))
    wait_for(lambda: phase(kubectl, "deploy") == "AwaitingApproval", 30, what="the gate")
    kubectl.apply(yaml.safe_dump(approval("ok", "deploy", of=kubectl.json("get", "qtask", "deploy"))))
    wait_for(lambda: phase(kubectl, "deploy") == "Succeeded", 60, what="the approved run")

    kubectl("delete", "qtask", "deploy")
    kubectl.apply(yaml.safe_dump(gated))  # the same name, at once
    wait_for(lambda: phase(kubectl, "deploy") == "AwaitingApproval", 30, what="the new incarnation's gate")
    time.sleep(3)
    assert phase(kubectl, "deploy") == "AwaitingApproval"
    kubectl.apply(yaml.safe_dump(approval("again", "deploy", of=kubectl.json("get", "qtask", "deploy"))))
    wait_for(lambda: phase(kubectl, "deploy") == "Succeeded", 60, what="the second approved run")


def test_editing_an_approved_task_needs_a_new_approval(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, qorch_control_plane: ControlPlane
) -> None:
    """Issue 14.4: `qorch approve` binds to the uid and generation it read; an edit after it needs a new approval."""

    def approve(name: str) -> str:
        argv = [str(QORCH), "approve", name, f"--namespace={kubectl.namespace}"]
        argv.append(f"--kubeconfig={qorch_control_plane.admin_kubeconfig}")
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split("/")[-1].split()[0]

    def condition(name: str) -> dict:
        return ((kubectl.json("get", "qtask", name).get("status") or {}).get("conditions") or [{}])[0]

    kubectl.apply(policy())
    kubectl.apply(stream(agent("worker", capacity=4, pool="all")))
    pools.start("all", selector="pool=all", work="0.2,0.4")
    operators.start("op")
    # It also waits for "first", which does not exist yet: approved, it holds at the dependency.
    kubectl.apply(yaml.safe_dump(task("ship", approval={"required": True}, dependsOn=["first"])))
    wait_for(lambda: phase(kubectl, "ship") == "AwaitingApproval", 30, what="the gate")
    first_approval = approve("ship")
    made = kubectl.json("get", "qapproval", first_approval)["spec"]
    assert (made["taskUID"], made["taskGeneration"]) == (kubectl.json("get", "qtask", "ship")["metadata"]["uid"], 1)
    wait_for(lambda: phase(kubectl, "ship") == "Blocked", 30, what="the approval to count")

    kubectl("patch", "qtask", "ship", "--type=merge", "-p", '{"spec":{"priority":900}}')  # an edit: generation 2
    wait_for(lambda: phase(kubectl, "ship") == "AwaitingApproval", 30, what="the edit to void the approval")
    message = condition("ship").get("message", "")
    assert f"Approval {first_approval} approved generation 1" in message, message
    assert "generation 2" in message, message
    kubectl.apply(yaml.safe_dump(task("first")))
    time.sleep(3)  # the dependency is met now, yet the stale approval must not let it run
    assert phase(kubectl, "ship") == "AwaitingApproval"

    approve("ship")
    wait_for(lambda: phase(kubectl, "ship") == "Succeeded", 60, what="the run approved at generation 2")


@pytest.mark.parametrize("order", [("Approve", "Reject"), ("Reject", "Approve")], ids=["approve-first", "reject-first"])
def test_a_rejection_wins_whatever_the_order(
    kubectl: Kubectl, operators: OperatorFleet, order: tuple[str, str]
) -> None:
    """Defect 13: with an Approve and a Reject for one task, it is Cancelled, never run."""
    kubectl.apply(policy())
    operators.start("op")  # no agent: an approval must not lead to a run before the rejection is seen
    kubectl.apply(yaml.safe_dump(task("risky", approval={"required": True})))
    wait_for(lambda: phase(kubectl, "risky") == "AwaitingApproval", 30, what="the gate")
    risky = kubectl.json("get", "qtask", "risky")
    kubectl.apply(yaml.safe_dump_all([approval(f"d{i}", "risky", d, of=risky) for i, d in enumerate(order)]))
    wait_for(lambda: phase(kubectl, "risky") == "Cancelled", 30, what="the rejection")
    status = kubectl.json("get", "qtask", "risky")["status"]
    assert status["conditions"][0]["reason"] == "ApprovalRejected"
    assert "assignment" not in status


def test_the_goal_of_an_approved_task_cannot_change(kubectl: Kubectl, qorch_crds: list[str]) -> None:
    """Defect 13: what the approver saw is what runs; the apiserver refuses an edit, naming the field and the fix."""
    kubectl.apply(yaml.safe_dump(task("locked", approval={"required": True})))
    with pytest.raises(KubectlError) as refused:
        kubectl("patch", "qtask", "locked", "--type=merge", "-p", '{"spec":{"goal":"something else"}}')
    assert "spec.goal" in refused.value.stderr
    assert "delete and recreate the task" in refused.value.stderr
    kubectl.apply(yaml.safe_dump(task("free")))
    kubectl("patch", "qtask", "free", "--type=merge", "-p", '{"spec":{"goal":"something else"}}')  # no gate: fine
    del qorch_crds


def test_namespace_quotas_cap_running_work(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Defect 14: maxConcurrentTasks holds at every sample; the rest wait as OverQuota and run as slots free."""
    kubectl.apply(policy(quotas=[{"namespace": kubectl.namespace, "maxConcurrentTasks": 3}]))
    kubectl.apply(stream(agent("a", capacity=10, pool="all"), agent("b", capacity=10, pool="all")))
    pools.start("all", selector="pool=all", work="1,1.5")
    operators.start("op")
    peak = 0
    with CapacitySampler(api, kubectl.namespace, period=0.2):
        kubectl("create", "-f", "-", stdin=yaml.safe_dump_all([task(f"q{i}") for i in range(12)]))
        deadline = time.monotonic() + 120
        saw_over_quota = False
        while time.monotonic() < deadline:
            items = api.tasks(kubectl.namespace)
            active = sum(1 for t in items if (t.get("status") or {}).get("phase") in ("Assigned", "Running"))
            peak = max(peak, active)
            saw_over_quota |= any(
                (t.get("status") or {}).get("conditions", [{}])[0].get("reason") == "OverQuota" for t in items
            )
            if all((t.get("status") or {}).get("phase") == "Succeeded" for t in items):
                break
            time.sleep(0.1)
    assert peak <= 3, f"{peak} tasks active at once under a quota of 3"
    assert saw_over_quota
    assert all((t.get("status") or {}).get("phase") == "Succeeded" for t in api.tasks(kubectl.namespace))


def test_default_retry_applies_and_retries_avoid_the_failed_domain(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet
) -> None:
    """Defect 14: defaultRetry bounds attempts; a retry moves off the entanglement group that failed it."""
    kubectl.apply(policy(defaultRetry={"maxAttempts": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0}))
    kubectl.apply(stream(
        agent("bad-0", pool="bad", entanglementGroup="rack-bad"),
        agent("bad-1", pool="bad", entanglementGroup="rack-bad"),
        agent("good-0", pool="good", entanglementGroup="rack-good"),
    ))  # fmt: skip
    pools.start("bad", selector="pool=bad", work="0,0.01", failure_rate=1.0)
    pools.start("good", selector="pool=good", work="1,1")
    operators.start("op")
    kubectl.apply(yaml.safe_dump(task("pinned", agentSelector={"matchLabels": {"pool": "bad"}})))
    wait_for(lambda: phase(kubectl, "pinned") == "DeadLettered", 60, what="the pinned task to use its 2 attempts")
    assert kubectl.json("get", "qtask", "pinned")["status"]["attempts"] == 2  # defaultRetry.maxAttempts
    for trial in range(3):
        # good-0 is busy when the first attempt is placed, so it lands on the failing rack; by the
        # retry (after a 2 s backoff) good-0 is free again, and two of the three free agents are in
        # the rack that just failed: only the avoidance sends it to good-0 every time.
        kubectl.apply(yaml.safe_dump(task(f"block-{trial}", agentSelector={"matchLabels": {"pool": "good"}})))
        wait_for(lambda t=trial: phase(kubectl, f"block-{t}") == "Running", 30, what="good-0 to be busy")
        retry = {"maxAttempts": 3, "backoffSeconds": 2, "maxBackoffSeconds": 2}
        kubectl.apply(yaml.safe_dump(task(f"roam-{trial}", retry=retry)))
        wait_for(lambda t=trial: phase(kubectl, f"roam-{t}") == "Succeeded", 60, what=f"roam-{trial} to succeed")
        history = kubectl.json("get", "qtask", f"roam-{trial}")["status"]["history"]
        tried = [h["agent"] for h in history if h["reason"] == "Scheduled"]
        assert tried[0].startswith("bad-"), history
        assert tried[1:] == ["good-0"], history
