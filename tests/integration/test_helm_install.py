"""charts/qorch renders the objects of manifests/, and installs with helm on a real kube-apiserver.

`helm template` of the chart with values.yaml, values-dev.yaml and values-production.yaml
is compared object by object with `kubectl kustomize` of manifests/base, overlays/dev and
overlays/production. The one documented difference: Helm's labels (HELM_LABELS) on every
object and pod template, which the comparison drops. The RBAC objects being equal, the
can-i matrix of test_install_manifests.py holds for the chart too.

Then the chart is installed for real, as docs/install.md says, on a control plane of this
module's own (the install makes cluster-wide objects and a restricted namespace, see
test_install_manifests.py), upgraded to the dev values, and every variant passes a server
dry run.

helm is built from the Go module proxy by `make helm` (hack/helm/build.sh); without it the
tests fail, never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from qorch.devcluster import AssetsNotFoundError, ControlPlane, find_binaries
from qorch.testing import Kubectl

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "qorch"
MANIFESTS = ROOT / "manifests"
SYSTEM = "qorch-system"
HELM_VERSION = os.environ.get("QORCH_HELM_VERSION", "3.22.0")
# What Helm adds and kustomize does not: the chart, the release, the tool and the app version.
HELM_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
}
# values file -> the kustomization whose output the chart must equal with it.
VARIANTS = {
    "values.yaml": MANIFESTS / "base",
    "values-dev.yaml": MANIFESTS / "overlays" / "dev",
    "values-production.yaml": MANIFESTS / "overlays" / "production",
}

Key = tuple[str, str, str, str]
Render = Callable[..., list[dict[str, Any]]]


def cache_root() -> Path:
    """Where `make helm` and `make controlplane` put what they build."""
    if explicit := os.environ.get("QORCH_CACHE_DIR"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qorch"


def run(*argv: str | Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; with `check`, fail with its stderr unless it exits 0."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, env=env)
    if check:
        assert done.returncode == 0, f"{' '.join(map(str, argv))}:\n{done.stderr}"
    return done


@dataclass(frozen=True)
class Helm:
    """The helm binary, with its config, cache and data under a folder of the test's own."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def __call__(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `helm args...`."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            **{f"HELM_{part}_HOME": str(self.home / part.lower()) for part in ("CACHE", "CONFIG", "DATA")},
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return run(self.binary, *args, env=env, check=check)

    def against(self, kubeconfig: Path) -> Helm:
        """The same helm, talking to the cluster of `kubeconfig`."""
        return Helm(self.binary, self.home, kubeconfig)


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm: $QORCH_HELM, or what hack/helm/build.sh built."""
    path = Path(os.environ.get("QORCH_HELM") or cache_root() / f"helm-v{HELM_VERSION}" / "helm")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no helm at {path}: run `make helm` (builds it from the Go module proxy)", pytrace=False)
    return Helm(path, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def kubectl_binary() -> Path:
    """The kubectl of the local control plane's binaries (kustomize is built in)."""
    try:
        return find_binaries().kubectl
    except AssetsNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


def documents(text: str) -> list[dict[str, Any]]:
    """The objects of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def kube_version(kubectl_binary: Path) -> str:
    """The Kubernetes version of the local binaries (`helm template` assumes v1.20 otherwise, below kubeVersion)."""
    out = run(kubectl_binary, "version", "--client", "-o", "json").stdout
    version: str = json.loads(out)["clientVersion"]["gitVersion"]
    return version


@pytest.fixture(scope="module")
def template(helm: Helm, kube_version: str) -> Render:
    """`helm template` of the chart as release qorch into qorch-system, CRDs included, with extra arguments."""

    def render(*args: str) -> list[dict[str, Any]]:
        argv = ["template", "qorch", CHART, f"--namespace={SYSTEM}", f"--kube-version={kube_version}"]
        return documents(helm(*argv, "--include-crds", *args).stdout)

    return render


def without_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy with HELM_LABELS dropped from metadata.labels and from a pod template's labels."""
    obj = json.loads(json.dumps(obj))
    holders = [obj.get("metadata") or {}, ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}]
    for metadata in holders:
        labels = metadata.get("labels") or {}
        for key in HELM_LABELS & set(labels):
            del labels[key]
    return obj


def key(obj: dict[str, Any]) -> Key:
    """apiVersion, kind, namespace and name."""
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]


