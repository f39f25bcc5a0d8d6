"""Bad objects are rejected at `kubectl apply` with a message that names the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from qorch.devcluster import ADMIN_USER
from qorch.testing import Kubectl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("qorch_crds")]

Obj = dict[str, Any]


def agent(**spec: Any) -> Obj:
    """A minimal valid Agent, with spec fields overridden."""
    return {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "a"},
        "spec": {"capabilities": ["code"], **spec},
    }


def task(name: str = "t", **spec: Any) -> Obj:
    """A minimal valid Task, with spec fields overridden."""
    return {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"goal": "do it", **spec},
    }


def policy(name: str = "default", **spec: Any) -> Obj:
    """A SchedulingPolicy with the given spec."""
    return {
        "apiVersion": "qorch.io/v1alpha1",
        "kind": "SchedulingPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def approval(spec: Obj | None) -> Obj:
    """An Approval, with no spec at all when None."""
    obj: Obj = {"apiVersion": "qorch.io/v1alpha1", "kind": "Approval", "metadata": {"name": "ap"}}
    if spec is not None:
        obj["spec"] = spec
    return obj


def without(obj: Obj, *path: str) -> Obj:
    """A copy of obj with the field at path removed."""
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


DNS_MSG = "should match"
BAD = [
    # --- wrong types
    pytest.param(agent(capacity="four"), ["spec.capacity", "integer"], id="agent-capacity-string"),
    pytest.param(agent(cordoned="yes"), ["spec.cordoned", "boolean"], id="agent-cordoned-string"),
    pytest.param(task(priority="high"), ["spec.priority", "integer"], id="task-priority-string"),
    pytest.param(task(requires="code"), ["spec.requires", "array"], id="task-requires-not-a-list"),
    pytest.param(task(deadline="tomorrow"), ["spec.deadline"], id="task-deadline-not-a-date"),
    pytest.param(task(input={"count": 3}), ["spec.input.count", "string"], id="task-input-value-not-a-string"),
    # --- out-of-range numbers
    pytest.param(agent(capacity=0), ["spec.capacity", "greater than or equal to 1"], id="agent-capacity-zero"),
    pytest.param(agent(capacity=100_001), ["spec.capacity", "100000"], id="agent-capacity-too-big"),
    pytest.param(task(priority=1001), ["spec.priority", "1000"], id="task-priority-above-1000"),
    pytest.param(task(priority=-1), ["spec.priority", "0"], id="task-priority-negative"),
    pytest.param(task(timeoutSeconds=0), ["spec.timeoutSeconds"], id="task-timeout-zero"),
    pytest.param(task(retry={"maxAttempts": 0}), ["spec.retry.maxAttempts"], id="retry-zero-attempts"),
    pytest.param(task(retry={"maxAttempts": 21}), ["spec.retry.maxAttempts"], id="retry-too-many-attempts"),
    pytest.param(task(budget={"maxCost": -5}), ["spec.budget.maxCost"], id="budget-negative"),
    pytest.param(
        agent(provider={"name": "openai", "costPerTask": -1}),
        ["spec.provider.costPerTask"],
        id="provider-negative-cost",
    ),
    pytest.param(policy(temperature=-1), ["spec.temperature"], id="policy-negative-temperature"),
    pytest.param(
        policy(temperature=1e-310), ["spec.temperature", "softmax underflows"], id="policy-underflowing-temperature"
    ),
    pytest.param(
        policy(weights={"headroom": 1, "speed": 2}),
        ["spec.weights", "unknown scorer", "capability-fit"],
        id="policy-unknown-scorer",
    ),
    # --- unknown enum values
    pytest.param(
        agent(clearance="ultra"),
        ["spec.clearance", "Unsupported value", "topsecret"],
        id="agent-unknown-clearance",
    ),
    pytest.param(
        task(classification="classified"),
        ["spec.classification", "Unsupported value"],
        id="task-unknown-classification",
    ),
    pytest.param(
        policy(strategy="magic"),
        ["spec.strategy", "Unsupported value", "quantum"],
        id="policy-unknown-strategy",
    ),
    pytest.param(
        approval({"taskRef": "t", "decision": "Maybe", "approver": "me"}),
        ["spec.decision", "Unsupported value"],
        id="approval-unknown-decision",
    ),
    pytest.param(
        task(agentSelector={"matchExpressions": [{"key": "zone", "operator": "Like"}]}),
        ["spec.agentSelector.matchExpressions[0].operator"],
        id="selector-unknown-operator",
    ),
    # --- oversized strings, lists and input
    pytest.param(task(goal="x" * 4097), ["spec.goal", "Too long"], id="task-goal-too-long"),
    pytest.param(
        agent(capabilities=[f"c{i}" for i in range(33)]),
        ["spec.capabilities", "Too many"],
        id="agent-too-many-capabilities",
    ),
    pytest.param(
        task(dependsOn=[f"t{i}" for i in range(65)]),
        ["spec.dependsOn", "Too many"],
        id="task-too-many-dependencies",
    ),
    pytest.param(
        task(input={f"k{i}": "v" for i in range(33)}),
        ["spec.input", "Too many"],
        id="task-input-too-many-entries",
    ),
    pytest.param(
        task(input={"doc": "x" * 4097}),
        ["spec.input.doc", "Too long"],
        id="task-input-value-too-big",
    ),
    pytest.param(
        policy(weights={f"w{i}": 1 for i in range(17)}),
        ["spec.weights", "Too many"],
        id="policy-too-many-weights",
    ),
    # --- bad capability names and other names
    pytest.param(
        agent(capabilities=["Bad_Cap"]),
        ["spec.capabilities[0]", DNS_MSG],
        id="capability-uppercase",
    ),
    pytest.param(
        agent(capabilities=["x" * 64]),
        ["spec.capabilities[0]", "Too long"],
        id="capability-too-long",
    ),
    pytest.param(task(requires=["-code"]), ["spec.requires[0]", DNS_MSG], id="requires-leading-dash"),
    pytest.param(
        agent(capabilities=["code", "code"]),
        ["spec.capabilities[1]", "Duplicate value"],
        id="capability-duplicate",
    ),
    pytest.param(task(input={"1 bad key": "v"}), ["spec.input", "every key must"], id="input-bad-key"),
    pytest.param(agent(entanglementGroup="Team A"), ["spec.entanglementGroup", DNS_MSG], id="group-not-dns"),
    # --- rules across fields
    pytest.param(
        task(name="loop", dependsOn=["other", "loop"]),
        ["spec.dependsOn", "cannot depend on itself"],
        id="task-depends-on-itself",
    ),
    pytest.param(
        task(retry={"backoffSeconds": 60, "maxBackoffSeconds": 30}),
        ["spec.retry.maxBackoffSeconds", "must be at least backoffSeconds"],
        id="retry-backoff-inverted",
    ),
    pytest.param(
        task(deadline="2030-01-01T00:00:00Z", failOnDeadline="yes"),
        ["spec.failOnDeadline", "boolean"],
        id="task-fail-on-deadline-not-a-boolean",
    ),
    # --- required fields, unknown fields, names
    pytest.param(without(task(), "spec", "goal"), ["spec.goal", "Required"], id="task-without-goal"),
    pytest.param(without(task(), "spec"), ["spec", "Required"], id="task-without-spec"),
    pytest.param(
        agent(provider={"model": "gpt"}),
        ["spec.provider.name", "Required"],
        id="provider-without-name",
    ),
    pytest.param(agent(colour="blue"), ['unknown field "spec.colour"'], id="agent-unknown-field"),
    pytest.param(policy(name="fast"), ["must be named 'default'"], id="policy-not-named-default"),
    pytest.param(approval(None), ["spec", "Required"], id="approval-empty"),
    pytest.param(approval({}), ["spec.taskRef", "spec.decision", "spec.approver"], id="approval-empty-spec"),
    pytest.param(
        approval({"taskRef": "t", "decision": "Approve", "approver": "me", "taskGeneration": 1}),
        ["spec.taskUID", "an Approve must name the Task incarnation and generation", "qorch approve"],
        id="approve-without-task-uid",
    ),
    pytest.param(
        approval({"taskRef": "t", "decision": "Approve", "approver": "me", "taskUID": "u-1"}),
        ["spec.taskUID", "spec.taskGeneration"],
        id="approve-without-task-generation",
    ),
]


@pytest.mark.parametrize(("manifest", "expected"), BAD)
def test_bad_object_is_rejected_naming_the_field(kubectl: Kubectl, manifest: Obj, expected: list[str]) -> None:
    """kubectl apply fails and the error names the offending field (and, where useful, the fix)."""
    result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0, f"accepted: {yaml.safe_dump(manifest)}"
    for fragment in expected:
        assert fragment in result.stderr, result.stderr
    stored = kubectl.run("get", manifest["kind"].lower(), manifest["metadata"]["name"], "-o", "json", check=False)
    if stored.returncode == 0:  # only cluster-scoped objects can pre-exist (another test's policy)
        assert json.loads(stored.stdout).get("spec") != manifest.get("spec")


def test_the_table_is_big_enough() -> None:
    """The acceptance list asks for at least 30 rejected objects."""
    assert len(BAD) >= 30


@pytest.mark.parametrize(
    ("field", "first", "second", "message"),
    [
        pytest.param(
            "requires",
            ["code"],
            ["code", "review"],
            "requires cannot change after creation",
            id="requires",
        ),
        pytest.param(
            "classification",
            "internal",
            "secret",
            "classification cannot change after creation",
            id="classification",
        ),
    ],
)
def test_immutable_task_fields_cannot_change(
    kubectl: Kubectl, field: str, first: object, second: object, message: str
) -> None:
    """requires and classification are fixed at creation; the error says how to change them."""
    kubectl.apply(yaml.safe_dump(task(**{field: first})))
    result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(task(**{field: second})), check=False)
    assert result.returncode != 0
    assert f"spec.{field}" in result.stderr
    assert message in result.stderr
    assert kubectl.json("get", "qtask", "t")["spec"][field] == first


def test_priority_can_change(kubectl: Kubectl) -> None:
    """Priority is mutable: users re-prioritise queued work."""
    kubectl.apply(yaml.safe_dump(task(priority=100, requires=["code"])))
    kubectl.apply(yaml.safe_dump(task(priority=900, requires=["code"])))
    assert kubectl.json("get", "qtask", "t")["spec"]["priority"] == 900


def test_an_approval_is_immutable(kubectl: Kubectl) -> None:
    """A decision, once recorded, cannot be rewritten."""
    me = ADMIN_USER  # the shipped admission policy requires approvers to approve in their own name
    kubectl.apply(yaml.safe_dump(approval({"taskRef": "t", "decision": "Reject", "approver": me})))
    changed = approval({"taskRef": "t", "decision": "Reject", "approver": me, "reason": "second thoughts"})
    result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(changed), check=False)
    assert result.returncode != 0
    assert "cannot be changed once made" in result.stderr


def test_defaults_are_filled_in_by_the_server(kubectl: Kubectl) -> None:
    """priority 500, classification internal, capacity 1 and retry bounds come from the schema."""
    kubectl.apply(yaml.safe_dump(task(retry={"maxAttempts": 2})))
    kubectl.apply(yaml.safe_dump(agent()))
    spec = kubectl.json("get", "qtask", "t")["spec"]
    assert spec["priority"] == 500
    assert spec["classification"] == "internal"
    assert spec["retry"] == {"maxAttempts": 2, "backoffSeconds": 10, "maxBackoffSeconds": 300}
    assert kubectl.json("get", "qagent", "a")["spec"]["capacity"] == 1
