"""The operator and an agent runtime end to end under their ServiceAccounts' own tokens, never admin.

The RBAC objects come from `kubectl kustomize manifests/base` (the operator's
ServiceAccount, ClusterRoles, Role and bindings, and the `qorch-agent` ClusterRole),
and the agent's ServiceAccount is bound in the test's namespace exactly as
docs/install.md tells a user to. Each process gets a kubeconfig that holds nothing but
the cluster's CA and a token from the TokenRequest API (`kubectl create token`), so
every call it makes is authorised by the real apiserver's RBAC against the manifests:
a permission the manifests lack fails the run.

The session's control plane is shared: the RBAC objects are applied (idempotent), and
neither the `qorch-system` namespace's Pod Security labels nor anything else of the base
is installed here.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from qorch.devcluster import ControlPlane
from qorch.devcluster._kubeconfig import with_token
from qorch.testing import Kubectl
from support.api import Api
from support.manifests import approval, policy, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
SYSTEM = "qorch-system"
OPERATOR_SA = "qorch-operator"
OPERATOR_USER = f"system:serviceaccount:{SYSTEM}:{OPERATOR_SA}"
AGENT_SA = "agent"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
FORBIDDEN = re.compile(r"\b403\b|[Ff]orbidden")


def base_rbac(admin: Kubectl) -> list[dict[str, Any]]:
    """The base's ServiceAccount, (Cluster)Roles and (Cluster)RoleBindings, as `kubectl kustomize` renders them."""
    rendered = yaml.safe_load_all(admin("kustomize", str(ROOT / "manifests" / "base")))
    return [doc for doc in rendered if doc and doc["kind"] in RBAC_KINDS]


def token_kubeconfig(admin_kubeconfig: Path, token: str, user: str, path: Path) -> Path:
    """A kubeconfig with the admin kubeconfig's server and CA, and `token` as its only credential."""
    return with_token(path, admin=admin_kubeconfig, user=user, token=token)


