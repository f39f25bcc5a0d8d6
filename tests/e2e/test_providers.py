"""LLM provider routing and per-provider breakers through real processes (issue 13, item 8).

Three real agent runtimes: alpha-1 and alpha-2 behind the cheap provider alpha, beta-1
behind the dear provider beta. Cost-weighted routing sends work to alpha first; alpha
answers every call with a rate limit (the handler raises ProviderError), so alpha's
breaker opens for both its agents and the work fails over to beta.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import yaml

from qorch.testing import Kubectl
from qorch.testing.invariants import CapacitySampler, check
from support.api import Api
from support.manifests import agent, policy, stream, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

TASKS = 8


def test_rate_limits_open_the_providers_breaker_and_work_fails_over(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api
) -> None:
    """Every task ends Succeeded on beta; alpha's breaker is Open in the policy status, an Event and the metric."""
    ns = kubectl.namespace
    assert ns is not None
    kubectl.apply(policy(weights={"cost": 100}, providerBreaker={"failureThreshold": 2, "cooldownSeconds": 600}))
    fleet = [
        agent("alpha-1", capacity=2, provider={"name": "alpha", "costPerTask": 1}),
        agent("alpha-2", capacity=2, provider={"name": "alpha", "costPerTask": 1}),
        agent("beta-1", capacity=4, provider={"name": "beta", "costPerTask": 50}),
    ]
    kubectl.apply(stream(fleet))
    op = operators.start("op")
    workers = {name: runtimes(name, "--capabilities=code", "--capacity=4") for name in ("alpha-1", "alpha-2", "beta-1")}
    wait_for(lambda: {a.get("status", {}).get("phase") for a in api.agents(ns)} == {"Ready"}, 30,
             what="the three agents to be Ready")  # fmt: skip
    retry = {"maxAttempts": 5, "backoffSeconds": 0}
    work = [task(f"t{i}", input={"rate_limited_on": "alpha"}, retry=retry) for i in range(TASKS)]
    with CapacitySampler(kubectl.kubeconfig, ns) as sampler:  # a kubeconfig: the checker's own reader
        kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(work))
        wait_for(lambda: api.count(ns, "Succeeded") == TASKS, 90, what="every task to succeed")
    sampler.assert_ok()
    tasks = {t["metadata"]["name"]: t for t in api.tasks(ns)}
    assert {t["status"]["execution"]["agent"] for t in tasks.values()} == {"beta-1"}
    limited = [c for name in ("alpha-1", "alpha-2") for c in workers[name].handled()]
    assert limited, "routing by cost should have tried the cheap provider first"
    assert len(limited) <= 2 + 4, limited  # the threshold, plus what was in flight when it opened

    provider_status = kubectl.json("get", "schedulingpolicy", "default")["status"]
    wait_for(lambda: kubectl.json("get", "schedulingpolicy", "default")["status"].get("providers"), 15,
             what="the providers' breakers to be published")  # fmt: skip
    provider_status = kubectl.json("get", "schedulingpolicy", "default")["status"]["providers"]
    assert [(p["name"], p["state"]) for p in provider_status] == [("alpha", "Open")]
    for name in ("alpha-1", "alpha-2"):  # the provider's fault, not the agents'
        breaker = kubectl.json("get", "qagent", name).get("status", {}).get("breaker") or {"state": "Closed"}
        assert breaker["state"] == "Closed", (name, breaker)
    events = kubectl.in_namespace("default").json(
        "get", "events", "--field-selector=involvedObject.kind=SchedulingPolicy,reason=ProviderBreakerOpen"
    )["items"]
    assert any("provider alpha" in e["message"] for e in events), events
    assert op.metric('qorch_provider_breaker_transitions_total{state="Open"}') == 1
    assert op.metric('qorch_provider_breakers{state="Open"}') == 1
    finished = Counter(c["task"] for w in workers.values() for c in w.handled("finished"))
    assert finished == {f"t{i}": 1 for i in range(TASKS)}, finished  # none lost, none run to the end twice
    completions = [c for w in workers.values() for c in w.handled("finished")]
    check(kubectl.kubeconfig, ns, created=[f"t{i}" for i in range(TASKS)], completions=completions).assert_ok()
    assert sampler.samples > 1, sampler.samples
    assert sampler.errors == 0, sampler.errors
