"""The agent protocol with real pools: every attempt runs once, reports land only on their own attempt.

The two-pool race of the kernel issue's acceptance list lives here: two pools in
one namespace, a third whose Lease flaps so that its claims race requeues,
failures within milliseconds and retries within the same second, and a zombie's
late report. Execution records from the pools (per task uid and attempt) and a
sampler reading the API during the whole run are the evidence.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from qorch.testing import Kubectl
from qorch.testing.invariants import check
from support.api import Api
from support.manifests import agents, policy, stream, task
from support.operators import OperatorFleet
from support.pools import CapacitySampler, PoolFleet, claims_per_attempt, peak_running, wait_for

pytestmark = pytest.mark.e2e

FINAL = {"Succeeded", "Failed", "DeadLettered", "Cancelled"}


def test_two_pools_racing_requeues_and_a_zombie_run_every_attempt_once(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Acceptance: each (task uid, attempt) is claimed at most once; no agent ever runs more than its capacity."""
    kubectl.apply(policy())
    kubectl.apply(stream(agents("east", 3, 2), agents("west", 3, 2), agents("flaky", 2, 2)))
    # Failures within milliseconds, retried at once (backoffSeconds 0): retries within the same second.
    pools.start("east", selector="pool=east", work="0.002,0.02", failure_rate=0.4)
    pools.start("west", selector="pool=west", work="0.002,0.02", failure_rate=0.4)
    # A pool whose Lease lapses a second after each renewal, and that waits 1.2 s before claiming: most
    # of its claims arrive after the operator has judged it dead and requeued the attempt.
    flaky = {"work": "0.01,0.05", "lease_seconds": 1, "renew_seconds": 2.5, "claim_delay": 1.2}
    pools.start("flaky", selector="pool=flaky", **flaky)
    operators.start("op")
    retry = {"maxAttempts": 6, "backoffSeconds": 0, "maxBackoffSeconds": 0}
    names = [f"t{i}" for i in range(80)]
    with CapacitySampler(api, kubectl.namespace, period=0.2) as sampler:
        kubectl("create", "-f", "-", stdin=yaml.safe_dump_all([task(n, retry=retry) for n in names]))
        done = wait_for(
            lambda: (p := api.phases(kubectl.namespace)) and all(v in FINAL for v in p.values()) and p,
            240,
            what="every task to end",
        )
    records = pools.records()
    claims = claims_per_attempt(records)
    assert claims, "no attempt ran at all"
    twice = {k: v for k, v in claims.items() if v > 1}
    assert twice == {}, f"attempts claimed more than once: {twice}"
    capacity = 2
    assert all(peak <= capacity for peak in peak_running(records).values()), peak_running(records)
    assert sampler.violations == [], sampler.violations[:5]
    assert sampler.samples > 20
    # Every task ended with a reason; attempts never exceed the budget and match the claims.
    uid_of = {t["metadata"]["name"]: t["metadata"]["uid"] for t in api.tasks(kubectl.namespace)}
    for item in api.tasks(kubectl.namespace):
        status = item["status"]
        claimed = sum(1 for (uid, _), _ in claims.items() if uid == item["metadata"]["uid"])
        assert status["attempts"] == claimed, (item["metadata"]["name"], status["attempts"], claimed)
        assert 1 <= status["attempts"] <= retry["maxAttempts"]
        assert status["conditions"][0]["reason"] in {"Succeeded", "AttemptsExhausted"}
    assert set(done.values()) <= {"Succeeded", "DeadLettered"}
    # Races happened: requeues of unclaimed attempts on the flapping pool, and retries after fast failures.
    history = [h for t in api.tasks(kubectl.namespace) for h in t["status"]["history"]]
    assert any(h["reason"] == "AttemptFailed" for h in history)
    assert any(h["reason"] in ("AgentNotReady", "AgentLost") for h in history), "the flaky pool never raced"
    raced = [r for r in records if r["event"] == "raced"]
    assert raced, "no claim ever raced a requeue"
    assert all(claims.get((r["uid"], r["attempt"]), 0) <= 1 for r in raced)
    del uid_of
    check(api, kubectl.namespace, created=names).assert_ok()


