"""The install (manifests/) against a real kube-apiserver: one-command install, dry runs, Pod Security, least privilege.

The module starts a control plane of its own: installing qorch creates cluster-wide
objects (CRDs, ClusterRoles, the default SchedulingPolicy, the restricted `qorch-system`
namespace, which could never be deleted again on a cluster without a
kube-controller-manager) that the other tests' shared cluster must not inherit. A fresh
cluster is also what the README's one-command install is promised to work on.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from qorch.devcluster import AssetsNotFoundError, ControlPlane
from qorch.testing import Kubectl

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).parents[2]
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = {name: MANIFESTS / "overlays" / name for name in ("dev", "production")}
SYSTEM = "qorch-system"
OPERATOR = f"system:serviceaccount:{SYSTEM}:qorch-operator"
TEAM, OTHER_TEAM = "team-a", "team-b"
AGENT = f"system:serviceaccount:{TEAM}:agent"
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate"}


class Cell(NamedTuple):
    """One cell of a can-i matrix: whether `verb` on `resource` (/`subresource`, `name`) in `namespace` is allowed."""

    verb: str
    resource: str
    namespace: str
    allowed: bool
    subresource: str = ""
    name: str = ""

    def argv(self, user: str) -> list[str]:
        """`kubectl auth can-i` arguments for this cell, as `user`."""
        target = [f"{self.resource}/{self.name}" if self.name else self.resource]
        extra = [f"--subresource={self.subresource}"] if self.subresource else []
        return ["auth", "can-i", self.verb, *target, *extra, f"--namespace={self.namespace}", f"--as={user}"]

    def __str__(self) -> str:
        """How a failure names the cell."""
        what = (
            self.resource
            + (f"/{self.subresource}" if self.subresource else "")
            + (f" {self.name}" if self.name else "")
        )
        return f"{self.verb} {what} -n {self.namespace}: expected {'yes' if self.allowed else 'no'}"


def allow(verb: str, resource: str, namespace: str, **kw: str) -> Cell:
    """A cell that must be allowed."""
    return Cell(verb, resource, namespace, allowed=True, **kw)


def deny(verb: str, resource: str, namespace: str, **kw: str) -> Cell:
    """A cell that must be denied."""
    return Cell(verb, resource, namespace, allowed=False, **kw)


QORCH_KINDS = ("agents.qorch.io", "tasks.qorch.io", "approvals.qorch.io")
OPERATOR_MATRIX = [
    # read the four kinds, everywhere
    *(allow(verb, kind, TEAM) for kind in QORCH_KINDS for verb in ("get", "list", "watch")),
    *(allow(verb, "schedulingpolicies.qorch.io", TEAM) for verb in ("get", "list", "watch")),
    # write status only, by patch only
    *(allow("patch", kind, TEAM, subresource="status") for kind in QORCH_KINDS),
    deny("update", "tasks.qorch.io", TEAM, subresource="status"),
    *(deny(verb, kind, TEAM) for kind in QORCH_KINDS for verb in ("create", "update", "patch", "delete")),
    *(deny(verb, "schedulingpolicies.qorch.io", TEAM) for verb in ("create", "update", "patch", "delete")),
    # the leader publishes the scheduler's observables into the policy's status, by patch only
    allow("patch", "schedulingpolicies.qorch.io", TEAM, subresource="status"),
    deny("update", "schedulingpolicies.qorch.io", TEAM, subresource="status"),
    deny("deletecollection", "tasks.qorch.io", TEAM),
    # its own Lease: get, create, update; only this one is updated, and nowhere else
    allow("get", "leases.coordination.k8s.io", SYSTEM, name="qorch-operator"),
    allow("create", "leases.coordination.k8s.io", SYSTEM),
    allow("update", "leases.coordination.k8s.io", SYSTEM, name="qorch-operator"),
    deny("update", "leases.coordination.k8s.io", SYSTEM, name="someone-else"),
    deny("delete", "leases.coordination.k8s.io", SYSTEM, name="qorch-operator"),
    deny("patch", "leases.coordination.k8s.io", SYSTEM, name="qorch-operator"),
    deny("update", "leases.coordination.k8s.io", TEAM, name="qorch-operator"),
    deny("create", "leases.coordination.k8s.io", TEAM),
    # agents' Leases: read in every namespace, never written
    *(allow(verb, "leases.coordination.k8s.io", TEAM) for verb in ("get", "list", "watch")),
    deny("update", "leases.coordination.k8s.io", TEAM, name="qorch-agent-a"),
    deny("patch", "leases.coordination.k8s.io", TEAM, name="qorch-agent-a"),
    # Events: create only
    allow("create", "events", TEAM),
    deny("patch", "events", TEAM),
    deny("delete", "events", TEAM),
    deny("create", "events.events.k8s.io", TEAM),
    # authenticated metrics
    allow("create", "tokenreviews.authentication.k8s.io", SYSTEM),
    allow("create", "subjectaccessreviews.authorization.k8s.io", SYSTEM),
    # nothing else
    *(deny(verb, "secrets", ns) for ns in (SYSTEM, TEAM) for verb in ("get", "list", "watch")),
    deny("get", "configmaps", SYSTEM),
    deny("create", "pods", SYSTEM),
    deny("create", "pods", TEAM),
    deny("create", "deployments.apps", SYSTEM),
    deny("create", "serviceaccounts", SYSTEM, subresource="token", name="qorch-operator"),
    deny("list", "namespaces", SYSTEM),
    deny("list", "customresourcedefinitions.apiextensions.k8s.io", SYSTEM),
    deny("escalate", "clusterroles.rbac.authorization.k8s.io", SYSTEM),
    deny("bind", "clusterroles.rbac.authorization.k8s.io", SYSTEM),
    deny("create", "rolebindings.rbac.authorization.k8s.io", SYSTEM),
    deny("impersonate", "users", SYSTEM),
    deny("impersonate", "serviceaccounts", SYSTEM),
    deny("impersonate", "groups", SYSTEM),
    deny("*", "*", SYSTEM),
]
AGENT_MATRIX = [
    # its namespace's Agents and Tasks, read
    *(allow(verb, kind, TEAM) for kind in ("agents.qorch.io", "tasks.qorch.io") for verb in ("get", "list", "watch")),
    # claims and reports: Task status, by patch
    allow("patch", "tasks.qorch.io", TEAM, subresource="status"),
    deny("update", "tasks.qorch.io", TEAM, subresource="status"),
    deny("patch", "agents.qorch.io", TEAM, subresource="status"),
    deny("patch", "approvals.qorch.io", TEAM, subresource="status"),
    *(deny(verb, "tasks.qorch.io", TEAM) for verb in ("create", "update", "patch", "delete")),
    allow("create", "agents.qorch.io", TEAM),  # `qorch agent run` creates its Agent when none exists
    *(deny(verb, "agents.qorch.io", TEAM) for verb in ("update", "patch", "delete")),
    deny("get", "approvals.qorch.io", TEAM),
    deny("create", "approvals.qorch.io", TEAM),
    deny("get", "schedulingpolicies.qorch.io", TEAM),
    # its liveness Lease
    *(allow(verb, "leases.coordination.k8s.io", TEAM) for verb in ("create", "get", "update", "patch")),
    allow("get", "leases.coordination.k8s.io", TEAM, name="qorch-agent-a"),
    deny("delete", "leases.coordination.k8s.io", TEAM, name="qorch-agent-a"),
    # nothing in another namespace
    deny("patch", "tasks.qorch.io", OTHER_TEAM, subresource="status"),
    deny("get", "tasks.qorch.io", OTHER_TEAM),
    deny("list", "agents.qorch.io", OTHER_TEAM),
    deny("update", "leases.coordination.k8s.io", OTHER_TEAM, name="qorch-agent-a"),
    deny("create", "leases.coordination.k8s.io", OTHER_TEAM),
    deny("update", "leases.coordination.k8s.io", SYSTEM, name="qorch-operator"),
    # nothing else
    *(deny(verb, "secrets", TEAM) for verb in ("get", "list")),
    deny("create", "pods", TEAM),
    deny("create", "events", TEAM),
    deny("escalate", "clusterroles.rbac.authorization.k8s.io", TEAM),
    deny("bind", "clusterroles.rbac.authorization.k8s.io", TEAM),
    deny("impersonate", "serviceaccounts", TEAM),
    deny("*", "*", TEAM),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Kubectl]:
    """Admin kubectl on a control plane of this module's own (see the module's docstring)."""
    try:
        plane = ControlPlane()
        plane.binaries  # noqa: B018 - resolve now, to fail with a clear message
    except AssetsNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    with plane:
        yield Kubectl(plane.binaries.kubectl, plane.admin_kubeconfig)


@pytest.fixture(scope="module")
def installed(cluster: Kubectl) -> subprocess.CompletedProcess[str]:
    """`kubectl apply -k manifests/overlays/dev` on the fresh cluster: the README's whole install."""
    return cluster.run("apply", "-k", str(OVERLAYS["dev"]), check=False)


