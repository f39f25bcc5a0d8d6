"""The task-status admission policy (manifests/policies/task-status-writer.yaml) keeps up with the API.

The policy lists, by name, the Task status fields only the operator writes (CEL cannot drop
one key of an object and compare the rest): every field of the generated schema but
`execution` must be there, or an agent could write a field added later. Its enforcement
against a real apiserver is tests/e2e/test_task_status_writer.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from qorch.api import crd
from qorch.api.agent import service_account_user
from qorch.controller import documents
from qorch.controller.records import AgentRecord

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "manifests" / "policies" / "task-status-writer.yaml"
AGENT_OWNED = {"execution"}  # DESIGN.md, who writes what: the agent runtime writes only this


def policy() -> dict[str, Any]:
    """The ValidatingAdmissionPolicy object."""
    [found] = [d for d in yaml.safe_load_all(POLICY.read_text()) if d["kind"] == "ValidatingAdmissionPolicy"]
    return dict(found)


def status_fields() -> set[str]:
    """The top-level properties of Task status in the generated CRD."""
    task = yaml.safe_load(crd.render()["qorch.io_tasks.yaml"])
    [version] = task["spec"]["versions"]
    return set(version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"])


def test_the_policy_guards_every_status_field_but_execution() -> None:
    """Each operator-owned field of the schema is compared old against new, and named in the message."""
    [changed] = [v["expression"] for v in policy()["spec"]["variables"] if v["name"] == "changed"]
    guarded = set(re.findall(r"object\.\?status\.\?(\w+) == oldObject\.\?status\.\?\1 \? \[\] : \['\1'\]", changed))
    assert guarded == status_fields() - AGENT_OWNED


def test_the_policy_exempts_the_operators_service_account_and_matches_only_task_status_updates() -> None:
    """The operator of manifests/base (qorch-system/qorch-operator) writes the rest of status; UPDATE tasks/status."""
    spec = policy()["spec"]
    conditions = {c["name"]: c["expression"] for c in spec["matchConditions"]}
    assert "'system:serviceaccount:qorch-system:qorch-operator'" in conditions["not-the-operator"]
    base = list(yaml.safe_load_all((ROOT / "manifests" / "base" / "operator-rbac.yaml").read_text()))
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in base if d["kind"] == "ServiceAccount"}
    assert accounts == {("qorch-system", "qorch-operator")}
    [rule] = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["tasks/status"]
    assert rule["operations"] == ["UPDATE"]
    assert spec["failurePolicy"] == "Fail"


def agent_body(**spec: Any) -> dict[str, Any]:
    """A watched Agent body."""
    meta = {"namespace": "team", "name": "a", "uid": "u", "resourceVersion": "1"}
    return {"metadata": meta, "spec": {"capabilities": ["code"], **spec}}


def test_an_assignment_names_the_user_of_the_agents_service_account() -> None:
    """spec.serviceAccountName becomes assignment.user; an Agent without one gets no user in its assignments."""
    assert AgentRecord.of(agent_body(serviceAccountName="coder")).user == "system:serviceaccount:team:coder"
    assert AgentRecord.of(agent_body()).user == ""
    assert service_account_user("team", "") == ""

    def assignment(user: str) -> dict[str, Any]:
        change = documents.assigned(
            agent="a", attempt=1, epoch=0, when=0.0, score=1.0, probability=1.0, strategy="greedy", candidates=[],
            user=user,
        )  # fmt: skip
        return dict(change.fields["assignment"])

    assert assignment("system:serviceaccount:team:coder")["user"] == "system:serviceaccount:team:coder"
    assert "user" not in assignment("")