class Bearer:
    """Raw HTTPS calls with a bearer token, to see the apiserver's own status codes."""

    def __init__(self, kubeconfig: Path) -> None:
        """Server, CA and token from a token kubeconfig."""
        config = yaml.safe_load(kubeconfig.read_text())
        [cluster], [user] = config["clusters"], config["users"]
        ca = Path(tempfile.mkdtemp(prefix="qorch-test-bearer-")) / "ca.crt"
        ca.write_bytes(base64.b64decode(cluster["cluster"]["certificate-authority-data"]))
        self._tls = ssl.create_default_context(cafile=str(ca))
        self._server = str(cluster["cluster"]["server"]).rstrip("/")
        self._token = str(user["user"]["token"])

    def status(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> int:
        """The HTTP status the apiserver answers."""
        request = urllib.request.Request(  # noqa: S310
            self._server + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(request, context=self._tls, timeout=10) as resp:  # noqa: S310
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


def managers(obj: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(manager, operation, subresource) of every managedFields entry."""
    return {(m["manager"], m["operation"], m.get("subresource", "")) for m in obj["metadata"].get("managedFields", [])}


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 time of the API (micro or whole seconds)."""
    return dt.datetime.fromisoformat(value)


@pytest.fixture
def admin(qorch_control_plane: ControlPlane, qorch_crds: list[str], qorch_namespace: str) -> Kubectl:
    """Admin kubectl in this test's namespace: installs the RBAC, submits and approves Tasks as a user would, reads."""
    del qorch_crds
    return Kubectl(qorch_control_plane.binaries.kubectl, qorch_control_plane.admin_kubeconfig, qorch_namespace)


@pytest.fixture
def kubeconfigs(admin: Kubectl, qorch_control_plane: ControlPlane, tmp_path: Path) -> dict[str, Path]:
    """The base's RBAC applied, the agent bound as docs/install.md says, and a TokenRequest kubeconfig for each."""
    cluster = admin.in_namespace(None)
    if cluster.run("get", "namespace", SYSTEM, check=False).returncode != 0:
        cluster("create", "namespace", SYSTEM)
    rbac = base_rbac(cluster)
    assert {(o["kind"], o["metadata"]["name"]) for o in rbac} >= {
        ("ServiceAccount", OPERATOR_SA),
        ("ClusterRole", "qorch-operator"),
        ("ClusterRoleBinding", "qorch-operator"),
        ("Role", "qorch-operator-leader-election"),
        ("RoleBinding", "qorch-operator-leader-election"),
        ("ClusterRole", "qorch-agent"),
    }
    cluster.apply(yaml.safe_dump_all(rbac))
    admin("create", "serviceaccount", AGENT_SA)
    # docs/install.md: kubectl create rolebinding qorch-agent -n TEAM --clusterrole=qorch-agent \
    #   --serviceaccount=TEAM:AGENT_SA
    admin(
        "create",
        "rolebinding",
        "qorch-agent",
        "--clusterrole=qorch-agent",
        f"--serviceaccount={admin.namespace}:{AGENT_SA}",
    )
    tokens = {
        "operator": cluster("create", "token", OPERATOR_SA, f"--namespace={SYSTEM}", "--duration=1h").strip(),
        "agent": admin("create", "token", AGENT_SA, "--duration=1h").strip(),
    }
    return {
        who: token_kubeconfig(qorch_control_plane.admin_kubeconfig, token, who, tmp_path / f"{who}.kubeconfig")
        for who, token in tokens.items()
    }


def whoami(admin: Kubectl, kubeconfig: Path) -> dict[str, Any]:
    """`kubectl auth whoami` with that kubeconfig: the user the apiserver authenticated (a SelfSubjectReview)."""
    review = json.loads(admin.with_kubeconfig(kubeconfig).in_namespace(None)("auth", "whoami", "-o", "json"))
    return dict(review["status"]["userInfo"])


def assert_results(admin: Kubectl, tasks: dict[str, dict[str, Any]], names: list[str]) -> None:
    """Every handler's result in its Task, written through the status subresource by the two field managers."""
    for i, name in enumerate(names):
        result = json.loads(tasks[name]["status"]["execution"]["result"])
        assert result == {"echo": name, "agent": "sa-agent", "num": str(i)}
    assert tasks["after"]["status"]["execution"]["result"] == "done in a thread"
    assert json.loads(tasks["gated"]["status"]["execution"]["result"])["num"] == "gated"
    ran = [t for name, t in tasks.items() if name != "vetoed"]  # rejected: never assigned
    assert all(t["status"]["assignment"]["agent"] == "sa-agent" for t in ran)
    for t in ran:
        assert ("qorch-operator", "Update", "status") in managers(t), t["metadata"]["managedFields"]
        assert ("qorch-agent", "Update", "status") in managers(t), t["metadata"]["managedFields"]
        assert {m for m in managers(t) if m[0].startswith("qorch")} == {
            ("qorch-operator", "Update", "status"),
            ("qorch-agent", "Update", "status"),
        }
    assert admin.json("get", "qapproval", "veto")["status"]["taskUID"] == tasks["vetoed"]["metadata"]["uid"]
    assert admin.json("get", "schedulingpolicy", "default").get("status"), "no observables published"


def test_the_operator_and_an_agent_run_end_to_end_under_their_own_service_account_tokens(
    admin: Kubectl, kubeconfigs: dict[str, Path], operators: OperatorFleet, tmp_path: Path, api: Api
) -> None:
    """TokenRequest tokens, RBAC from manifests/: tasks scheduled, claimed, run and reported; Leases held by each."""
    ns = admin.namespace
    assert ns is not None
    agent_user = f"system:serviceaccount:{ns}:{AGENT_SA}"
    for who, user in (("operator", OPERATOR_USER), ("agent", agent_user)):
        config = yaml.safe_load(kubeconfigs[who].read_text())
        assert set(config["users"][0]["user"]) == {"token"}, "a token kubeconfig must carry no other credential"
        seen = whoami(admin, kubeconfigs[who])
        assert seen["username"] == user
        assert "system:serviceaccounts" in seen["groups"]
        assert "system:masters" not in seen["groups"]

    admin.apply(policy())  # the leader publishes its observables into the policy's status
    admin("patch", "schedulingpolicy", "default", "--subresource=status", "--type=merge", "-p", '{"status": null}')
    operator = operators.start("sa-operator", kubeconfig=kubeconfigs["operator"], health=True)
    runtime = Runtime(tmp_path, kubeconfigs["agent"], ns, "sa-agent", "--capabilities=code,sync", "--capacity=2")
    try:
        names = [f"job-{i}" for i in range(6)]
        bodies = [task(n, input={"num": str(i)}) for i, n in enumerate(names)]
        bodies.append(task("after", requires=("sync",), dependsOn=["job-0", "job-1"]))
        bodies.append(task("gated", approval={"required": True}, input={"num": "gated"}))
        bodies.append(task("vetoed", approval={"required": True}))
        admin("create", "-f", "-", stdin=yaml.safe_dump_all(bodies))
        wait_for(
            lambda: api.phases(ns).get("gated") == "AwaitingApproval",
            90,
            what=f"the gate; operator log:\n{operator.tail()}\nruntime log:\n{runtime.tail()}",
        )
        admin.apply(yaml.safe_dump(approval("go", "gated", of=admin.json("get", "qtask", "gated"))))
        admin.apply(yaml.safe_dump(approval("veto", "vetoed", "Reject")))  # bare: the operator binds it (status)
        ending = {b["metadata"]["name"]: "Succeeded" for b in bodies} | {"vetoed": "Cancelled"}
        wait_for(
            lambda: api.phases(ns) == ending,
            120,
            what=f"every task to succeed; operator log:\n{operator.tail()}\nruntime log:\n{runtime.tail()}",
        )
        assert_results(admin, {t["metadata"]["name"]: t for t in api.tasks(ns)}, names)

        # The runtime created its Agent (with its own token) and holds and renews its liveness Lease.
        created = admin.json("get", "qagent", "sa-agent")
        assert created["spec"]["capabilities"] == ["code", "sync"]
        assert created["status"]["phase"] == "Ready"
        first = admin.json("get", "lease", "qorch-agent-sa-agent")["spec"]
        assert first["holderIdentity"].split("/")[0] == "sa-agent"  # <agent>/<host>-<pid>
        wait_for(
            lambda: (
                parse_time(admin.json("get", "lease", "qorch-agent-sa-agent")["spec"]["renewTime"])
                > parse_time(first["renewTime"])
            ),
            10,
            what="the agent to renew its Lease",
        )
        # The operator took the leader Lease (qorch-operator in qorch-system) as its identity.
        leader = admin.in_namespace(SYSTEM).json("get", "lease", "qorch-operator")["spec"]
        assert leader["holderIdentity"] == "sa-operator", leader
        assert operator.metric("qorch_leader") == 1
        assert operator.healthz() == 200

        # Its Events (best effort, so a refusal would only be counted and logged at debug level) were created.
        events = admin.json("get", "events")["items"]
        assert [e for e in events if e.get("reportingInstance") == "sa-operator"], events
        assert operator.metric("qorch_events_dropped_total") == 0
        # Nothing was refused along the way: a permission the manifests lack shows up here.
        for log in (operator.log_text(), runtime.log.read_text(errors="replace")):
            refused = [line for line in log.splitlines() if FORBIDDEN.search(line)]
            assert not refused, "\n".join(refused[:10])
    finally:
        if runtime.popen.poll() is None:
            runtime.stop()
    # A clean shutdown releases the agent's Lease: a patch its Role allows.
    assert runtime.popen.returncode == 0, runtime.tail()
    assert not admin.json("get", "lease", "qorch-agent-sa-agent")["spec"].get("holderIdentity")


def test_the_operator_token_is_refused_what_the_role_does_not_grant(
    admin: Kubectl, kubeconfigs: dict[str, Path]
) -> None:
    """With the operator's own token the apiserver answers 403 to Secrets, a Task's spec and a Lease not its own."""
    ns = admin.namespace
    admin("create", "-f", "-", stdin=yaml.safe_dump(task("mine")))
    as_operator = admin.with_kubeconfig(kubeconfigs["operator"])
    secrets = as_operator.run("get", "secrets", f"--namespace={SYSTEM}", check=False)
    assert secrets.returncode != 0
    assert f'User "{OPERATOR_USER}" cannot list resource "secrets"' in secrets.stderr, secrets.stderr
    raw = Bearer(kubeconfigs["operator"])
    tasks = f"/apis/qorch.io/v1alpha1/namespaces/{ns}/tasks"
    spec_patch = {"spec": {"priority": 999}}
    assert raw.status("PATCH", f"{tasks}/mine", spec_patch, "application/merge-patch+json") == 403
    assert raw.status("DELETE", f"{tasks}/mine") == 403
    assert raw.status("GET", f"{tasks}/mine") == 200
    assert raw.status("GET", f"/api/v1/namespaces/{SYSTEM}/secrets") == 403
    other = {"spec": {"holderIdentity": "someone"}}
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    admin("create", "-f", "-", stdin=yaml.safe_dump(
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "qorch-agent-x"}, "spec": {}}
    ))  # fmt: skip
    assert raw.status("PATCH", f"{leases}/qorch-agent-x", other, "application/merge-patch+json") == 403
    assert admin.json("get", "qtask", "mine")["spec"].get("priority") != 999
    # The agent's token works in its namespace only.
    as_agent = Bearer(kubeconfigs["agent"])
    assert as_agent.status("GET", f"{tasks}/mine") == 200
    assert as_agent.status("GET", "/apis/qorch.io/v1alpha1/namespaces/default/tasks") == 403
    assert as_agent.status("GET", f"/api/v1/namespaces/{ns}/secrets") == 403
