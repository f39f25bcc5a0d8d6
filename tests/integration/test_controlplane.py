"""The local control plane is a real Kubernetes API: versioned, healthy, RBAC-enforcing."""

from __future__ import annotations

import json
import textwrap

import pytest

from qorch.devcluster import _assets
from qorch.testing import Kubectl

pytestmark = pytest.mark.integration

WIDGET_CRD = textwrap.dedent("""
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: widgets.example.qorch.io}
    spec:
      group: example.qorch.io
      names: {kind: Widget, plural: widgets, singular: widget}
      scope: Namespaced
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec: {type: object, properties: {size: {type: integer}}}
""")


def test_kubectl_version_reports_the_server_version(kubectl: Kubectl) -> None:
    """`kubectl version` shows the Kubernetes version we built, stamped via ldflags."""
    info = json.loads(kubectl("version", "-o", "json"))
    assert info["serverVersion"]["gitVersion"] == f"v{_assets.k8s_version()}"
    assert info["clientVersion"]["gitVersion"] == f"v{_assets.k8s_version()}"


def test_healthz_answers_ok(kubectl: Kubectl) -> None:
    """`kubectl get --raw /healthz` answers ok."""
    assert kubectl("get", "--raw", "/healthz") == "ok"


def test_applied_crd_becomes_established(kubectl: Kubectl) -> None:
    """A CRD applied with kubectl is Established and serves its resource."""
    kubectl.apply(WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.example.qorch.io", "--timeout=30s")
    kubectl.apply("apiVersion: example.qorch.io/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}\n")
    assert kubectl.json("get", "widget", "w")["spec"]["size"] == 3


def test_non_admin_is_forbidden_until_a_rolebinding_allows_it(
    kubectl: Kubectl, qorch_kubeconfig_for, qorch_namespace: str
) -> None:
    """A minted non-admin user gets 403, then succeeds once RBAC grants the verb."""
    alice = kubectl.with_kubeconfig(qorch_kubeconfig_for("alice", ["qorch-test-users"]))
    denied = alice.run("get", "configmaps", check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert 'User "alice" cannot list resource "configmaps"' in denied.stderr

    kubectl("create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps")
    kubectl("create", "rolebinding", "alice-reads", "--role=cm-reader", "--user=alice")
    listed = alice.json("get", "configmaps")
    assert listed["kind"] == "List"
    # RBAC scopes it: another namespace stays forbidden.
    assert alice.run("get", "configmaps", "-n", "default", check=False).returncode != 0
    assert qorch_namespace.startswith("t-")


def test_groups_from_the_certificate_are_honoured(kubectl: Kubectl, qorch_kubeconfig_for) -> None:
    """The O= of a minted certificate is the user's group, which RBAC can bind."""
    bob = kubectl.with_kubeconfig(qorch_kubeconfig_for("bob", ["auditors"]))
    assert bob.run("get", "secrets", check=False).returncode != 0
    kubectl("create", "role", "secret-reader", "--verb=list", "--resource=secrets")
    kubectl("create", "rolebinding", "auditors-read", "--role=secret-reader", "--group=auditors")
    assert bob.run("get", "secrets").returncode == 0
    who = bob.json("auth", "whoami")
    assert who["status"]["userInfo"]["username"] == "bob"
    assert "auditors" in who["status"]["userInfo"]["groups"]
