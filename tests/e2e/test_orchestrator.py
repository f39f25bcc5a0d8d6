"""The original API (UnifiedQuantumOrchestrator) against a real apiserver and a real operator process."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import threading
import time
from typing import Any

import pytest

from qorch import UnifiedQuantumOrchestrator
from qorch.agent import TaskContext
from qorch.api.enums import TaskPhase
from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from support.api import Api
from support.manifests import policy
from support.operators import OperatorFleet

pytestmark = pytest.mark.e2e


def _stamp(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def _phases(items: list[dict[str, Any]]) -> dict[str, int]:
    return dict(collections.Counter(str((i.get("status") or {}).get("phase") or "Unobserved") for i in items))


def _assert_published(quantum: dict[str, Any], api: Api, leader: str) -> None:
    """The status dict's observables are those in SchedulingPolicy default's status, by the leader."""
    published = api.get("/apis/qorch.io/v1alpha1/schedulingpolicies/default")["status"]
    assert quantum["global_coherence"] == published["observables"]["coherence"]
    assert quantum["entropy"] == published["observables"]["entropy"]
    assert quantum["fidelity"] == published["observables"]["fidelity"]
    assert quantum["last_cycle_at"] == published["lastCycleAt"]
    assert quantum["published_by"] == published["leader"] == leader


def test_the_original_snippet_with_1000_agents_and_100_tasks(
    kubectl: Kubectl, operators: OperatorFleet, qorch_control_plane: ControlPlane, api: Api
) -> None:
    """The snippet as written: 1000 served agents, 100 tasks, coherence > 0.95 as the operator published it.

    Then: every task Succeeded with the handler's result, each handler ran once per task, and the
    status dict's numbers are what the apiserver holds.
    """
    kubectl.apply(policy())
    operator = operators.start("op-snippet")
    runs: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handler(task: TaskContext) -> str:
        with lock:
            runs[task.name] += 1
        return f"echo: {task.goal}"

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        orchestrator = UnifiedQuantumOrchestrator(
            max_agents=1_000_000,
            namespace=kubectl.namespace,
            kubeconfig=str(qorch_control_plane.admin_kubeconfig),
            handler=handler,
        )
        await orchestrator.start()
        try:
            # ---- the snippet
            for i in range(1000):
                await orchestrator.register_agent(f"test-agent-{i}", {"general"})
            tasks = [await orchestrator.submit_task(f"Test task {i}") for i in range(100)]
            status = orchestrator.get_system_status()
            assert status["quantum"]["global_coherence"] > 0.95
            # ---- what it promises
            done = await orchestrator.wait(tasks, timeout=180)
            assert {view.phase for view in done.values()} == {TaskPhase.SUCCEEDED}
            for i, name in enumerate(tasks):
                assert done[name].status.execution is not None
                assert done[name].status.execution.result == f"echo: Test task {i}"
            await asyncio.sleep(2)  # the watches catch the last changes
            late = orchestrator.get_system_status()
            held["agents"] = api.agents(kubectl.namespace)  # while they are served (stop() releases them)
            return status, late, tasks
        finally:
            await orchestrator.stop()

    held: dict[str, Any] = {}
    early, late, tasks = asyncio.run(scenario())
    assert early["agents"]["served"] == 1000
    assert early["leader"] == "op-snippet"
    assert runs == dict.fromkeys(tasks, 1), "a handler ran twice, or never"
    items = api.tasks(kubectl.namespace)
    assert all(t["status"]["attempts"] == 1 for t in items)
    # The status dict against the apiserver.
    assert late["tasks"] == {"count": 100, "by_phase": _phases(items)} == {"count": 100, "by_phase": {"Succeeded": 100}}
    agents = held["agents"]
    assert late["agents"]["count"] == len(agents) == 1000
    assert late["agents"]["by_phase"] == _phases(agents) == {"Ready": 1000}
    lease = api.get("/apis/coordination.k8s.io/v1/namespaces/qorch-system/leases/qorch-operator")
    assert late["leader"] == lease["spec"]["holderIdentity"] == "op-snippet"
    _assert_published(late["quantum"], api, "op-snippet")
    # stop() released every served agent's Lease.
    leases = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{kubectl.namespace}/leases")["items"]
    holders = [x["metadata"]["name"] for x in leases if (x.get("spec") or {}).get("holderIdentity")]
    assert len(leases) == 1000
    assert holders == []
    assert operator.popen.poll() is None, operator.tail()


def test_the_published_status_says_none_before_the_operator_cycled(
    kubectl: Kubectl, qorch_control_plane: ControlPlane, api: Api
) -> None:
    """No operator, no published observables (policy status cleared): the status says None, not a number."""
    kubectl.apply(policy())
    api.send(
        "PATCH",
        "/apis/qorch.io/v1alpha1/schedulingpolicies/default/status",
        {"status": None},
        content_type="application/merge-patch+json",
    )

    async def scenario() -> dict[str, Any]:
        async with UnifiedQuantumOrchestrator(
            max_agents=5, namespace=kubectl.namespace, kubeconfig=str(qorch_control_plane.admin_kubeconfig)
        ) as orchestrator:
            await orchestrator.register_agent("lonely", {"general"})
            await orchestrator.submit_task("nobody schedules this")
            deadline = time.monotonic() + 10
            while orchestrator.get_system_status()["tasks"]["count"] < 1 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            return orchestrator.get_system_status()

    status = asyncio.run(scenario())
    assert status["quantum"]["global_coherence"] is None
    assert status["quantum"]["entropy"] is None
    assert status["tasks"] == {"count": 1, "by_phase": {"Unobserved": 1}}


def test_contention_shows_as_low_coherence(
    kubectl: Kubectl, operators: OperatorFleet, qorch_control_plane: ControlPlane
) -> None:
    """Eight tasks of eight classes for two one-slot agents: the published coherence falls below 0.5.

    The same definition that reads > 0.95 for the snippet (docs/scheduler.md: probability mass
    kept against each class's ideal) reads low when contention leaves tasks without their slot.
    """
    kubectl.apply(policy())
    operators.start("op-contention")

    async def busy(task: TaskContext) -> str:
        await asyncio.sleep(20)  # holds its slot while the status is read
        return task.goal

    async def scenario() -> tuple[dict[str, Any], float]:
        async with UnifiedQuantumOrchestrator(
            max_agents=10,
            namespace=kubectl.namespace,
            kubeconfig=str(qorch_control_plane.admin_kubeconfig),
            handler=busy,
        ) as orchestrator:
            kinds = [["general"], ["a"], ["b"], ["a", "b"]]
            for i in range(8):  # eight classes: four capability sets x two classifications
                level = "public" if i < 4 else "confidential"
                await orchestrator.submit_task(f"contended {i}", requires=kinds[i % 4], classification=level)
            started = time.time()
            for name in ("slot-1", "slot-2"):
                await orchestrator.register_agent(name, {"general", "a", "b"}, capacity=1, clearance="secret")

            def settled() -> dict[str, Any] | None:
                status = orchestrator.get_system_status()
                quantum = status["quantum"]
                phases = status["tasks"]["by_phase"]
                placed = phases.get("Assigned", 0) + phases.get("Running", 0)
                fresh = quantum["last_cycle_at"] and _stamp(quantum["last_cycle_at"]) >= started
                ok = placed == 2 and phases.get("Queued") == 6 and quantum["published_by"] == "op-contention"
                return status if ok and fresh else None

            deadline = time.monotonic() + 15
            while (status := settled()) is None:
                assert time.monotonic() < deadline, orchestrator.get_system_status()
                await asyncio.sleep(0.2)
            return status, started

    status, _ = asyncio.run(scenario())
    quantum = status["quantum"]
    assert quantum["global_coherence"] is not None
    print(f"\ncoherence under contention: {quantum['global_coherence']:.3f} (batch {quantum['batch']})")  # noqa: T201
    assert quantum["global_coherence"] < 0.5, quantum
    assert quantum["published_by"] == "op-contention"
