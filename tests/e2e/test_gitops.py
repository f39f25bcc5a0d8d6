"""GitOps owns spec, qorch writes only status: a re-apply after a real run finds no conflict and no drift (issue 12).

The users' objects of examples/gitops/workloads (the SchedulingPolicy, Agents, Tasks)
are built with kustomize and applied server-side as field manager "gitops", as Argo CD
(`ServerSideApply=true`) and Flux do. A real operator and real agent runtimes run the
Tasks to the end; then the same objects are applied again, as the tools do on every sync.

Why the test fails if anything but GitOps writes spec (tried by hand, with a `kubectl
patch` or `kubectl label` just before the re-apply; none of it is kept here):
- a writer that changes a field Git declares takes that field from "gitops" (an Update
  moves ownership), so the re-apply, without --force-conflicts, exits 1: `Apply failed
  with 1 conflict: conflict with "kubectl-patch" using qorch.io/v1alpha1: .spec.priority`;
- a writer that adds what Git does not declare (`spec.cancel`, a label) leaves the
  re-apply and the diff clean, as neither touches fields Git does not name, but not
  managedFields: "unexpected manager 'kubectl-label' (Update)"; and a spec write after the
  run changes the generation the test compares.
Argo CD and Flux apply with forced conflicts, so in a cluster the first case would not
fail: they would silently take the field back, and the other writer would set it again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qorch.api import constants
from qorch.testing import Kubectl
from support.api import Api
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

WORKLOADS = Path(__file__).parents[2] / "examples" / "gitops" / "workloads"
TEAM = "team-a"  # the namespace of the example; the test's own namespace stands in for it
GITOPS = "gitops"
STATUS_WRITERS = {constants.OPERATOR_FIELD_MANAGER, constants.AGENT_FIELD_MANAGER}
PLURALS = {"SchedulingPolicy": "schedulingpolicies", "Agent": "agents", "Task": "tasks"}


def users_objects(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    """The example built as Argo CD and Flux build it (kustomize), moved from team-a into `namespace`.

    The Namespace object is left out: the test's namespace exists already (made by the fixture).
    """
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(WORKLOADS))) if d]
    moved = []
    for doc in docs:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == TEAM
            continue
        if doc["metadata"].get("namespace") == TEAM:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or ():
            if subject.get("namespace") == TEAM:
                subject["namespace"] = namespace
        moved.append(doc)
    return moved


def apply_as_gitops(kubectl: Kubectl, path: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --server-side --field-manager=gitops`, conflicts not forced; the finished process."""
    return kubectl.run("apply", "--server-side", f"--field-manager={GITOPS}", "-f", str(path), check=False)


def api_path(doc: dict[str, Any]) -> str:
    """The object's path on the apiserver."""
    meta = doc["metadata"]
    where = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
    return f"/apis/{constants.GROUP}/{constants.VERSION}{where}/{PLURALS[doc['kind']]}/{meta['name']}"


def declared_within(declared: object, live: object) -> bool:
    """Every value Git declares is the live one (the apiserver may add defaults beside them)."""
    if isinstance(declared, dict):
        return isinstance(live, dict) and all(k in live and declared_within(v, live[k]) for k, v in declared.items())
    return bool(declared == live)