def test_a_zombies_late_report_is_ignored_and_recorded(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Defect 4: a non-protocol write of a finished earlier attempt does not end the current one."""
    kubectl.apply(policy())
    kubectl.apply(stream(agents("slow", 1, 1)))
    pools.start("slow", selector="pool=slow", work="6,6")
    op = operators.start("op")
    kubectl.apply(yaml.safe_dump(task("victim")))
    wait_for(lambda: api.phases(kubectl.namespace).get("victim") == "Running", 60, what="the attempt to run")
    zombie = {
        "status": {
            "execution": {
                "attempt": 7,
                "agent": "ghost",
                "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": "2026-01-01T00:00:01Z",
                "result": "forged",
                "error": "",
            }
        }
    }
    kubectl("patch", "qtask", "victim", "--subresource=status", "--type=merge", "-p", json.dumps(zombie))
    wait_for(lambda: op.metric("qorch_reports_ignored_total") >= 1, 30, what="the report to be ignored")
    status = kubectl.json("get", "qtask", "victim")["status"]
    assert status["phase"] == "Running"
    events = kubectl.json("get", "events", "--field-selector=involvedObject.name=victim")["items"]
    assert any(e["reason"] == "ReportIgnored" and "attempt 7 by ghost" in e["message"] for e in events)
    # The real agent's report is refused by compare-and-set? No: it re-reads, sees its attempt current, and lands.
    wait_for(lambda: api.phases(kubectl.namespace).get("victim") in ("Succeeded", "DeadLettered"), 60, what="the end")
    final = kubectl.json("get", "qtask", "victim")["status"]
    assert final["phase"] == "Succeeded"
    assert final["execution"]["agent"] == "slow-0"
    assert final["execution"]["result"] != "forged"


def test_a_recreated_task_never_receives_the_old_incarnations_report(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Defect 4: a Task deleted and recreated mid-attempt: the old attempt's finish never lands on the new one."""
    kubectl.apply(policy())
    kubectl.apply(stream(agents("solo", 1, 2)))
    pools.start("solo", selector="pool=solo", work="4,4")
    operators.start("op")
    kubectl.apply(yaml.safe_dump(task("phoenix")))
    wait_for(lambda: api.phases(kubectl.namespace).get("phoenix") == "Running", 60, what="the first incarnation")
    old_uid = kubectl.json("get", "qtask", "phoenix")["metadata"]["uid"]
    kubectl("delete", "qtask", "phoenix")
    kubectl.apply(yaml.safe_dump(task("phoenix")))
    wait_for(lambda: api.phases(kubectl.namespace).get("phoenix") == "Succeeded", 60, what="the new incarnation")
    new = kubectl.json("get", "qtask", "phoenix")
    assert new["metadata"]["uid"] != old_uid
    assert [(h["reason"], h["attempt"]) for h in new["status"]["history"]] == [
        ("Scheduled", 1),
        ("Started", 1),
        ("Succeeded", 1),
    ]
    time.sleep(1)
    old_events = [r for r in pools.records() if r["uid"] == old_uid]
    assert [r["event"] for r in old_events] == ["claim", "abandon"]  # the pool found its attempt gone
    check(api, kubectl.namespace, created=["phoenix"]).assert_ok()


def test_attempts_that_fail_within_milliseconds_are_counted_and_end(
    kubectl: Kubectl, operators: OperatorFleet, pools: PoolFleet, api: Api
) -> None:
    """Defect 5: every attempt fails at once; attempts reach maxAttempts and the task is dead-lettered.

    The breakers are set out of the way (threshold 100): this is about counting attempts, and 30
    failures in a row would otherwise open both agents' breakers for their cool-down.
    """
    kubectl.apply(policy(breaker={"failureThreshold": 100, "cooldownSeconds": 1}))
    kubectl.apply(stream(agents("broken", 2, 4)))
    pools.start("broken", selector="pool=broken", work="0,0.001", failure_rate=1.0)
    operators.start("op")
    retry = {"maxAttempts": 3, "backoffSeconds": 0, "maxBackoffSeconds": 0}
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all([task(f"f{i}", retry=retry) for i in range(10)]))
    wait_for(lambda: set(api.phases(kubectl.namespace).values()) == {"DeadLettered"}, 120, what="all to fail")
    claims = claims_per_attempt(pools.records())
    for item in api.tasks(kubectl.namespace):
        assert item["status"]["attempts"] == 3, item["metadata"]["name"]
        assert sum(1 for (uid, _) in claims if uid == item["metadata"]["uid"]) == 3
        assert item["status"]["conditions"][0]["reason"] == "AttemptsExhausted"
