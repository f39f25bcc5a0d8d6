"""Cancellation as a user does it: `qorch cancel` (CLI) and `Client.cancel` (SDK), real operator and runtime.

A running handler is cancelled and its slot serves the next task at once; a
queued task never runs; the cancel cannot be undone; every cancel shows up as
phase, condition reason, Event and metric; no task runs twice.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qorch.client import Client
from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from support.api import Api
from support.manifests import policy, stream, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

QORCH = Path(sys.executable).parent / "qorch"


def test_cancel_stops_running_and_queued_tasks_and_frees_the_slot(
    kubectl: Kubectl,
    operators: OperatorFleet,
    runtimes: Callable[..., Runtime],
    qorch_control_plane: ControlPlane,
    api: Api,
) -> None:
    """CLI cancel of a running task and SDK cancel of a queued one; the freed slot runs the next task."""
    ns = kubectl.namespace
    kubeconfig = str(qorch_control_plane.admin_kubeconfig)
    kubectl.apply(policy())
    op = operators.start("op")
    agent = runtimes("solo", "--capabilities=code", "--capacity=1")
    kubectl("create", "-f", "-", stdin=stream(task("long", input={"sleep": "120"})))

    def phase(name: str) -> str | None:
        found = {t["metadata"]["name"]: t for t in api.tasks(ns)}.get(name)
        return ((found or {}).get("status") or {}).get("phase")

    wait_for(lambda: phase("long") == "Running", 60, what=f"the long task to run; runtime:\n{agent.tail()}")
    # The one slot is taken: the next task waits for it.
    kubectl("create", "-f", "-", stdin=stream(task("next")))
    kubectl("create", "-f", "-", stdin=stream(task("nobody-can", requires=("quantum-physics",))))
    wait_for(lambda: phase("nobody-can") == "Queued", 30, what="the hopeless task to queue")
    assert phase("next") in {None, "Pending", "Queued"}

    started = time.monotonic()
    out = subprocess.run(
        [str(QORCH), "cancel", "long", f"--namespace={ns}", f"--kubeconfig={kubeconfig}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert (out.returncode, out.stdout.strip()) == (0, "task.qorch.io/long cancel requested"), out.stderr
    # managedFields name the user's tool as the writer of spec.cancel, not the operator (GitOps reads them).
    managers = kubectl.json("get", "qtask", "long", "--show-managed-fields")["metadata"]["managedFields"]
    cancelled_by = [m["manager"] for m in managers if "f:cancel" in (m.get("fieldsV1") or {}).get("f:spec", {})]
    assert cancelled_by == ["qorch-client"], managers

    async def sdk_cancel() -> str:
        async with await Client.connect(kubeconfig, ns) as client:
            view = await client.cancel("nobody-can")
            return view.name

    assert asyncio.run(sdk_cancel()) == "nobody-can"
    wait_for(lambda: phase("long") == "Cancelled" and phase("nobody-can") == "Cancelled", 30,
             what="both cancels to be written")  # fmt: skip
    # The slot came back at once: the next task ran long before the cancelled handler's 120 s.
    wait_for(lambda: phase("next") == "Succeeded", 30, what=f"the next task to run; runtime:\n{agent.tail()}")
    assert time.monotonic() - started < 60

    tasks = {t["metadata"]["name"]: t for t in api.tasks(ns)}
    long = tasks["long"]["status"]
    condition = next(c for c in long["conditions"] if c["type"] == "Scheduled")
    assert condition["reason"] == "Cancelled"
    assert "attempt 1 on solo was stopped" in condition["message"]
    assert "assignment" not in long
    assert long["history"][-1]["reason"] == "Cancelled"
    queued = tasks["nobody-can"]["status"]
    assert next(c for c in queued["conditions"] if c["type"] == "Scheduled")["message"].endswith("it will not run")
    assert "execution" not in queued

    # The handler itself saw the cancellation (it was not left running to its end).
    assert [c["task"] for c in agent.handled("cancelled")] == ["long"], agent.tail()
    assert "cancelled long attempt 1" in agent.tail()
    # Each task ran once: the handler log has one call per task that ran, none for the cancelled queued one.
    calls = [c["task"] for c in agent.handled()]
    assert sorted(calls) == ["long", "next"], calls
    agent_status = kubectl.json("get", "qagent", "solo")["status"]
    assert agent_status.get("activeTasks", 0) == 0

    check_edges(kubectl, lambda *args: subprocess.run(
        [str(QORCH), *args, f"--namespace={ns}", f"--kubeconfig={kubeconfig}"],
        capture_output=True, text=True, check=False, timeout=60,
    ))  # fmt: skip
    assert phase("next") == "Succeeded"
    events = kubectl.json("get", "events", "--field-selector=involvedObject.name=long")["items"]
    assert any(e["reason"] == "Cancelled" for e in events), [e["reason"] for e in events]
    assert op.metric('qorch_task_transitions_total{phase="Cancelled",reason="Cancelled"}') == 2


def check_edges(kubectl: Kubectl, qorch: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Undo refused at the edge; a cancel of an ended task harmless; a missing one a one-line error."""
    undo = kubectl.run("patch", "qtask", "long", "--type=merge", "-p", json.dumps({"spec": {"cancel": False}}),
                       check=False)  # fmt: skip
    assert undo.returncode != 0
    assert "spec.cancel" in undo.stderr, undo.stderr
    assert "create a new task" in undo.stderr, undo.stderr
    again = qorch("cancel", "next")
    assert again.returncode == 0, again.stderr
    assert "had ended already: Succeeded" in again.stdout
    missing = qorch("cancel", "ghost")
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "ghost" in missing.stderr
