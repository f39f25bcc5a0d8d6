"""Agent liveness through real agent pools: Leases judged by their changes, on the operator's own clock.

Stale Leases move unstarted work for free and fail started work; cordoning
leaves running work alone; agents' clocks do not matter; a restarted operator
does not fail work that is running.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qorch.testing import Kubectl
from qorch.testing.invariants import check
from support.api import Api
from support.manifests import agent, lease, policy, stream, task
from support.operators import OperatorFleet
from support.pools import CapacitySampler, PoolFleet, claims_per_attempt, wait_for

pytestmark = pytest.mark.e2e


def only(*agents: str) -> dict[str, Any]:
    """An agentSelector for these agents."""
    return {"matchExpressions": [{"key": "agent", "operator": "In", "values": list(agents)}]}


def status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    """A task's status, read with kubectl."""
    return kubectl.json("get", "qtask", name).get("status") or {}


def reasons(kubectl: Kubectl, name: str) -> list[tuple[str, str, int]]:
    """(reason, agent, attempt) of every history entry."""
    return [(h["reason"], h.get("agent", ""), h.get("attempt", 0)) for h in status(kubectl, name).get("history", [])]


def test_a_dead_agents_unstarted_work_moves_for_free_and_started_work_is_retried(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Lease stale: the unclaimed attempt is requeued (attempt not used); the claimed one is lost and retried."""
    kubectl.apply(policy())
    kubectl.apply(stream([agent("worker"), agent("slowpoke")]))
    worker = pools.start("worker", selector="pool=worker", work="60,60", lease_seconds=3, renew_seconds=0.5)
    slowpoke = pools.start("slowpoke", selector="pool=slowpoke", claim_delay=120, lease_seconds=3, renew_seconds=0.5)
    operators.start("op")
    retry = {"maxAttempts": 3, "backoffSeconds": 0, "maxBackoffSeconds": 0}
    kubectl.apply(stream(task("started", retry=retry, agentSelector=only("worker", "spare"))))
    wait_for(lambda: status(kubectl, "started").get("phase") == "Running", 60, what="the first task to run")
    kubectl.apply(stream(task("unstarted", agentSelector=only("slowpoke", "spare"))))
    wait_for(lambda: status(kubectl, "unstarted").get("phase") == "Assigned", 60, what="the second assignment")
    assert status(kubectl, "unstarted")["assignment"]["agent"] == "slowpoke"

    worker.stop()
    slowpoke.stop()
    kubectl.apply(stream(agent("spare", capacity=2)))
    pools.start("spare", selector="pool=spare", work="0.2,0.4")
    for name in ("started", "unstarted"):
        wait_for(lambda n=name: status(kubectl, n).get("phase") == "Succeeded", 90, what=f"{name} to succeed")

    assert reasons(kubectl, "started")[:3] == [
        ("Scheduled", "worker", 1),
        ("Started", "worker", 1),
        ("AgentLost", "worker", 1),
    ]
    assert status(kubectl, "started")["attempts"] == 2
    assert ("AgentNotReady", "slowpoke", 1) in reasons(kubectl, "unstarted")
    assert status(kubectl, "unstarted")["attempts"] == 1  # the attempt nobody started was not used up
    assert max(claims_per_attempt(pools.records()).values()) == 1
    check(api, kubectl.namespace, created=["started", "unstarted"]).assert_ok()


def test_cordoning_an_agent_keeps_its_running_work(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Defect 3: cordon an agent mid-run: its attempts finish on it; new work waits until uncordoned."""
    kubectl.apply(policy())
    kubectl.apply(stream(agent("busy", capacity=2)))
    pools.start("busy", selector="pool=busy", work="6,6", lease_seconds=5, renew_seconds=0.5)
    operators.start("op")
    kubectl.apply(stream([task("one"), task("two")]))
    wait_for(lambda: all(status(kubectl, n).get("phase") == "Running" for n in ("one", "two")), 60, what="both running")
    kubectl("patch", "qagent", "busy", "--type=merge", "-p", '{"spec":{"cordoned":true}}')
    kubectl.apply(stream(task("three")))
    wait_for(lambda: status(kubectl, "three").get("phase") == "Queued", 30, what="the new task to queue")
    for name in ("one", "two"):
        wait_for(lambda n=name: status(kubectl, n).get("phase") == "Succeeded", 60, what=f"{name} to finish")
        assert [r for r, _, _ in reasons(kubectl, name)] == ["Scheduled", "Started", "Succeeded"]
    assert kubectl.json("get", "qagent", "busy")["status"]["phase"] == "Cordoned"
    assert status(kubectl, "three")["conditions"][0]["reason"] == "NoReadyAgent"
    kubectl("patch", "qagent", "busy", "--type=merge", "-p", '{"spec":{"cordoned":false}}')
    wait_for(lambda: status(kubectl, "three").get("phase") in ("Running", "Succeeded"), 60, what="work after uncordon")
    check(api, kubectl.namespace, created=["one", "two", "three"]).assert_ok()


@contextlib.contextmanager
def skewed_heartbeats(kubectl: Kubectl, skews: dict[str, float], duration: int) -> Iterator[None]:
    """Renew each agent's Lease every 0.5 s with a renewTime off by `skews[agent]` seconds."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.is_set():
            leases = [lease(name, duration=duration, skew=skew) for name, skew in skews.items()]
            kubectl.run("apply", "-f", "-", stdin=stream(leases), check=False)
            stop.wait(0.5)

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_agents_clocks_and_lease_durations_are_honoured(kubectl: Kubectl, operators: OperatorFleet, api: Api) -> None:
    """Defect 6: skewed renewTimes do not matter; a Lease's own leaseDurationSeconds beats the policy's grace."""
    kubectl.apply(policy(agentGraceSeconds=3))
    kubectl.apply(stream([agent("past"), agent("future"), agent("long")]))
    kubectl.apply(stream(lease("long", duration=3600)))  # renewed once, valid for an hour
    with skewed_heartbeats(kubectl, {"past": -3600.0, "future": 3600.0}, duration=3):
        operators.start("op")
        kubectl.apply(stream([task(f"t{i}") for i in range(3)]))
        wait_for(
            lambda: sum(status(kubectl, f"t{i}").get("phase") == "Assigned" for i in range(3)) == 3,
            60,
            what="one task on each agent",
        )
        time.sleep(8)  # more than the policy's 3 s grace and the skewed Leases' 3 s duration
        agents = {a["metadata"]["name"]: a["status"]["phase"] for a in kubectl.json("get", "qagent")["items"]}
        assert agents == {"past": "Ready", "future": "Ready", "long": "Ready"}
        assert {status(kubectl, f"t{i}")["assignment"]["agent"] for i in range(3)} == {"past", "future", "long"}
        assert all(status(kubectl, f"t{i}")["phase"] == "Assigned" for i in range(3))
    wait_for(
        lambda: (
            {a["metadata"]["name"]: a["status"]["phase"] for a in kubectl.json("get", "qagent")["items"]}
            == {"past": "NotReady", "future": "NotReady", "long": "Ready"}
        ),
        30,
        what="the skewed agents to go NotReady once their Leases stop changing",
    )
    check(api, kubectl.namespace, created=[f"t{i}" for i in range(3)]).assert_ok()


def test_a_restarted_operator_does_not_fail_running_work(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Defect 11: kill -9 and restart the only operator while 40 attempts run: none is declared lost."""
    kubectl.apply(policy(agentGraceSeconds=3))
    kubectl.apply(stream([agent(f"a{i}", capacity=4, pool="all") for i in range(10)]))
    pools.start("all", selector="pool=all", work="15,15", lease_seconds=4, renew_seconds=0.5)
    first = operators.start("op-1")
    kubectl.apply(stream([task(f"t{i}") for i in range(40)]))
    wait_for(
        lambda: sum((t.get("status") or {}).get("phase") == "Running" for t in api.tasks(kubectl.namespace)) == 40,
        60,
        what="40 running attempts",
    )
    first.kill()
    second = operators.start("op-2")
    with CapacitySampler(api, kubectl.namespace) as sampler:
        wait_for(
            lambda: all((t.get("status") or {}).get("phase") == "Succeeded" for t in api.tasks(kubectl.namespace)),
            90,
            what="every attempt to finish",
        )
    assert sampler.violations == []
    for item in api.tasks(kubectl.namespace):
        assert item["status"]["attempts"] == 1, item["metadata"]["name"]
        assert "AgentLost" not in {h["reason"] for h in item["status"]["history"]}, item["metadata"]["name"]
    assert second.popen.poll() is None, second.tail()
    check(api, kubectl.namespace, created=[f"t{i}" for i in range(40)]).assert_ok()
