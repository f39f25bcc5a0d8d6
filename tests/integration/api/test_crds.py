"""The CRDs teach the API through kubectl: examples, explain, categories, columns, status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qorch.testing import Kubectl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("qorch_crds")]

EXAMPLES = sorted((Path(__file__).parents[3] / "examples").glob("*.yaml"))
TASK = "apiVersion: qorch.io/v1alpha1\nkind: Task\nmetadata: {name: t}\nspec: {goal: write docs, requires: [write]}\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_applies_cleanly(kubectl: Kubectl, path: Path) -> None:
    """Each file in examples/ applies with kubectl, and every object in it exists afterwards."""
    assert path.read_text().startswith("#"), "each example opens with a comment saying what it shows"
    out = kubectl("apply", "-f", str(path))
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(out.strip().splitlines()) == len(docs)
    for doc in docs:
        kubectl("get", doc["kind"].lower(), doc["metadata"]["name"])


def test_status_in_the_main_endpoint_is_ignored(kubectl: Kubectl) -> None:
    """A status sent with the object is dropped: only /status writes status."""
    manifest = yaml.safe_load(TASK)
    manifest["status"] = {"phase": "Succeeded", "attempts": 3}
    kubectl.apply(yaml.safe_dump(manifest))
    assert "status" not in kubectl.json("get", "qtask", "t")

    kubectl("patch", "qtask", "t", "--type=merge", "-p", json.dumps({"status": {"phase": "Queued"}}))
    assert "status" not in kubectl.json("get", "qtask", "t")

    kubectl(
        "patch",
        "qtask",
        "t",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Queued", "attempts": 1}}),
    )
    status = kubectl.json("get", "qtask", "t")["status"]
    assert status == {"phase": "Queued", "attempts": 1}


def test_status_writes_are_validated_too(kubectl: Kubectl) -> None:
    """The status schema rejects an unknown phase even through /status."""
    kubectl.apply(TASK)
    bad = kubectl.run(
        "patch",
        "qtask",
        "t",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Exploded"}}',
        check=False,
    )
    assert bad.returncode != 0
    assert "status.phase" in bad.stderr


def test_explain_teaches_the_retry_field(kubectl: Kubectl) -> None:
    """`kubectl explain qtask.spec.retry` prints the field docs of every sub-field."""
    out = kubectl("explain", "qtask.spec.retry")
    for expected in ("maxAttempts", "backoffSeconds", "maxBackoffSeconds", "Attempts in all"):
        assert expected in out


def test_get_qorch_lists_every_kind(kubectl: Kubectl) -> None:
    """The `qorch` category covers Agents, Tasks, Approvals and SchedulingPolicies."""
    kubectl("apply", "-f", str(EXAMPLES[0].parent))
    kubectl.apply(
        "apiVersion: qorch.io/v1alpha1\nkind: Approval\nmetadata: {name: veto}\n"
        "spec: {taskRef: nothing, decision: Reject, approver: qorch-admin}\n"
    )  # the examples approve with `qorch approve` (an Approve names a live Task's uid)
    out = kubectl("get", "qorch")
    for kind in (
        "agent.qorch.io/",
        "task.qorch.io/",
        "approval.qorch.io/",
        "schedulingpolicy.qorch.io/default",
    ):
        assert kind in out


def test_get_qtask_shows_the_printer_columns(kubectl: Kubectl) -> None:
    """`kubectl get qtask` has Phase, Agent, Priority, Class, Attempts, Age; -o wide adds more."""
    kubectl.apply(TASK)
    kubectl(
        "patch",
        "qtask",
        "t",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "Assigned",
                    "attempts": 1,
                    "assignment": {"agent": "coders", "score": 0.9, "epoch": 2},
                    "conditions": [
                        {
                            "type": "Scheduled",
                            "status": "True",
                            "reason": "Scheduled",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ],
                }
            }
        ),
    )
    header, row = kubectl("get", "qtask").splitlines()
    assert header.split() == ["NAME", "PHASE", "AGENT", "PRIORITY", "CLASS", "ATTEMPTS", "AGE"]
    assert row.split()[:6] == ["t", "Assigned", "coders", "500", "internal", "1"]
    wide_header = kubectl("get", "qtask", "-o", "wide").splitlines()[0].split()
    assert wide_header[-4:] == ["REASON", "SCORE", "EPOCH", "GOAL"]
    selected = kubectl("get", "qtask", "--field-selector", "status.phase=Assigned", "-o", "name")
    assert selected.strip() == "task.qorch.io/t"
    assert kubectl("get", "qtask", "--field-selector", "status.assignment.agent=other", "-o", "name") == ""


def test_get_qagent_shows_the_printer_columns(kubectl: Kubectl) -> None:
    """`kubectl get qagent` has Phase, Active, Capacity, Breaker, Clearance, Age."""
    kubectl("apply", "-f", str(EXAMPLES[0].parent / "agents.yaml"))
    header = kubectl("get", "qagent").splitlines()[0].split()
    assert header == ["NAME", "PHASE", "ACTIVE", "CAPACITY", "BREAKER", "CLEARANCE", "AGE"]
    wide = kubectl("get", "qagent", "-o", "wide").splitlines()[0].split()
    assert wide[-5:] == ["CAPABILITIES", "PROVIDER", "MODEL", "SUCCESS", "GROUP"]
