"""The GitOps examples hold together: Argo CD and Flux objects of today's APIs, pointing at folders of this repository.

examples/gitops/argocd/ and examples/gitops/flux/ each install qorch from a production
overlay and keep the users' objects (examples/gitops/workloads) in sync, in that order.
Parsed here, without a cluster; tests/e2e/test_gitops.py applies the workloads for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
GITOPS = ROOT / "examples" / "gitops"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
INSTALL, WORKLOADS = "manifests/overlays/production", "examples/gitops/workloads"

ARGO_APPLICATION = ("argoproj.io/v1alpha1", "Application")
FLUX_SOURCE = ("source.toolkit.fluxcd.io/v1", "GitRepository")
FLUX_KUSTOMIZATION = ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")
SYNC_WAVE = "argocd.argoproj.io/sync-wave"


def documents(folder: Path) -> list[dict[str, Any]]:
    """Every YAML document of a folder's .yaml files."""
    return [d for path in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]


def kind_of(doc: dict[str, Any]) -> tuple[str, str]:
    """(apiVersion, kind)."""
    return doc["apiVersion"], doc["kind"]


def kustomization_in(folder: Path) -> dict[str, Any] | None:
    """A folder's kustomization, under any name kustomize accepts."""
    found = next((folder / n for n in KUSTOMIZATION_NAMES if (folder / n).is_file()), None)
    return yaml.safe_load(found.read_text()) if found else None