def ownership_problems(doc: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """What is wrong with the live object's managedFields: '' when GitOps owns spec and qorch only status."""
    name = f"{doc['kind']} {doc['metadata']['name']}"
    entries = live["metadata"].get("managedFields") or []
    problems = [f"{name}: unexpected manager {e['manager']!r} ({e['operation']})"
                for e in entries if e["manager"] not in {GITOPS, *STATUS_WRITERS}]  # fmt: skip
    gitops = [e for e in entries if e["manager"] == GITOPS]
    if len(gitops) != 1 or gitops[0]["operation"] != "Apply" or gitops[0].get("subresource"):
        problems.append(f"{name}: not one main-resource Apply entry of {GITOPS!r}: {gitops}")
    else:
        owned = set(gitops[0]["fieldsV1"].get("f:spec") or {})
        if owned != {f"f:{key}" for key in doc["spec"]}:
            problems.append(f"{name}: {GITOPS!r} owns spec {sorted(owned)}, Git declares {sorted(doc['spec'])}")
        labels = set((gitops[0]["fieldsV1"].get("f:metadata") or {}).get("f:labels") or {})
        if labels != {f"f:{key}" for key in doc["metadata"].get("labels") or {}}:
            problems.append(f"{name}: {GITOPS!r} owns labels {sorted(labels)}")
    for entry in entries:
        if entry["manager"] == GITOPS:
            continue
        if entry.get("subresource") != "status" or set(entry.get("fieldsV1") or {}) != {"f:status"}:
            where, fields = entry.get("subresource"), sorted(entry.get("fieldsV1") or {})
            problems.append(f"{name}: {entry['manager']!r} wrote more than status: {where!r}, {fields}")
    return problems


def gitops_fields(live: dict[str, Any]) -> list[Any]:
    """The fields "gitops" owns, as managedFields records them."""
    return [e["fieldsV1"] for e in live["metadata"].get("managedFields") or () if e["manager"] == GITOPS]


def status_writers(live: dict[str, Any]) -> set[str]:
    """The managers that wrote the object's status."""
    return {e["manager"] for e in live["metadata"].get("managedFields") or () if e.get("subresource") == "status"}


def test_gitops_owns_spec_and_a_reapply_after_a_run_finds_no_conflict_and_no_drift(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api, tmp_path: Path
) -> None:
    """Apply as "gitops", run every Task to Succeeded, apply again: exit 0, no diff, spec owned by GitOps alone."""
    ns = kubectl.namespace
    assert ns
    objects = users_objects(kubectl, ns)
    files = tmp_path / "gitops.yaml"
    files.write_text(yaml.safe_dump_all(objects))
    ours = [d for d in objects if d["kind"] in PLURALS]
    tasks = {d["metadata"]["name"] for d in ours if d["kind"] == "Task"}
    agents = [d for d in ours if d["kind"] == "Agent"]
    assert len(tasks) >= 5
    assert agents
    assert sum(d["kind"] == "SchedulingPolicy" for d in ours) == 1

    # The policy is cluster-wide and other tests of the session write it with client-side apply:
    # GitOps starts from an object of its own, and leaves none behind for the tests after it.
    admin = kubectl.in_namespace(None)
    admin("delete", "schedulingpolicy", "default", "--ignore-not-found")
    try:
        first = apply_as_gitops(kubectl, files)
        assert first.returncode == 0, first.stderr
        assert first.stdout.count("serverside-applied") == len(objects), first.stdout
        applied = {api_path(d): gitops_fields(api.get(api_path(d))) for d in ours}

        op = operators.start("op")
        for agent in agents:
            runtimes(agent["metadata"]["name"], handlers="qorch.agent.demo:handlers")

        def unfinished() -> dict[str, str]:
            return {n: p for n, p in api.phases(ns).items() if n in tasks and p != "Succeeded"}

        wait_for(lambda: not unfinished(), 120, what=f"every task to succeed:\n{op.tail()}")
        wait_for(lambda: all((api.get(api_path(d)).get("status") or {}) for d in ours), 60,
                 what="the operator to write the status of the policy and of every Agent")  # fmt: skip
        before = {api_path(d): api.get(api_path(d)) for d in ours}
        for doc in ours:
            writers = status_writers(before[api_path(doc)])
            wanted = STATUS_WRITERS if doc["kind"] == "Task" else {constants.OPERATOR_FIELD_MANAGER}
            assert writers == wanted, f"{doc['kind']} {doc['metadata']['name']}: status written by {writers}"

        # What Argo CD and Flux do on every sync: apply the same objects again.
        again = apply_as_gitops(kubectl, files)
        assert again.returncode == 0, f"conflict with another writer of spec:\n{again.stderr}"
        assert "conflict" not in again.stderr.lower()
        assert again.stdout.count("serverside-applied") == len(objects), again.stdout
        diff = kubectl.run("diff", "--server-side", f"--field-manager={GITOPS}", "-f", str(files), check=False)
        assert (diff.returncode, diff.stdout, diff.stderr) == (0, "", ""), f"drift:\n{diff.stdout}{diff.stderr}"

        problems: list[str] = []
        for doc in ours:
            live = api.get(api_path(doc))
            old = before[api_path(doc)]
            assert live["metadata"]["generation"] == old["metadata"]["generation"], doc["metadata"]["name"]
            assert live["spec"] == old["spec"], doc["metadata"]["name"]
            assert declared_within(doc["spec"], live["spec"]), (doc["spec"], live["spec"])
            assert live["status"] == old["status"] or doc["kind"] != "Task"  # finished Tasks stay as they ended
            problems += ownership_problems(doc, live)
            if gitops_fields(live) != applied[api_path(doc)]:
                problems.append(f"{doc['kind']} {doc['metadata']['name']}: {GITOPS!r} no longer owns what it applied")
        assert not problems, "\n".join(problems)
        assert not unfinished()
    finally:
        admin.run("delete", "schedulingpolicy", "default", "--ignore-not-found", check=False)