def by_key(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Objects by key, none twice."""
    found = {key(o): o for o in objects}
    assert len(found) == len(objects), "an object is rendered twice"
    return found


@pytest.mark.parametrize("values", sorted(VARIANTS))
def test_the_chart_renders_the_kustomize_objects(template: Render, kubectl_binary: Path, values: str) -> None:
    """With each values file, the chart's objects equal the matching kustomize output, but Helm's labels."""
    rendered = template("-f", CHART / values)
    kustomized = documents(run(kubectl_binary, "kustomize", VARIANTS[values]).stdout)
    charted, expected = by_key(rendered), by_key(kustomized)
    assert sorted(charted) == sorted(expected)
    differ = [k for k in expected if without_helm_labels(charted[k]) != expected[k]]
    assert not differ, "\n\n".join(
        f"{' '.join(k)}:\nhelm:      {without_helm_labels(charted[k])}\nkustomize: {expected[k]}" for k in differ
    )
    for obj in rendered:
        if obj["kind"] == "CustomResourceDefinition":
            continue  # crds/ is installed as it is, never templated
        labels = obj["metadata"]["labels"]
        assert set(labels) >= HELM_LABELS, f"{' '.join(key(obj))} lacks Helm's labels"
        assert labels["app.kubernetes.io/instance"] == "qorch"


def test_the_crds_come_unchanged_from_crds(template: Render) -> None:
    """Helm installs charts/qorch/crds/ as they are: the same objects as the top-level crds/."""
    crds = {key(o): o for o in template() if o["kind"] == "CustomResourceDefinition"}
    source = {key(o): o for p in sorted((ROOT / "crds").glob("*.yaml")) for o in documents(p.read_text())}
    assert crds == source


def test_the_switches_do_what_values_yaml_says(template: Render) -> None:
    """namespace.create, rbac.metricsAuth, the image and the PDB each change only their objects or fields."""
    full = by_key(template())
    no_namespace = by_key(template("--set", "namespace.create=false"))
    assert set(full) - set(no_namespace) == {("v1", "Namespace", "", SYSTEM)}
    no_auth = by_key(template("--set", "rbac.metricsAuth=false"))
    assert {k[3] for k in set(full) - set(no_auth)} == {"qorch-operator-metrics-auth"}
    image = by_key(template("--set", "image.repository=mirror.example.test/qorch-operator", "--set", "image.tag=9"))
    [container] = image[("apps/v1", "Deployment", SYSTEM, "qorch-operator")]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mirror.example.test/qorch-operator:9"
    budget = by_key(
        template("--set", "podDisruptionBudget.enabled=true", "--set", "podDisruptionBudget.maxUnavailable=2")
    )
    assert budget[("policy/v1", "PodDisruptionBudget", SYSTEM, "qorch-operator")]["spec"]["maxUnavailable"] == 2


@pytest.mark.parametrize("values", sorted(VARIANTS))
def test_helm_lint_passes(helm: Helm, kube_version: str, values: str) -> None:
    """`helm lint --strict` finds nothing wrong with each values file."""
    out = helm("lint", "--strict", f"--kube-version={kube_version}", CHART, "-f", CHART / values).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


# ---------------------------------------------------------------- against the apiserver


@pytest.fixture(scope="module")
def cluster() -> Iterator[Kubectl]:
    """Admin kubectl on a control plane of this module's own."""
    try:
        plane = ControlPlane()
        plane.binaries  # noqa: B018 - resolve now, to fail with a clear message
    except AssetsNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    with plane:
        yield Kubectl(plane.binaries.kubectl, plane.admin_kubeconfig)


@pytest.fixture(scope="module")
def installed(cluster: Kubectl, helm: Helm) -> Helm:
    """docs/install.md's Helm install of the production values, on the fresh cluster; helm against it."""
    against = helm.against(cluster.kubeconfig)
    cluster("create", "namespace", SYSTEM)
    against("install", "qorch", CHART, "-n", SYSTEM, "--take-ownership", "-f", CHART / "values-production.yaml")
    return against


def test_helm_install_creates_everything_and_labels_the_namespace(installed: Helm, cluster: Kubectl) -> None:
    """The release is deployed, the CRDs are served, and the namespace it adopted enforces `restricted`."""
    status = json.loads(installed("status", "qorch", "-n", SYSTEM, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    labels = cluster.json("get", "namespace", SYSTEM)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    cluster("wait", "--for=condition=Established", "crd/tasks.qorch.io", "crd/agents.qorch.io", "--timeout=60s")
    for obj in ("deployment/qorch-operator", "poddisruptionbudget/qorch-operator", "networkpolicy/qorch-operator"):
        cluster("get", obj, "-n", SYSTEM)
    cluster("get", "validatingadmissionpolicy/qorch-approval-approver", "clusterrole/qorch-agent")
    cluster("get", "validatingadmissionpolicy/qorch-task-status-writer")
    cluster("get", "validatingadmissionpolicybinding/qorch-task-status-writer")
    deployment = cluster.json("get", "deployment", "qorch-operator", "-n", SYSTEM)
    assert deployment["spec"]["replicas"] == 2


def test_helm_upgrade_to_the_dev_values(installed: Helm, cluster: Kubectl) -> None:
    """An upgrade to values-dev.yaml makes one replica with debug logs and a NodePort, and drops the PDB."""
    installed("upgrade", "qorch", CHART, "-n", SYSTEM, "-f", CHART / "values-dev.yaml")
    deployment = cluster.json("get", "deployment", "qorch-operator", "-n", SYSTEM)
    assert deployment["spec"]["replicas"] == 1
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QORCH_LOG_LEVEL"] == "DEBUG"
    service = cluster.json("get", "service", "qorch-operator-metrics", "-n", SYSTEM)
    assert service["spec"]["ports"][0]["nodePort"] == 30080
    gone = cluster.run("get", "poddisruptionbudget", "qorch-operator", "-n", SYSTEM, check=False)
    assert gone.returncode != 0


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("values", sorted(VARIANTS))
def test_every_variant_passes_a_server_dry_run(cluster: Kubectl, template: Render, values: str) -> None:
    """The apiserver (schemas, CEL, admission, Pod Security warnings) accepts the helm output of each values file.

    Server-side apply, as the objects exist (helm made them, with no last-applied annotation).
    """
    stream = yaml.safe_dump_all(template("-f", CHART / values))
    apply = ["apply", "--server-side", "--force-conflicts", "--field-manager=qorch-test", "--dry-run=server"]
    done = cluster.run(*apply, "-f", "-", stdin=stream, check=False)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
