"""The agent runtime as a user runs it: `qorch agent run module:handlers`, real operator, real handlers.

The handlers below append one line per call to a log, so a test can show each
attempt ran once; their return values and exceptions must reach the Task's
status exactly as the handler made them.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
import yaml

from qorch.testing import Kubectl
from support.api import Api
from support.manifests import policy, task
from support.operators import OperatorFleet
from support.pools import wait_for

pytestmark = pytest.mark.e2e


def test_handlers_run_each_attempt_once_and_their_results_land(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Any, api: Api
) -> None:
    """The runtime creates its Agent, runs async and sync handlers, and reports results and one-line errors."""
    kubectl.apply(policy())
    operators.start("op")
    agent = runtimes("rt-1", "--capabilities=code,sync,bad-result", "--capacity=2")
    names = [f"job-{i}" for i in range(8)]
    bodies = [task(n, input={"num": str(i)}) for i, n in enumerate(names)]
    bodies.append(task("blocking", requires=("sync",)))
    bodies.append(task("broken", input={"fail": "yes"}, retry={"maxAttempts": 1}))
    bodies.append(task("unserialisable", requires=("bad-result",), retry={"maxAttempts": 1}))
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(bodies))
    wait_for(
        lambda: (
            (p := api.phases(kubectl.namespace))
            and len(p) == 11
            and all(v in {"Succeeded", "DeadLettered"} for v in p.values())
        ),
        120,
        what=f"every task to end; runtime log:\n{agent.tail()}",
    )
    created = {a["metadata"]["name"]: a for a in api.agents(kubectl.namespace)}
    assert created["rt-1"]["spec"]["capabilities"] == ["code", "sync", "bad-result"]
    assert created["rt-1"]["spec"]["capacity"] == 2
    tasks = {t["metadata"]["name"]: t for t in api.tasks(kubectl.namespace)}
    for i, name in enumerate(names):
        status = tasks[name]["status"]
        assert status["phase"] == "Succeeded", status
        expected = {"echo": name, "agent": "rt-1", "num": str(i)}
        assert json.loads(status["execution"]["result"]) == expected, agent.handled()
    assert tasks["blocking"]["status"]["execution"]["result"] == "done in a thread"
    broken = tasks["broken"]["status"]
    assert broken["phase"] == "DeadLettered"
    assert broken["execution"]["error"] == "ValueError: asked to fail over two lines"
    # A result JSON cannot hold fails its attempt and frees the slot (the run above needed it).
    assert tasks["unserialisable"]["status"]["phase"] == "DeadLettered"
    assert tasks["unserialisable"]["status"]["execution"]["error"].startswith("TypeError: keys must be")
    calls = agent.handled()
    per_attempt = {(c["task"], c["attempt"]) for c in calls}
    assert len(per_attempt) == len(calls) == 11, calls


def test_sigterm_drains_hands_back_what_runs_and_releases_the_lease(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Any, api: Api
) -> None:
    """A handler still running after the grace is reported failed (and retried elsewhere); the Lease is let go."""
    kubectl.apply(policy())
    operators.start("op")
    first = runtimes("rt-a", "--capabilities=code", "--capacity=1", "--grace-seconds=1")
    kubectl(
        "create",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            task("long", input={"sleep": "60"}, retry={"maxAttempts": 3, "backoffSeconds": 0, "maxBackoffSeconds": 0})
        ),
    )
    wait_for(lambda: api.phases(kubectl.namespace).get("long") == "Running", 60, what="the long task to run")
    started = time.monotonic()
    assert first.stop() == 0, first.tail()
    assert time.monotonic() - started < 15
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{kubectl.namespace}/leases/qorch-agent-rt-a")
    assert not lease["spec"].get("holderIdentity"), lease
    history = api.tasks(kubectl.namespace)[0]["status"]["history"]
    assert any("shut down before the attempt finished" in (h.get("message") or "") for h in history), history
    # The retry goes to another runtime, which claims it (it would run the same 60 s, so the test stops there).
    runtimes("rt-b", "--capabilities=code", "--capacity=1")
    wait_for(
        lambda: (api.tasks(kubectl.namespace)[0]["status"].get("execution") or {}).get("agent") == "rt-b",
        60,
        what="the retry to be claimed by rt-b",
    )


def test_a_drain_longer_than_the_lease_keeps_the_agent_alive(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Any, api: Api
) -> None:
    """SIGTERM with a grace longer than the Lease: renewals go on, so the handler's result lands (no AgentLost)."""
    kubectl.apply(policy())
    operators.start("op")
    agent = runtimes("rt-d", "--capabilities=code", "--capacity=1", "--grace-seconds=20", "--lease-seconds=4")
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(task("eight-seconds", input={"sleep": "8"})))
    wait_for(lambda: api.phases(kubectl.namespace).get("eight-seconds") == "Running", 60, what="the task to run")
    agent.popen.send_signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=40) == 0, agent.tail()
    status = api.tasks(kubectl.namespace)[0]["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 1
    assert not [h for h in status["history"] if h.get("reason") == "AgentLost"], status["history"]
