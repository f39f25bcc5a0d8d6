"""Clearance changes as an operator of the fleet makes them, with kubectl (issue 14, item 2).

Real operator, real agent runtime. Lowering an agent's clearance below a running task's
classification takes the task back (the runtime cancels its handler) without failing the
attempt; raising it again lets the task run there at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import yaml

from qorch.testing import Kubectl
from support.api import Api
from support.manifests import agent, policy, stream, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e


def test_lowering_clearance_takes_secret_work_back_and_raising_it_gives_it_again(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api
) -> None:
    """Running secret task; clearance lowered: Queued (ClearanceTooLow), handler cancelled; raised: it runs."""
    ns = kubectl.namespace
    assert ns is not None
    kubectl.apply(policy())
    kubectl.apply(stream(agent("vault", capacity=2, clearance="secret")))
    operators.start("op")
    worker = runtimes("vault", "--capabilities=code", "--capacity=2")
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(task("plans", classification="secret", input={"sleep": "6"})))

    def status() -> dict:
        return next(t for t in api.tasks(ns) if t["metadata"]["name"] == "plans").get("status") or {}

    wait_for(lambda: status().get("phase") == "Running" or bool(worker.handled()), 30, what="the task to run")
    kubectl("patch", "qagent", "vault", "--type=merge", "-p", '{"spec": {"clearance": "internal"}}')
    wait_for(lambda: any(h["reason"] == "ClearanceTooLow" for h in status().get("history", [])), 20,
             what="the task to be taken back")  # fmt: skip
    taken = next(h for h in status()["history"] if h["reason"] == "ClearanceTooLow")
    assert taken["outcome"] == "Withdrawn"
    wait_for(lambda: [c["task"] for c in worker.handled("cancelled")] == ["plans"], 20, what="the handler cancelled")
    assert status().get("phase") == "Queued"
    kubectl("patch", "qagent", "vault", "--type=merge", "-p", '{"spec": {"clearance": "secret"}}')
    wait_for(lambda: status().get("phase") == "Succeeded", 40, what="the task to run again and succeed")
    breaker = (kubectl.json("get", "qagent", "vault").get("status") or {}).get("breaker") or {}
    assert breaker.get("consecutiveFailures", 0) == 0  # the withdrawn attempt was no failure of the agent
    assert Counter(c["task"] for c in worker.handled("finished")) == {"plans": 1}
