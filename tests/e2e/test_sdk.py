"""The Python SDK against a real operator and real agent runtimes: submit, wait, read results, decide."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from qorch.api.enums import TaskPhase
from qorch.client import Client, ClientError, SyncClient
from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from support.manifests import policy
from support.operators import OperatorFleet
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e


def test_submit_wait_and_read_results_through_the_async_client(
    kubectl: Kubectl,
    operators: OperatorFleet,
    runtimes: Callable[..., Runtime],
    qorch_control_plane: ControlPlane,
) -> None:
    """30 tasks submitted with the SDK all succeed with their handlers' results; bad input is a clear error."""
    kubectl.apply(policy())
    operators.start("op")
    runtimes("sdk-a", "--capabilities=code", "--capacity=4")
    runtimes("sdk-b", "--capabilities=code", "--capacity=4")

    async def scenario() -> dict[str, Any]:
        async with await Client.connect(str(qorch_control_plane.admin_kubeconfig), kubectl.namespace) as client:
            names = [
                await client.submit(f"job {i}", name=f"sdk-{i}", requires=["code"], input={"num": str(i)})
                for i in range(30)
            ]
            seen: list[int] = []
            done = await client.wait(names, timeout=120, progress=lambda views: seen.append(len(views)) or None)
            errors = {}
            for label, call in {
                "priority": client.submit("too urgent", priority=5000),
                "field": client.submit("typo", requirez=["code"]),
                "missing": client.get("no-such-task"),
                "dup": client.submit("again", name="sdk-0"),
                "wait-missing": client.wait(["no-such-task"], timeout=1),
            }.items():
                with pytest.raises(ClientError) as caught:
                    await call
                errors[label] = str(caught.value)
            succeeded = await client.list(phase=TaskPhase.SUCCEEDED)
            return {"done": done, "errors": errors, "succeeded": {v.name for v in succeeded}, "polls": len(seen)}

    out = asyncio.run(scenario())
    done = out["done"]
    assert {v.phase for v in done.values()} == {TaskPhase.SUCCEEDED}
    for name, view in done.items():
        result = view.status.execution.result if view.status.execution else ""
        assert f'"num": "{name.removeprefix("sdk-")}"' in result, result
        assert view.status.assignment is not None
        assert view.status.assignment.agent in {"sdk-a", "sdk-b"}
    assert {f"sdk-{i}" for i in range(30)} <= out["succeeded"]
    assert out["polls"] >= 1
    errors = out["errors"]
    assert errors["priority"].startswith("task spec: priority: Input should be less than or equal to 1000")
    assert errors["field"].startswith("task spec: requirez: Extra inputs are not permitted")
    assert (
        errors["missing"] == f"task 'no-such-task' in {kubectl.namespace}: not found (check the name and the namespace)"
    )
    assert errors["dup"] == "task 'sdk-0' exists already; pick another name"
    assert errors["wait-missing"] == f"task 'no-such-task' does not exist in {kubectl.namespace}"


def test_the_sync_client_approves_in_the_users_own_name(
    kubectl: Kubectl,
    operators: OperatorFleet,
    runtimes: Callable[..., Runtime],
    qorch_control_plane: ControlPlane,
) -> None:
    """A task that needs approval waits; `approve` records an Approval naming the caller, and the task runs."""
    kubectl.apply(policy())
    operators.start("op")
    runtimes("sdk-c", "--capabilities=code", "--capacity=2")
    with SyncClient(str(qorch_control_plane.admin_kubeconfig), kubectl.namespace) as client:
        name = client.submit("deploy to production", name="needs-ok", requires=["code"], approval={"required": True})
        view = client.get(name)
        for _ in range(60):
            if view.phase == TaskPhase.AWAITING_APPROVAL:
                break
            time.sleep(0.5)
            view = client.get(name)
        assert view.phase == TaskPhase.AWAITING_APPROVAL
        approval = client.approve(name, reason="looks good")
        done = client.wait(name, timeout=60)
    assert done[name].phase == TaskPhase.SUCCEEDED
    record = kubectl.json("get", "approval", approval)
    assert record["spec"]["approver"] == "qorch-admin"  # the admin kubeconfig's user, from SelfSubjectReview
    assert record["spec"]["decision"] == "Approve"


def test_five_hundred_tasks_survive_an_agent_killed_mid_task(
    kubectl: Kubectl,
    operators: OperatorFleet,
    runtimes: Callable[..., Runtime],
    qorch_control_plane: ControlPlane,
) -> None:
    """500 SDK tasks on three runtimes; kill -9 one while it runs attempts: all succeed, no attempt completes twice."""
    kubectl.apply(policy(defaultRetry={"maxAttempts": 5}))
    operators.start("op")
    fleet = {
        name: runtimes(name, "--capabilities=code", "--capacity=8", "--lease-seconds=4")
        for name in ("k-a", "k-b", "k-c")
    }
    victim = fleet["k-b"]
    total = 500

    def in_flight(runtime: Runtime) -> set[tuple[str, int]]:
        called = {(c["task"], c["attempt"]) for c in runtime.handled()}
        return called - {(c["task"], c["attempt"]) for c in runtime.handled("finished")}

    async def scenario() -> dict[str, Any]:
        async with await Client.connect(str(qorch_control_plane.admin_kubeconfig), kubectl.namespace) as client:
            names = [
                await client.submit(f"job {i}", name=f"many-{i}", requires=["code"], input={"sleep": "0.3"})
                for i in range(total)
            ]
            deadline = time.monotonic() + 120
            while len(victim.handled("finished")) < 20 or not in_flight(victim):
                assert time.monotonic() < deadline, f"the victim never ran work:\n{victim.tail()}"
                await asyncio.sleep(0.05)
            victim.stop(signal.SIGKILL)
            return await client.wait(names, timeout=300)

    done = asyncio.run(scenario())
    assert {v.phase for v in done.values()} == {TaskPhase.SUCCEEDED}, [
        (v.name, v.phase) for v in done.values() if v.phase != TaskPhase.SUCCEEDED
    ][:5]
    lost = in_flight(victim)  # started on the victim, never finished there
    assert lost, "the kill was meant to land mid-task"
    finished = [(c["task"], c["attempt"]) for r in fleet.values() for c in r.handled("finished")]
    assert len(finished) == len(set(finished)), "an attempt completed twice"
    for view in done.values():
        execution = view.status.execution
        assert execution is not None
        result = json.loads(execution.result)
        assert result["echo"] == view.spec.goal
        assert (view.name, execution.attempt) in set(finished)
        assert result["agent"] == execution.agent
    for name, attempt in lost:
        view = done[name]
        assert view.status.execution is not None
        assert view.status.execution.agent != "k-b", (name, attempt)
        assert view.status.execution.attempt > attempt
        assert any(h.reason == "AgentLost" for h in view.status.history), view.status.history