def built(folder: Path, namespace: str | None = None) -> list[tuple[dict[str, Any], str | None]]:
    """The objects a kustomize build of `folder` holds, each with the namespace a kustomization sets on it.

    Only what these trees use: `resources` (files and folders) and `namespace` (a parent's wins).
    """
    kustomization = kustomization_in(folder)
    assert kustomization is not None, f"{folder.relative_to(ROOT)} has no kustomization"
    namespace = namespace or kustomization.get("namespace")
    objects: list[tuple[dict[str, Any], str | None]] = []
    for entry in kustomization.get("resources") or ():
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder.relative_to(ROOT)}: resource {entry} does not exist"
        if path.is_dir():
            objects += built(path, namespace)
        else:
            objects += [(d, namespace) for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def crd_scopes() -> dict[str, str]:
    """Kind -> scope of qorch's CRDs."""
    crds = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    return {c["spec"]["names"]["kind"]: c["spec"]["scope"] for c in crds}


def argo() -> dict[str, dict[str, Any]]:
    """The Argo CD Applications by their source path."""
    apps = documents(GITOPS / "argocd")
    assert {kind_of(a) for a in apps} == {ARGO_APPLICATION}
    return {a["spec"]["source"]["path"]: a for a in apps}


def flux() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The Flux sources, and the Flux Kustomizations by their path (without the leading ./)."""
    docs = documents(GITOPS / "flux")
    assert {kind_of(d) for d in docs} == {FLUX_SOURCE, FLUX_KUSTOMIZATION}
    sources = [d for d in docs if kind_of(d) == FLUX_SOURCE]
    kustomizations = [d for d in docs if kind_of(d) == FLUX_KUSTOMIZATION]
    return sources, {k["spec"]["path"].removeprefix("./"): k for k in kustomizations}


def test_every_gitops_example_opens_with_a_comment_saying_what_it_does() -> None:
    """As every example does (tests/integration/api/test_crds.py checks examples/*.yaml)."""
    files = sorted(GITOPS.rglob("*.yaml"))
    assert len(files) >= 10
    assert not [str(p.relative_to(ROOT)) for p in files if not p.read_text().startswith("#")]


@pytest.mark.parametrize("path", [INSTALL, WORKLOADS])
def test_both_tools_point_at_the_same_kustomize_folders_of_this_repository(path: str) -> None:
    """The install (a production overlay) and the users' objects: folders that exist and that kustomize builds."""
    assert kustomization_in(ROOT / path) is not None
    assert path in argo()
    assert path in flux()[1]
    assert flux()[1][path]["spec"]["path"] == f"./{path}"  # Flux paths are relative to the source root


def test_argo_cd_applications_apply_server_side_and_sync_the_install_first() -> None:
    """ServerSideApply=true, automated sync with pruning; wave 0 installs, wave 1 the users' objects, with retries."""
    apps = argo()
    install, workloads = apps[INSTALL], apps[WORKLOADS]
    for app in apps.values():
        spec = app["spec"]
        assert app["metadata"]["namespace"] == "argocd"
        assert spec["project"] == "default"
        assert spec["source"]["repoURL"] == install["spec"]["source"]["repoURL"]
        assert spec["source"]["targetRevision"]
        assert spec["destination"]["server"] == "https://kubernetes.default.svc"
        assert "ServerSideApply=true" in spec["syncPolicy"]["syncOptions"]
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        assert "ignoreDifferences" not in spec  # status is never drift: qorch writes only /status
    assert int(install["metadata"]["annotations"][SYNC_WAVE]) < int(workloads["metadata"]["annotations"][SYNC_WAVE])
    assert workloads["spec"]["syncPolicy"]["retry"]["limit"] < 0  # until the CRDs are served
    assert "SkipDryRunOnMissingResource=true" in workloads["spec"]["syncPolicy"]["syncOptions"]
    # Deleting the install Application must not delete the CRDs, and with them every Task.
    assert "resources-finalizer.argocd.argoproj.io" not in install["metadata"].get("finalizers", [])


def test_flux_kustomizations_read_one_git_source_and_the_users_wait_for_the_install() -> None:
    """Each sourceRef names the GitRepository; qorch-workloads dependsOn qorch, which waits for its objects."""
    sources, kustomizations = flux()
    assert len(sources) == 1
    source = sources[0]
    assert source["spec"]["url"] == argo()[INSTALL]["spec"]["source"]["repoURL"]
    assert source["spec"]["interval"]
    assert source["spec"]["ref"]["branch"] == argo()[INSTALL]["spec"]["source"]["targetRevision"]
    for kustomization in kustomizations.values():
        spec = kustomization["spec"]
        assert kustomization["metadata"]["namespace"] == source["metadata"]["namespace"] == "flux-system"
        assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
        assert spec["interval"]
        assert spec["prune"] is True  # a required field of the v1 API
        assert "targetNamespace" not in spec  # see test_workloads_set_namespaces_only_on_namespaced_kinds
    install, workloads = kustomizations[INSTALL], kustomizations[WORKLOADS]
    assert workloads["spec"]["dependsOn"] == [{"name": install["metadata"]["name"]}]
    assert install["spec"]["wait"] is True  # Ready only once the CRDs are Established and the operator runs
    assert install["spec"]["deletionPolicy"] == "Orphan"  # deleting it must not delete the CRDs


def test_the_install_holds_the_crds_and_no_custom_resource_and_the_workloads_the_reverse() -> None:
    """CRDs come with the install, custom resources with the users' objects: hence the ordering of the two."""
    install = [d for d, _ in built(ROOT / INSTALL)]
    workloads = [d for d, _ in built(ROOT / WORKLOADS)]
    scopes = crd_scopes()
    installed = {d["spec"]["names"]["kind"] for d in install if d["kind"] == "CustomResourceDefinition"}
    assert installed == set(scopes)
    assert not [d for d in install if d["apiVersion"].startswith("qorch.io/")]
    assert not [d for d in workloads if d["kind"] == "CustomResourceDefinition"]
    kinds = {d["kind"] for d in workloads if d["apiVersion"] == "qorch.io/v1alpha1"}
    assert kinds == {"SchedulingPolicy", "Agent", "Task"}
    assert sum(d["kind"] == "SchedulingPolicy" for d in workloads) == 1  # one owner of `default`
    assert not [d for d in workloads if "status" in d]  # Git declares spec; status is qorch's
    namespaces = {d["metadata"]["name"] for d in install if d["kind"] == "Namespace"}
    assert argo()[INSTALL]["spec"]["destination"]["namespace"] in namespaces


def test_workloads_set_namespaces_only_on_namespaced_kinds() -> None:
    """kustomize's `namespace:` would stamp one onto the cluster-scoped SchedulingPolicy (it cannot know a CRD's scope).

    So the namespaced objects sit in a folder whose kustomization sets the namespace, the
    policy outside it, and neither Argo CD nor Flux is asked to set one (no targetNamespace).
    """
    scopes = crd_scopes()
    objects = built(ROOT / WORKLOADS)
    team = {d["metadata"]["name"] for d, _ in objects if d["kind"] == "Namespace"}
    assert len(team) == 1
    for doc, namespace in objects:
        name = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] == "Namespace":  # kustomize knows the built-in kinds' scopes
            continue
        if scopes.get(doc["kind"]) == "Cluster":
            assert namespace is None, f"{name} is cluster-scoped but gets namespace {namespace}"
        else:
            assert (doc["metadata"].get("namespace") or namespace) in team, f"{name} lands outside {team}"
    assert argo()[WORKLOADS]["spec"]["destination"]["namespace"] in team
