"""The shipped admission policy: an Approval's approver must be the user who creates it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from qorch.testing import Kubectl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("qorch_crds")]

POLICY = Path(__file__).parents[3] / "manifests" / "policies"


def approval(approver: str) -> str:
    """An Approval manifest naming `approver`."""
    return yaml.safe_dump(
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Approval",
            "metadata": {"name": f"by-{approver}"},
            "spec": {
                "taskRef": "deploy",
                "decision": "Approve",
                "approver": approver,
                "taskUID": "0b1f4c9e-uid-of-deploy",
                "taskGeneration": 1,
            },
        }
    )


def test_nobody_approves_in_someone_elses_name(kubectl: Kubectl, qorch_kubeconfig_for) -> None:
    """alice may record her own approval; approving as bob is denied with a message saying what to set."""
    kubectl("apply", "-k", str(POLICY))
    kubectl("create", "role", "approver", "--verb=create,get,list", "--resource=approvals.qorch.io")
    kubectl("create", "rolebinding", "alice-approves", "--role=approver", "--user=alice")
    alice = kubectl.with_kubeconfig(qorch_kubeconfig_for("alice"))
    # The policy is enforced once the apiserver has loaded it; wait for the first denial.
    deadline = time.monotonic() + 30
    while True:
        forged = alice.run("apply", "-f", "-", stdin=approval("bob"), check=False)
        if forged.returncode != 0 or time.monotonic() > deadline:
            break
        kubectl("delete", "approval", "by-bob")
        time.sleep(0.5)
    assert forged.returncode != 0
    assert 'spec.approver must be you ("alice"), not "bob"' in forged.stderr
    own = alice.run("apply", "-f", "-", stdin=approval("alice"))
    assert own.returncode == 0
    carol = kubectl.with_kubeconfig(qorch_kubeconfig_for("carol"))
    denied = carol.run("apply", "-f", "-", stdin=approval("carol"), check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
