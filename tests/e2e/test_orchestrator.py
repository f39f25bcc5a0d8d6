"""The original API (UnifiedQuantumOrchestrator) against a real apiserver and a real operator process."""

from __future__ import annotations

import asyncio
import collections
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
