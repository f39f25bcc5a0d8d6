"""Only the assigned agent writes a task's execution: the admission policy qorch-task-status-writer, for real.

The policy comes from `kubectl kustomize manifests/policies` (bound to this test's namespace
only: the session's control plane is shared, and other tests write Task status as other
users), the RBAC from `kubectl kustomize manifests/base` as in test_service_account_tokens.py.
The operator runs under its ServiceAccount's token, agent `a` (a real `qorch agent run`)
under ServiceAccount `agent-a`, which its Agent names in `spec.serviceAccountName`. Then,
while the task runs and after it ended, another agent's ServiceAccount (`agent-b`, bound
to `qorch-agent` too) and a plain user (`jane`, whom a Role lets patch `tasks/status`) try
to report a forged result and to move the phase; agent `a` itself tries to touch the
operator's fields, to report another attempt and to rewrite its finished report. Every
try is answered 403 with a message that names the field and the fix, and the task's
outcome is agent `a`'s real result.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from qorch.devcluster import ControlPlane
from qorch.devcluster._kubeconfig import with_token
from qorch.testing import Kubectl
from support.api import Api
from support.manifests import agent, policy, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
SYSTEM = "qorch-system"
POLICY = "qorch-task-status-writer"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def rendered(admin: Kubectl, folder: str) -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/<folder>`."""
    return [d for d in yaml.safe_load_all(admin("kustomize", str(ROOT / "manifests" / folder))) if d]


def now() -> str:
    """An RFC 3339 time, as reports carry."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Writer:
    """One identity's `kubectl patch --subresource=status` of a Task."""

    def __init__(self, kubectl: Kubectl, who: str) -> None:
        """`kubectl` authenticates as `who`."""
        self.kubectl, self.who = kubectl, who

    def patch(self, name: str, status: dict[str, Any]) -> str:
        """Merge-patch the status; the apiserver's refusal ("" when it accepted)."""
        body = json.dumps({"status": status})
        done = self.kubectl.run("patch", "qtask", name, "--subresource=status", "--type=merge", "-p", body, check=False)
        return "" if done.returncode == 0 else done.stderr

    def denied(self, name: str, status: dict[str, Any], *needles: str) -> str:
        """The patch is refused with 403 by the policy, with every needle in its message."""
        stderr = self.patch(name, status)
        assert stderr, f"{self.who} could write {status}"
        assert "(Forbidden)" in stderr, stderr  # kubectl's rendering of a 403
        assert f"ValidatingAdmissionPolicy '{POLICY}'" in stderr, stderr
        for needle in needles:
            assert needle in stderr, f"{needle!r} not in: {stderr}"
        return stderr


@pytest.fixture
def admin(qorch_control_plane: ControlPlane, qorch_crds: list[str], qorch_namespace: str) -> Kubectl:
    """Admin kubectl in this test's namespace."""
    del qorch_crds
    return Kubectl(qorch_control_plane.binaries.kubectl, qorch_control_plane.admin_kubeconfig, qorch_namespace)