def render(kubectl: Kubectl, folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` builds from a folder."""
    return [doc for doc in yaml.safe_load_all(kubectl("kustomize", str(folder))) if doc]


def the(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name."""
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def wrong_cells(kubectl: Kubectl, user: str, matrix: list[Cell]) -> list[str]:
    """Every cell whose answer differs from the expectation, with what kubectl said."""
    wrong = []
    for cell in matrix:
        done = kubectl.run(*cell.argv(user), check=False)
        answer = done.stdout.strip().splitlines()[:1]
        if done.returncode not in {0, 1} or answer not in (["yes"], ["no"]):
            wrong.append(f"{cell}, but kubectl failed: {done.stderr.strip()}")
        elif (answer == ["yes"]) != cell.allowed:
            wrong.append(f"{cell}, got {answer[0]}")
    return wrong


def test_the_dev_overlay_installs_in_one_command(installed: subprocess.CompletedProcess[str]) -> None:
    """On a fresh cluster `kubectl apply -k manifests/overlays/dev` creates everything and exits 0."""
    assert installed.returncode == 0, installed.stderr
    for created in (
        "namespace/qorch-system",
        "customresourcedefinition.apiextensions.k8s.io/tasks.qorch.io",
        "serviceaccount/qorch-operator",
        "clusterrole.rbac.authorization.k8s.io/qorch-agent",
        "deployment.apps/qorch-operator",
        "networkpolicy.networking.k8s.io/qorch-operator",
        "validatingadmissionpolicy.admissionregistration.k8s.io/qorch-approval-approver",
        "validatingadmissionpolicy.admissionregistration.k8s.io/qorch-task-status-writer",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/qorch-task-status-writer",
    ):
        assert f"{created} created" in installed.stdout


@pytest.mark.usefixtures("installed")
def test_the_default_policy_applies_after_the_install(cluster: Kubectl) -> None:
    """manifests/scheduling-policy, left out of the base (its CRD must be served first), applies once it is."""
    done = cluster.run("apply", "-k", str(MANIFESTS / "scheduling-policy"), check=False)
    assert done.returncode == 0, done.stderr
    assert "schedulingpolicy.qorch.io/default" in done.stdout


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    "folder", [BASE, *OVERLAYS.values(), MANIFESTS / "scheduling-policy"], ids=["base", *OVERLAYS, "scheduling-policy"]
)
def test_every_overlay_passes_a_server_dry_run(cluster: Kubectl, folder: Path) -> None:
    """The apiserver (schemas, CEL rules, admission) accepts every object of the base and each overlay."""
    done = cluster.run("apply", "--dry-run=server", "-k", str(folder), check=False)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


@pytest.mark.usefixtures("installed")
def test_the_production_pod_is_admitted_under_pod_security_restricted(cluster: Kubectl) -> None:
    """qorch-system enforces `restricted`, and a Pod of the production Deployment's template is admitted there.

    Pod Security only warns about a Deployment; it enforces on Pods, which no kubelet or
    controller makes here, so the Pod is created by hand (server-side dry run). A Pod
    that allows privilege escalation is refused, proving that enforcement is on.
    """
    labels = cluster.json("get", "namespace", SYSTEM)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    deployment = the(render(cluster, OVERLAYS["production"]), "Deployment", "qorch-operator")
    created = cluster.run("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(deployment), check=False)
    assert created.returncode == 0, created.stderr
    assert "PodSecurity" not in created.stderr, created.stderr
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "qorch-operator-restricted", "namespace": SYSTEM, **template["metadata"]},
        "spec": template["spec"],
    }
    admitted = cluster.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)
    assert admitted.returncode == 0, admitted.stderr
    assert "PodSecurity" not in admitted.stderr, admitted.stderr
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    refused = cluster.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr


def test_the_overlays_differ_as_documented(cluster: Kubectl) -> None:
    """dev: one replica, debug logs; production: two replicas, a PDB, topology spread, requests and limits."""
    dev = the(render(cluster, OVERLAYS["dev"]), "Deployment", "qorch-operator")
    assert dev["spec"]["replicas"] == 1
    env = {e["name"]: e.get("value") for e in dev["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QORCH_LOG_LEVEL"] == "DEBUG"
    production = render(cluster, OVERLAYS["production"])
    deployment = the(production, "Deployment", "qorch-operator")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert {c["topologyKey"] for c in pod["spec"]["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    resources = pod["spec"]["containers"][0]["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]
    budget = the(production, "PodDisruptionBudget", "qorch-operator")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_no_role_has_wildcards_secrets_or_escalation(cluster: Kubectl) -> None:
    """Every rule of every Role and ClusterRole names its verbs and resources; none touches Secrets or RBAC powers."""
    bad = []
    for obj in render(cluster, BASE):
        if obj["kind"] not in {"Role", "ClusterRole"}:
            continue
        for rule in obj["rules"]:
            where = f"{obj['kind']} {obj['metadata']['name']}: {rule}"
            if {"*"} & {*rule.get("apiGroups", ()), *rule["resources"]} or FORBIDDEN_VERBS & set(rule["verbs"]):
                bad.append(where)
            if "secrets" in rule["resources"] or rule.get("nonResourceURLs"):
                bad.append(where)
    assert not bad, "\n".join(bad)


@pytest.mark.usefixtures("installed")
def test_the_operator_may_do_what_it_needs_and_nothing_else(cluster: Kubectl) -> None:
    """`kubectl auth can-i --as=<the operator's ServiceAccount>` over the whole matrix, allowed and denied cells."""
    wrong = wrong_cells(cluster, OPERATOR, OPERATOR_MATRIX)
    assert not wrong, f"{len(wrong)} of {len(OPERATOR_MATRIX)} cells wrong:\n" + "\n".join(wrong)


@pytest.mark.usefixtures("installed")
def test_an_agent_bound_in_its_namespace_may_work_there_only(cluster: Kubectl) -> None:
    """An agent's ServiceAccount, bound to the qorch-agent ClusterRole by a RoleBinding, as docs/install.md says."""
    for namespace in (TEAM, OTHER_TEAM):
        if cluster.run("get", "namespace", namespace, check=False).returncode != 0:
            cluster("create", "namespace", namespace)
    cluster("create", "serviceaccount", "agent", f"--namespace={TEAM}")
    cluster(
        "create",
        "rolebinding",
        "qorch-agent",
        f"--namespace={TEAM}",
        "--clusterrole=qorch-agent",
        f"--serviceaccount={TEAM}:agent",
    )
    wrong = wrong_cells(cluster, AGENT, AGENT_MATRIX)
    assert not wrong, f"{len(wrong)} of {len(AGENT_MATRIX)} cells wrong:\n" + "\n".join(wrong)
