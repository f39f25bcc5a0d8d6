"""Hostile input through the real apiserver (issue 14, item 5): fuzzed Agents and Tasks, a running operator.

Hypothesis builds Agent and Task bodies from the real field names with values of every
JSON type (and unknown fields), and POSTs each with strict field validation, as kubectl
does. Each is accepted (201), or rejected with 422 (or 400 for a body no schema can
read) naming the field in the message. Meanwhile a real operator and agent runtime
serve the namespace: afterwards the operator's probes are green and a well-formed task
still runs to the end, so no accepted object crashed or stalled it.
"""

from __future__ import annotations

import json
import re
import urllib.error
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qorch.testing import Kubectl
from support.api import Api
from support.manifests import policy, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

EXAMPLES = 150
TASK_FIELDS = ["goal", "requires", "priority", "classification", "dependsOn", "deadline", "failOnDeadline",
               "timeoutSeconds", "retry", "approval", "agentSelector", "entanglementGroup", "budget", "input",
               "cancel", "redrive"]  # fmt: skip
AGENT_FIELDS = ["capabilities", "capacity", "clearance", "provider", "entanglementGroup", "cordoned", "labels"]
_FIELD = re.compile(r"(spec|metadata)(\.[A-Za-z0-9\[\]_-]+)*|unknown field|Invalid value|Required value")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["secret", "code", "2030-01-01T00:00:00Z", "a" * 300, "-", "Approve", "quantum"]),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip


def specs(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A spec of known fields (and sometimes an unknown one) with values of any JSON type."""
    known = st.dictionaries(st.sampled_from(fields), values, max_size=5)
    junk = st.dictionaries(st.sampled_from(["junk", "x-y", "Goal"]), values, max_size=1)
    return st.builds(lambda a, b: {**a, **b}, known, junk)


def test_fuzzed_objects_are_accepted_or_refused_by_field_and_never_harm_the_operator(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api
) -> None:
    """Every fuzzed body: 201, or 4xx naming what is wrong; then the operator is healthy and work still runs."""
    ns = kubectl.namespace
    assert ns is not None
    kubectl.apply(policy())
    op = operators.start("op", health=True)
    runtimes("fuzz-worker", "--capabilities=code", "--capacity=4")
    outcomes: Counter[str] = Counter()
    counter = iter(range(10**9))

    def post(plural: str, kind: str, spec: dict[str, Any]) -> None:
        meta = {"name": f"f{next(counter)}"}
        body = {"apiVersion": "qorch.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}
        path = f"/apis/qorch.io/v1alpha1/namespaces/{ns}/{plural}?fieldValidation=Strict"
        code, message = 201, ""
        try:
            api.send("POST", path, body)
        except urllib.error.HTTPError as exc:
            code, message = exc.code, json.loads(exc.read() or b"{}").get("message", "")
        if code == 201:
            outcomes[f"{kind} accepted"] += 1
            return
        assert code in (400, 422), (code, message, spec)
        assert _FIELD.search(message), (message, spec)
        outcomes[f"{kind} refused"] += 1

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(task_spec=specs(TASK_FIELDS), agent_spec=specs(AGENT_FIELDS))
    def fuzz(task_spec: dict[str, Any], agent_spec: dict[str, Any]) -> None:
        post("tasks", "Task", {"goal": "fuzzed", **task_spec})  # goal is required: mostly keep it
        post("agents", "Agent", agent_spec)

    fuzz()
    print(f"fuzzed through the apiserver: {dict(outcomes)}")  # noqa: T201 - the figure docs/security.md quotes
    assert sum(outcomes.values()) == 2 * EXAMPLES
    assert op.popen.poll() is None, op.log.read_text()[-2000:]
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(task("well-formed")))
    wait_for(lambda: api.phases(ns).get("well-formed") == "Succeeded", 60, what="a well-formed task to succeed")
    assert op.healthz() == 200
    assert op.popen.poll() is None