@pytest.fixture
def status_policy(admin: Kubectl) -> Any:
    """manifests/policies' task-status policy, its binding limited to this test's namespace; removed afterwards."""
    ns = admin.namespace
    cluster = admin.in_namespace(None)
    docs = [d for d in rendered(cluster, "policies") if d["metadata"]["name"] == POLICY]
    assert sorted(d["kind"] for d in docs) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    binding_name = f"{POLICY}-{ns}"
    for doc in docs:
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["metadata"]["name"] = binding_name
            doc["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
    cluster.apply(yaml.safe_dump_all(docs))
    yield docs
    cluster.run("delete", "validatingadmissionpolicybinding", binding_name, check=False)


@pytest.fixture
def writers(
    admin: Kubectl, qorch_control_plane: ControlPlane, qorch_kubeconfig_for: Any, tmp_path: Path
) -> dict[str, Kubectl]:
    """kubectl as the operator's, agent-a's and agent-b's ServiceAccount tokens, and as user jane."""
    ns = admin.namespace
    cluster = admin.in_namespace(None)
    if cluster.run("get", "namespace", SYSTEM, check=False).returncode != 0:
        cluster("create", "namespace", SYSTEM)
    cluster.apply(yaml.safe_dump_all([d for d in rendered(cluster, "base") if d["kind"] in RBAC_KINDS]))
    tokens = {"operator": cluster("create", "token", "qorch-operator", f"--namespace={SYSTEM}").strip()}
    # `kubectl patch --subresource=status` GETs tasks/status first, which the runtime never needs (it reads
    # tasks): the test grants that read alone, so the refusals below come from the policy, not from RBAC.
    admin("create", "role", "status-reader", "--verb=get", "--resource=tasks.qorch.io/status")
    for sa in ("agent-a", "agent-b"):
        admin("create", "serviceaccount", sa)
        admin("create", "rolebinding", sa, "--clusterrole=qorch-agent", f"--serviceaccount={ns}:{sa}")
        admin("create", "rolebinding", f"{sa}-reads-status", "--role=status-reader", f"--serviceaccount={ns}:{sa}")
        tokens[sa] = admin("create", "token", sa).strip()
    # A plain user whom RBAC lets write Task status (a namespace admin, a CI bot...).
    admin("create", "role", "status-writer", "--verb=get,list,patch", "--resource=tasks.qorch.io,tasks.qorch.io/status")
    admin("create", "rolebinding", "jane", "--role=status-writer", "--user=jane")
    admin_kubeconfig = qorch_control_plane.admin_kubeconfig
    configs = {
        who: with_token(tmp_path / f"{who}.kubeconfig", admin=admin_kubeconfig, user=who, token=token)
        for who, token in tokens.items()
    }
    configs["jane"] = qorch_kubeconfig_for("jane")
    return {who: admin.with_kubeconfig(path) for who, path in configs.items()}


def wait_until_enforced(jane: Writer, admin: Kubectl) -> None:
    """The apiserver loads a new policy within a few seconds: wait for its first denial (a Task never assigned)."""
    admin("create", "-f", "-", stdin=yaml.safe_dump(task("probe", requires=("nothing-offers-this",))))
    deadline, tries = time.monotonic() + 30, 0
    while True:
        # A new result each time: a write that changes nothing is no report, and the policy lets it by.
        tries += 1
        forged = {"execution": {"attempt": 1, "agent": "a", "result": f"forged-{tries}"}}
        stderr = jane.patch("probe", forged)
        if stderr or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "is written only by the agent a task is assigned to" in stderr, stderr
    assert "this task is new with no status.assignment" in stderr, stderr
    landed = (admin.json("get", "qtask", "probe").get("status") or {}).get("execution") or {}
    assert landed.get("result") != f"forged-{tries}"


def test_only_the_assigned_agents_service_account_writes_its_execution(
    admin: Kubectl,
    status_policy: Any,
    writers: dict[str, Kubectl],
    operators: OperatorFleet,
    api: Api,
    tmp_path: Path,
) -> None:
    """agent-b's token and user jane are refused; agent a may not touch the operator's fields; its result stands."""
    del status_policy
    ns = admin.namespace
    assert ns is not None
    user_a, user_b = (f"system:serviceaccount:{ns}:agent-{x}" for x in "ab")
    jane, agent_b = Writer(writers["jane"], "jane"), Writer(writers["agent-b"], "agent-b")
    agent_a = Writer(writers["agent-a"], "agent-a")
    wait_until_enforced(jane, admin)
    admin.apply(policy())
    admin.apply(
        yaml.safe_dump_all([
            agent("a", serviceAccountName="agent-a"),
            agent("b", capabilities=("other",), serviceAccountName="agent-b"),
        ])
    )  # fmt: skip
    operator = operators.start("writer-operator", kubeconfig=writers["operator"].kubeconfig)
    runtime = Runtime(tmp_path, writers["agent-a"].kubeconfig, ns, "a", "--capabilities=code")
    try:
        admin("create", "-f", "-", stdin=yaml.safe_dump(task("work", input={"sleep": "12", "num": "7"})))
        wait_for(
            lambda: api.phases(ns).get("work") == "Running",
            60,
            what=f"agent a to claim; operator log:\n{operator.tail()}\nruntime log:\n{runtime.tail()}",
        )
        running = admin.json("get", "qtask", "work")["status"]
        assignment, claim = running["assignment"], running["execution"]
        assert assignment["agent"] == "a"
        assert assignment["user"] == user_a  # the operator copied the Agent's ServiceAccount, as a user name
        attempt = assignment["attempt"]
        forged = {"execution": {**claim, "finishedAt": now(), "result": "forged", "error": ""}}

        # Another agent's ServiceAccount: its RBAC allows tasks/status, the policy does not.
        agent_b.denied(
            "work",
            forged,
            f"status.execution may be written only by {user_a} (status.assignment.user, from Agent a "
            f"spec.serviceAccountName), not by {user_b}",
            "run that agent under its ServiceAccount, or set the Agent's spec.serviceAccountName",
        )
        agent_b.denied("work", {"phase": "Succeeded"}, "status.phase of a Task belong to the operator")
        # A plain user.
        jane.denied("work", forged, f"may be written only by {user_a}", "not by jane")
        jane.denied(
            "work",
            {"phase": "Failed", "attempts": 9},
            "status.phase, status.attempts of a Task belong to the operator",
            "send a merge patch of status.execution alone",
        )
        # The assigned agent itself: only its own report, only of the current attempt.
        agent_a.denied("work", {"phase": "Succeeded"}, "status.phase of a Task belong to the operator")
        agent_a.denied(
            "work",
            {"execution": {**forged["execution"], "attempt": attempt + 1}},
            f"status.execution must report the current attempt: attempt {attempt} by agent a (status.assignment), "
            f"not attempt {attempt + 1} by agent a",
        )
        unchanged = admin.json("get", "qtask", "work")["status"]
        assert unchanged["execution"] == claim
        assert unchanged["phase"] == "Running"

        wait_for(
            lambda: api.phases(ns).get("work") == "Succeeded",
            60,
            what=f"agent a to finish; operator log:\n{operator.tail()}\nruntime log:\n{runtime.tail()}",
        )
        done = admin.json("get", "qtask", "work")["status"]
        assert json.loads(done["execution"]["result"]) == {"echo": "work", "agent": "a", "num": "7"}
        assert done["attempts"] == 1
        assert done["execution"]["startedAt"] == claim["startedAt"]
        assert [c["task"] for c in runtime.handled()] == ["work"]
        # A finished task's report is final, even for its own agent.
        for who in (agent_a, agent_b, jane):
            who.denied("work", forged, "while it is Assigned or Running; this task is Succeeded")
        assert admin.json("get", "qtask", "work")["status"]["execution"] == done["execution"]
        # Nothing the operator or the agent runtime wrote was refused on the way.
        for log in (operator.log_text(), runtime.log.read_text(errors="replace")):
            refused = [line for line in log.splitlines() if re.search(r"\b403\b|[Ff]orbidden", line)]
            assert not refused, "\n".join(refused[:10])
    finally:
        if runtime.popen.poll() is None:
            runtime.stop()
