"""Agent liveness: a stale Lease makes an agent NotReady, and its unstarted tasks move elsewhere."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
import yaml

from qorch.testing import Kubectl
from support.operators import OperatorFleet

pytestmark = pytest.mark.e2e


def lease(agent: str) -> str:
    """A freshly renewed liveness Lease for `agent`."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return yaml.safe_dump(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": f"qorch-agent-{agent}"},
            "spec": {"holderIdentity": agent, "leaseDurationSeconds": 3, "renewTime": now},
        }
    )


SHORT_GRACE_POLICY = yaml.safe_dump(
    {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "SchedulingPolicy",
        "metadata": {"name": "default"},
        "spec": {"agentGraceSeconds": 3},
    }
)


@contextlib.contextmanager
def heartbeats(kubectl: Kubectl, alive: set[str]) -> Iterator[None]:
    """Renew the Leases of the agents in `alive` every 0.5 s; the test may change the set meanwhile."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.is_set():
            for name in sorted(alive):  # a copy: the test thread edits `alive`
                kubectl.run("apply", "-f", "-", stdin=lease(name), check=False)
            stop.wait(0.5)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=10)


def test_tasks_of_an_agent_that_stops_renewing_move_to_a_live_one(kubectl: Kubectl, operators: OperatorFleet) -> None:
    """cheap takes all six tasks; when its Lease goes stale they are requeued onto spare."""
    kubectl.apply(SHORT_GRACE_POLICY)
    agents = [
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "cheap"},
            "spec": {"capabilities": ["code"], "capacity": 6, "provider": {"name": "local", "costPerTask": 0}},
        },
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "spare"},
            "spec": {"capabilities": ["code"], "capacity": 6, "provider": {"name": "cloud", "costPerTask": 9}},
        },
    ]
    kubectl.apply(yaml.safe_dump_all(agents))
    alive = {"cheap", "spare"}
    with heartbeats(kubectl, alive):
        operators.start("op-l")
        kubectl.apply(
            yaml.safe_dump_all(
                [
                    {
                        "apiVersion": "qorch.io/v1alpha1",
                        "kind": "Task",
                        "metadata": {"name": f"job-{i}"},
                        "spec": {"goal": f"job {i}", "requires": ["code"]},
                    }
                    for i in range(6)
                ]
            )
        )

        def placement() -> dict[str, str]:
            return {
                t["metadata"]["name"]: ((t.get("status") or {}).get("assignment") or {}).get("agent", "")
                for t in kubectl.json("get", "qtask")["items"]
            }

        deadline = time.monotonic() + 60
        while set(placement().values()) != {"cheap"} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert set(placement().values()) == {"cheap"}

        alive.discard("cheap")  # cheap stops renewing its Lease
        deadline = time.monotonic() + 60
        while set(placement().values()) != {"spare"} and time.monotonic() < deadline:
            time.sleep(0.5)
    assert set(placement().values()) == {"spare"}
    cheap = kubectl.json("get", "qagent", "cheap")["status"]
    assert cheap["phase"] == "NotReady"
    assert cheap["activeTasks"] == 0
    assert kubectl.json("get", "qagent", "spare")["status"]["activeTasks"] == 6


@pytest.mark.parametrize(("max_attempts", "final_phase"), [(1, "Failed"), (3, "Queued")], ids=["last", "retry"])
def test_a_running_task_of_a_lost_agent_counts_as_a_failed_attempt(
    kubectl: Kubectl, operators: OperatorFleet, max_attempts: int, final_phase: str
) -> None:
    """The attempt in progress is lost: attempts goes up, then Failed (none left) or Queued (retry)."""
    kubectl.apply(SHORT_GRACE_POLICY)
    kubectl.apply(
        yaml.safe_dump(
            {
                "apiVersion": "qorch.io/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "solo"},
                "spec": {"capabilities": ["code"]},
            }
        )
    )
    with heartbeats(kubectl, {"solo"}):
        operators.start("op-run")
        kubectl.apply(
            yaml.safe_dump(
                {
                    "apiVersion": "qorch.io/v1alpha1",
                    "kind": "Task",
                    "metadata": {"name": "long"},
                    "spec": {"goal": "long job", "requires": ["code"], "retry": {"maxAttempts": max_attempts}},
                }
            )
        )
        deadline = time.monotonic() + 60
        status: dict = {}
        while time.monotonic() < deadline:
            status = kubectl.json("get", "qtask", "long").get("status") or {}
            if status.get("phase") == "Assigned":
                break
            time.sleep(0.5)
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        kubectl(
            "patch",
            "qtask",
            "long",
            "--subresource=status",
            "--type=merge",  # what the runtime reports
            "-p",
            '{"status":{"execution":{"startedAt":"' + started + '"}}}',
        )
        while time.monotonic() < deadline and status.get("phase") != "Running":
            status = kubectl.json("get", "qtask", "long")["status"]
            time.sleep(0.5)
        assert status["phase"] == "Running"
        assert status["attempts"] == 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and status.get("phase") == "Running":
        status = kubectl.json("get", "qtask", "long")["status"]
        time.sleep(0.5)
    scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
    # A retry may already carry the next cycle's reason: its only agent is gone.
    assert scheduled["reason"] in ({"AgentLost"} if final_phase == "Failed" else {"AgentLost", "NoReadyAgent"})
    assert status["phase"] == final_phase
    assert status["attempts"] == 1
    assert "assignment" not in status
