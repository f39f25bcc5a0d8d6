"""Watches that break, expire and re-list, and a fleet that changes while cycles run.

The operator's informers watch through the fault proxy, so a test can cut a
watch, hold its reconnection, and answer it `410 Gone` (what the apiserver says
when the version it resumes from was compacted), forcing a full re-list.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from qorch.testing import Kubectl
from qorch.testing.faultproxy import Fault, FaultProxy
from qorch.testing.invariants import check
from support.api import Api
from support.manifests import agent, lease, policy, stream, task
from support.operators import OperatorFleet
from support.pools import PoolFleet, wait_for

pytestmark = pytest.mark.e2e


def test_objects_deleted_while_the_watch_was_down_do_not_linger(
    kubectl: Kubectl, operators: OperatorFleet, proxy: FaultProxy, api: Api, tmp_path: Path
) -> None:
    """Defect 10: deletes during a watch gap ending in 410 Gone: the re-list drops them, their slots are freed."""
    kubectl.apply(policy())
    kubectl.apply(stream(agent("a", capacity=3), agent("b", capacity=3), lease("a"), lease("b")))
    op = operators.start("op", kubeconfig=proxy.kubeconfig(tmp_path / "kc"))
    kubectl("create", "-f", "-", stdin=stream([task(f"t{i}") for i in range(6)]))
    wait_for(lambda: list(api.phases(kubectl.namespace).values()).count("Assigned") == 6, 60, what="6 assigned")
    kubectl("create", "-f", "-", stdin=stream(task("waiting")))
    wait_for(lambda: api.phases(kubectl.namespace).get("waiting") == "Queued", 30, what="the extra task to wait")

    hold = proxy.add(Fault("hang", path="/tasks", watch=True))
    proxy.sever("/tasks")  # the task watch breaks and cannot come back yet
    time.sleep(1)
    for name in ("t0", "t1", "t2"):
        kubectl("delete", "qtask", name)
    lists_before = op.metric("qorch_informer_lists_total")
    proxy.add(Fault("gone", path="/tasks", watch=True, times=1))
    proxy.remove(hold)  # the reconnection is answered 410 Gone: the informer must list again

    wait_for(lambda: api.phases(kubectl.namespace).get("waiting") == "Assigned", 60, what="a freed slot to be used")
    assert op.metric("qorch_informer_lists_total") > lists_before

    def load() -> int:  # an Agent's load is written at most every 15 s
        return sum(a["status"].get("activeTasks", 0) for a in kubectl.json("get", "qagent")["items"])

    wait_for(lambda: load() == 4, 40, what="the agents' load to show the 4 remaining tasks")
    writes_to_gone = op.metric('qorch_status_writes_total{kind="tasks",outcome="gone"}')
    time.sleep(3)
    assert op.metric('qorch_status_writes_total{kind="tasks",outcome="gone"}') == writes_to_gone  # no phantom loop
    check(api, kubectl.namespace, created=[f"t{i}" for i in range(3, 6)] + ["waiting"]).assert_ok()


def test_a_fleet_changing_during_cycles_never_stops_scheduling(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Defects 7 and 8: agents appear, renew and change while cycles run; every task is placed, no cycle fails."""
    kubectl.apply(policy())
    kubectl.apply(stream(agent("seed", capacity=5, pool="fleet")))
    pools.start("fleet", selector="pool=fleet", work="0.2,0.6", renew_seconds=0.3, lease_seconds=5)
    op = operators.start("op")

    def grow() -> None:
        for batch in range(10):
            batch_of_agents = [agent(f"g{batch}-{i}", capacity=2, pool="fleet") for i in range(10)]
            kubectl.run("apply", "-f", "-", check=False, stdin=stream(batch_of_agents))
            time.sleep(0.3)

    grower = threading.Thread(target=grow, daemon=True)
    grower.start()
    kubectl("create", "-f", "-", stdin=stream([task(f"t{i}") for i in range(300)]))
    wait_for(lambda: set(api.phases(kubectl.namespace).values()) == {"Succeeded"}, 180, what="all 300 to succeed")
    grower.join(60)
    log = op.log_text()
    assert "scheduling cycle failed" not in log
    assert "Traceback" not in log
    assert len(kubectl.json("get", "qagent")["items"]) == 101
    check(api, kubectl.namespace, created=[f"t{i}" for i in range(300)]).assert_ok()


def test_a_stalled_lease_watch_does_not_kill_the_fleet(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, proxy: FaultProxy, api: Api, tmp_path: Path
) -> None:
    """A Lease watch that goes silent looks like every agent dying: Leases are read back before work is taken.

    Agents keep renewing while the operator's Lease watch is held; their running
    work stays theirs. Then an agent really stops, with the watch still held: its
    Lease, read back unchanged, confirms the death and its work is retried.
    """
    kubectl.apply(policy())
    kubectl.apply(stream(agent("a", capacity=2)))
    pool = pools.start("a", work="3600,3600", lease_seconds=3, renew_seconds=0.5)
    op = operators.start("op", kubeconfig=proxy.kubeconfig(tmp_path / "kc"))
    retry = {"maxAttempts": 3, "backoffSeconds": 0, "maxBackoffSeconds": 0}
    kubectl("create", "-f", "-", stdin=stream([task(f"t{i}", retry=retry) for i in range(2)]))
    wait_for(lambda: set(api.phases(kubectl.namespace).values()) == {"Running"}, 60, what="both tasks to run")

    proxy.add(Fault("hang", path="/leases", watch=True))
    proxy.sever("/leases")  # the Lease watch breaks and its reconnection is held: no renewal is seen
    time.sleep(12)  # four Lease durations
    assert set(api.phases(kubectl.namespace).values()) == {"Running"}
    assert op.metric('qorch_agent_leases_read_back_total{found="renewed"}') > 0
    for item in kubectl.json("get", "qtask")["items"]:
        assert item["status"]["attempts"] == 1, item["metadata"]["name"]
        assert "AgentLost" not in [h["reason"] for h in item["status"].get("history", [])]

    pool.stop()  # now the agent is gone for real, and the watch is still held
    wait_for(
        lambda: all(
            "AgentLost" in [h["reason"] for h in item["status"].get("history", [])]
            for item in kubectl.json("get", "qtask")["items"]
        ),
        60,
        what="the lost agent's work to be taken back",
    )
    assert op.metric('qorch_agent_leases_read_back_total{found="dead"}') > 0
    check(api, kubectl.namespace, created=["t0", "t1"]).assert_ok()
