"""Workflow semantics as a user sees them through kubectl (issue 13): retries, history, breakers, dead letters, DAGs.

Real operator, real agent runtime. Every test also checks that no task was run
twice and that every task ended, or waits with a stated reason.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from qorch.testing import Kubectl
from qorch.testing.invariants import CapacitySampler, check
from support.api import Api
from support.manifests import policy, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

QORCH = Path(sys.executable).parent / "qorch"


def scheduled(body: dict) -> tuple[str, str, str]:
    """(phase, Scheduled reason, message) of a Task body."""
    status = body.get("status") or {}
    condition = next((c for c in status.get("conditions") or () if c["type"] == "Scheduled"), {})
    return status.get("phase", ""), condition.get("reason", ""), condition.get("message", "")


def test_a_failure_runs_down_the_chain_cycles_are_named_and_missing_tasks_awaited(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api
) -> None:
    """root dead-letters, so mid and leaf fail (DependencyFailed); a cycle is named; a missing task is awaited."""
    ns = kubectl.namespace
    kubectl.apply(policy())
    op = operators.start("op")
    agent = runtimes("worker", "--capabilities=code", "--capacity=4")
    bodies = [
        task("root", input={"fail": "yes"}, retry={"maxAttempts": 1}),
        task("mid", dependsOn=["root"]),
        task("leaf", dependsOn=["mid"]),
        task("side", dependsOn=["root", "later"]),  # one missing, one failing: fails, does not wait
        task("loop-1", dependsOn=["loop-2"]),
        task("loop-2", dependsOn=["loop-1"]),
        task("waits", dependsOn=["later"]),
    ]
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(bodies))

    def states() -> dict[str, tuple[str, str, str]]:
        return {t["metadata"]["name"]: scheduled(t) for t in api.tasks(ns)}

    def chain_ended() -> bool:
        now = states()
        return now["root"][0] == "DeadLettered" and all(now[n][0] == "Failed" for n in ("mid", "leaf", "side"))

    wait_for(chain_ended, 60, what="the failure to run down the chain")

    def children(name: str) -> tuple[list[str], int]:
        status = next(t for t in api.tasks(ns) if t["metadata"]["name"] == name).get("status") or {}
        return status.get("dependents", []), status.get("dependentsTotal", 0)

    # The status names each task's children (its parents are spec.dependsOn).
    try:
        wait_for(lambda: children("root") == (["mid", "side"], 2) and children("mid") == (["leaf"], 1), 30,
                 what="the dependents to be written")  # fmt: skip
    except AssertionError:
        print("dependents as written:", {n: children(n) for n in ("root", "mid", "later")})  # noqa: T201
        raise
    wait_for(lambda: states()["loop-1"][1] == "DependencyCycle" and states()["loop-2"][1] == "DependencyCycle", 30,
             what="the cycle to be named")  # fmt: skip
    now = states()
    assert now["mid"][1:] == ("DependencyFailed", "dependency root ended DeadLettered, so this task cannot run")
    assert now["leaf"][1:] == ("DependencyFailed", "dependency mid ended Failed, so this task cannot run")
    assert now["side"][:2] == ("Failed", "DependencyFailed")
    assert now["loop-1"][0] == "Blocked"
    assert "dependsOn forms a cycle: loop-1 -> loop-2 -> loop-1" in now["loop-1"][2]
    assert "loop-2 -> loop-1 -> loop-2" in now["loop-2"][2]
    assert now["waits"][:2] == ("Blocked", "DependencyPending")
    assert "waiting for task later to exist" in now["waits"][2]

    # The missing task arrives and succeeds: the one waiting on it runs.
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(task("later")))
    wait_for(lambda: states()["waits"][0] == "Succeeded", 60, what="waits to run")
    # Breaking the cycle (dependsOn may be edited) lets both run.
    kubectl("patch", "qtask", "loop-2", "--type=merge", "-p", '{"spec": {"dependsOn": []}}')
    wait_for(lambda: states()["loop-1"][0] == "Succeeded" and states()["loop-2"][0] == "Succeeded", 60,
             what="the broken cycle to run")  # fmt: skip

    events = kubectl.json("get", "events", "--field-selector=involvedObject.name=leaf")["items"]
    assert any(e["reason"] == "DependencyFailed" and e["type"] == "Warning" for e in events), events
    assert op.metric('qorch_task_transitions_total{phase="Failed",reason="DependencyFailed"}') == 3
    runs = Counter(c["task"] for c in agent.handled())
    assert runs == {"root": 1, "later": 1, "waits": 1, "loop-1": 1, "loop-2": 1}, (
        runs
    )  # none twice, no dependent of a failure
    assert {s[0] for s in states().values()} <= {"Succeeded", "Failed", "DeadLettered"}


def test_exhausted_attempts_dead_letter_and_a_redrive_gives_a_fresh_budget(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api
) -> None:
    """Two failed attempts of two: DeadLettered with the last error, in kubectl and `qorch dlq list`.

    `qorch dlq redrive` queues it with a fresh budget (history says so); it dead-letters again after two more.
    """
    ns = kubectl.namespace
    kubectl.apply(policy())
    op = operators.start("op")
    agent = runtimes("worker", "--capabilities=code", "--capacity=2")
    kubectl(
        "create",
        "-f",
        "-",
        stdin=yaml.safe_dump(task("flaky", input={"fail": "yes"}, retry={"maxAttempts": 2, "backoffSeconds": 0})),
    )
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(task("fine")))

    def phase_of(name: str) -> str:
        return scheduled(next(t for t in api.tasks(ns) if t["metadata"]["name"] == name))[0]

    wait_for(lambda: phase_of("flaky") == "DeadLettered", 60, what="the task to be dead-lettered")
    selected = kubectl.json("get", "qtask", "--field-selector=status.phase=DeadLettered")["items"]
    assert [t["metadata"]["name"] for t in selected] == ["flaky"]
    status = selected[0]["status"]
    assert status["attempts"] == 2
    assert scheduled(selected[0])[1] == "AttemptsExhausted"
    assert status["execution"]["error"].startswith("ValueError: asked to fail")

    config = f"--kubeconfig={kubectl.kubeconfig}"
    listed = subprocess.run([str(QORCH), "dlq", "list", f"--namespace={ns}", config],
                            capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["NAME", "ATTEMPTS", "REDRIVES", "LAST-ERROR"]
    assert listed.stdout.splitlines()[1].split()[:3] == ["flaky", "2", "0"]
    refused = subprocess.run([str(QORCH), "dlq", "redrive", "fine", f"--namespace={ns}", config],
                             capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert refused.returncode == 1
    assert "task 'fine' is" in refused.stderr
    assert "only dead letters can be redriven" in refused.stderr

    redriven = subprocess.run([str(QORCH), "dlq", "redrive", "flaky", f"--namespace={ns}", config],
                              capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert (redriven.returncode, redriven.stdout.strip()) == (0, "task.qorch.io/flaky redrive 1 requested")

    def flaky() -> dict:
        return next(x for x in api.tasks(ns) if x["metadata"]["name"] == "flaky")

    wait_for(lambda: flaky()["status"]["attempts"] == 4 and scheduled(flaky())[0] == "DeadLettered", 60,
             what="two more attempts and the DLQ again")  # fmt: skip
    body = flaky()
    reasons = [h["reason"] for h in body["status"]["history"]]
    assert "Redriven" in reasons
    assert reasons[-1] == "AttemptsExhausted"
    assert body["status"]["redrives"] == 1
    assert body["status"]["attemptsBeforeRedrive"] == 2
    undo = kubectl.run("patch", "qtask", "flaky", "--type=merge", "-p", '{"spec": {"redrive": 0}}', check=False)
    assert undo.returncode != 0
    assert "redrive only counts up" in undo.stderr
    calls = Counter((c["task"], c["attempt"]) for c in agent.handled())
    assert sorted(a for t, a in calls if t == "flaky") == [1, 2, 3, 4]  # four attempts, each once
    check(api, ns, created=["flaky", "fine"], completions=agent.handled("finished")).assert_ok()
    assert max(calls.values()) == 1
    assert op.metric('qorch_task_transitions_total{phase="DeadLettered",reason="AttemptsExhausted"}') == 2
    assert op.metric('qorch_task_transitions_total{phase="Queued",reason="Redriven"}') == 1


def test_a_failing_agent_trips_its_breaker_and_a_probe_closes_it(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api
) -> None:
    """Two failures in a row open shaky's breaker: no new work, an Event, the metric, kubectl shows it.

    The retries succeed on steady; after the cool-down one probe runs on shaky, succeeds, and closes it.
    """
    ns = kubectl.namespace
    kubectl.apply(policy(breaker={"failureThreshold": 2, "cooldownSeconds": 4},
                         defaultRetry={"maxAttempts": 5, "backoffSeconds": 0}))  # fmt: skip
    op = operators.start("op")
    shaky = runtimes("shaky", "--capabilities=code", "--capacity=1", "--label=pool=shaky")
    bad = [task(f"bad-{i}", input={"fail_on": "shaky"}) for i in range(2)]
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(bad))

    def breaker_of(name: str) -> str:
        found = {a["metadata"]["name"]: a for a in api.agents(ns)}.get(name) or {}  # the runtime creates it
        return ((found.get("status") or {}).get("breaker") or {}).get("state", "")

    wait_for(lambda: breaker_of("shaky") == "Open", 60, what=f"shaky's breaker to open:\n{shaky.tail()}")
    assert kubectl("get", "qagent", "shaky").split("\n")[1].split()[4] == "Open"  # the BREAKER column
    steady = runtimes("steady", "--capabilities=code", "--capacity=2")
    wait_for(lambda: all(api.phases(ns).get(t["metadata"]["name"]) == "Succeeded" for t in bad), 60,
             what="the retries to succeed on steady")  # fmt: skip
    assert {c["agent"] for c in steady.handled()} == {"steady"}
    failed_on_shaky = [c for c in shaky.handled() if c["task"].startswith("bad-")]
    # Two failures open it (a third may have been placed in the instant before the second's end was
    # written); after that no new work while open: every later retry went to steady.
    assert 2 <= len(failed_on_shaky) <= 3, failed_on_shaky

    # After the cool-down: one probe, pinned to shaky, succeeds and closes the breaker.
    wait_for(lambda: breaker_of("shaky") == "HalfOpen", 30, what="the cool-down to end")
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(task("probe", agentSelector={"matchLabels": {"pool": "shaky"}})))
    wait_for(lambda: breaker_of("shaky") == "Closed", 60, what="the probe to close the breaker")
    assert api.phases(ns)["probe"] == "Succeeded"
    reasons = [
        e["reason"] for e in kubectl.json("get", "events", "--field-selector=involvedObject.name=shaky")["items"]
    ]
    assert "BreakerOpen" in reasons
    assert "BreakerClosed" in reasons
    assert op.metric('qorch_breaker_transitions_total{state="Open"}') == 1
    assert op.metric('qorch_breaker_transitions_total{state="Closed"}') == 1
    runs = Counter((c["task"], c["attempt"]) for r in (shaky, steady) for c in r.handled())
    assert max(runs.values()) == 1  # no attempt ran twice


def test_a_failed_attempt_is_retried_on_another_agent_and_the_history_shows_both(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api
) -> None:
    """Items 1 and 2: two agents in no failure domain; every task's attempt 1 fails wherever it runs.

    Each retry runs on the other agent (it had room), and each task's history shows both
    attempts with agent, start, finish and outcome, as does `qorch describe`. No task was
    lost or run twice.
    """
    ns = kubectl.namespace
    kubectl.apply(policy(breaker={"failureThreshold": 50, "cooldownSeconds": 1}))  # breakers out of the way
    op = operators.start("op")
    workers = {name: runtimes(name, "--capabilities=code", "--capacity=6") for name in ("left", "right")}

    def ready() -> bool:
        phases = {a["metadata"]["name"]: (a.get("status") or {}).get("phase") for a in api.agents(ns)}
        return phases == {"left": "Ready", "right": "Ready"}

    wait_for(ready, 60, what="both agents to be Ready")  # else a retry would rightly fall back to its agent
    names = [f"hop-{i}" for i in range(6)]
    retry = {"maxAttempts": 3, "backoffSeconds": 1, "maxBackoffSeconds": 1}
    stream = yaml.safe_dump_all([task(n, input={"fail_attempt": "1"}, retry=retry) for n in names])
    with CapacitySampler(api, ns) as sampler:
        kubectl("create", "-f", "-", stdin=stream)
        wait_for(lambda: all(api.phases(ns).get(n) == "Succeeded" for n in names), 90, what="every retry to succeed")
    sampler.assert_ok()
    assert sampler.samples > 1
    finished = [c for worker in workers.values() for c in worker.handled("finished")]
    check(api, ns, created=names, completions=finished).assert_ok()

    calls = [c for worker in workers.values() for c in worker.handled()]
    runs = Counter((c["task"], c["attempt"]) for c in calls)
    assert runs == {(n, a): 1 for n in names for a in (1, 2)}, runs  # none lost, none twice, no third attempt
    ran_on = {(c["task"], c["attempt"]): c["agent"] for c in calls}
    for body in api.tasks(ns):
        name, status = body["metadata"]["name"], body["status"]
        ended = [h for h in status["history"] if h.get("outcome")]
        assert [(h["attempt"], h["outcome"], h["reason"]) for h in ended] == [
            (1, "Failed", "AttemptFailed"),
            (2, "Succeeded", "Succeeded"),
        ], status["history"]
        first, second = ended
        assert first["agent"] != second["agent"], status["history"]  # the retry avoided the agent that failed it
        assert [first["agent"], second["agent"]] == [ran_on[(name, 1)], ran_on[(name, 2)]]
        for entry in ended:
            assert entry["startedAt"] <= entry["finishedAt"] <= entry["time"], entry
        assert first["finishedAt"] <= second["startedAt"]
        assert status["attempts"] == 2
        assert status["historyTotal"] == len(status["history"]) <= 20

    config = f"--kubeconfig={kubectl.kubeconfig}"
    described = subprocess.run([str(QORCH), "describe", "hop-0", f"--namespace={ns}", config],
                               capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert described.returncode == 0, described.stderr
    one = next(t for t in api.tasks(ns) if t["metadata"]["name"] == "hop-0")["status"]["history"]
    agents = [h["agent"] for h in one if h.get("outcome")]
    assert f"attempt 1 on {agents[0]}: Failed (ran " in described.stdout, described.stdout
    assert f"attempt 2 on {agents[1]}: Succeeded (ran " in described.stdout, described.stdout
    assert op.metric('qorch_task_transitions_total{phase="Retrying",reason="AttemptFailed"}') == len(names)
    assert op.metric('qorch_task_transitions_total{phase="Succeeded",reason="Succeeded"}') == len(names)
