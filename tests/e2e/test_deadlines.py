"""Deadlines and timeouts as a user sees them through kubectl (issue 13, item 6).

Real operator, real agent runtime, and one wedged agent: an Agent whose Lease is
held but whose runtime never claims (a process stuck after renewing). Every test
also checks that no task ran twice and that every task ended or waits with a reason.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable

import pytest
import yaml

from qorch.testing import Kubectl
from support.api import Api
from support.manifests import agent, lease, policy, stream, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e


def in_seconds(seconds: float) -> str:
    """An RFC 3339 instant `seconds` from now."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(body: dict) -> dict[str, dict]:
    """A Task body's conditions by type."""
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}


def test_deadlines_and_timeouts_end_what_they_should(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api
) -> None:
    """Each deadline and timeout ends what it should, and nothing else.

    A missed deadline is marked and the task goes on; failOnDeadline fails it and cancels
    the handler; timeoutSeconds ends a long attempt; an unclaimed assignment is taken back
    without spending an attempt.
    """
    ns = kubectl.namespace
    assert ns is not None
    kubectl.apply(policy(claimTimeoutSeconds=3))
    kubectl.apply(stream(agent("wedged", capabilities=("wedged",)), lease("wedged")))
    op = operators.start("op")
    worker = runtimes("worker", "--capabilities=code", "--capacity=4")
    bodies = [
        task("late", input={"sleep": "8"}, deadline=in_seconds(4)),
        task("strict", input={"sleep": "60"}, deadline=in_seconds(4), failOnDeadline=True),
        task("slow", input={"sleep": "60"}, timeoutSeconds=2, retry={"maxAttempts": 1}),
        task("on-time", deadline=in_seconds(3600)),
        task("unclaimed", requires=("wedged",)),
    ]
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(bodies))

    def tasks() -> dict[str, dict]:
        return {t["metadata"]["name"]: t for t in api.tasks(ns)}

    def phase(name: str) -> str:
        return (tasks()[name].get("status") or {}).get("phase", "")

    def ended() -> bool:
        now = tasks()
        return {n: (now[n].get("status") or {}).get("phase") for n in ("late", "strict", "slow", "on-time")} == {
            "late": "Succeeded",
            "strict": "Failed",
            "slow": "DeadLettered",
            "on-time": "Succeeded",
        }

    wait_for(ended, 60, what="the four tasks to end")
    now = tasks()
    late = conditions(now["late"])
    assert late["DeadlineMissed"]["status"] == "True"
    assert late["Scheduled"]["reason"] == "Succeeded"
    assert "DeadlineMissed" not in conditions(now["on-time"])
    strict = conditions(now["strict"])
    assert strict["Scheduled"]["reason"] == "DeadlineExceeded"
    assert "failOnDeadline is true; attempt 1 on worker was stopped" in strict["Scheduled"]["message"]
    assert "DeadlineMissed" in strict
    assert now["slow"]["status"]["execution"]["error"] == "TimeoutError: the handler ran longer than timeoutSeconds=2"
    # The runtime stopped both handlers: one withdrawn at the deadline, one at its timeout.
    assert sorted(c["task"] for c in worker.handled("cancelled")) == ["slow", "strict"]

    # The wedged agent never claims: its assignment is taken back again and again, spending nothing.
    def claim_timeouts() -> int:
        history = (tasks()["unclaimed"].get("status") or {}).get("history") or []
        return sum(1 for h in history if h["reason"] == "ClaimTimedOut")

    wait_for(lambda: claim_timeouts() >= 2, 30, what="two claim timeouts")
    unclaimed = tasks()["unclaimed"]["status"]
    assert unclaimed.get("attempts", 0) == 0
    assert phase("unclaimed") in ("Queued", "Assigned")

    events = kubectl.json("get", "events", "--field-selector=involvedObject.name=late")["items"]
    assert any(e["reason"] == "DeadlineMissed" and e["type"] == "Warning" for e in events), events
    wait_for(lambda: op.metric('qorch_deadline_misses_total{outcome="continued"}') == 1, 10, what="the miss counted")
    assert op.metric('qorch_deadline_misses_total{outcome="failed"}') == 1
    assert op.metric('qorch_task_transitions_total{phase="Queued",reason="ClaimTimedOut"}') >= 2
    runs = Counter(c["task"] for c in worker.handled())
    assert runs == {"late": 1, "strict": 1, "slow": 1, "on-time": 1}, runs  # none twice
