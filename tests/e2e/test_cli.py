"""The installed `qorch` binary against a real operator and agent runtime: tables, JSON, exit codes, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from support.manifests import policy
from support.operators import OperatorFleet
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

QORCH = Path(sys.executable).parent / "qorch"


def test_a_user_drives_tasks_from_the_terminal(
    kubectl: Kubectl,
    operators: OperatorFleet,
    runtimes: Callable[..., Runtime],
    qorch_control_plane: ControlPlane,
    qorch_kubeconfig_for: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    """submit, wait, get (table, json, yaml), describe, approve; and one-line errors with the right exit codes."""
    kubeconfig = str(qorch_control_plane.admin_kubeconfig)
    ns = kubectl.namespace

    def qorch(*args: str, config: str = kubeconfig) -> subprocess.CompletedProcess[str]:
        argv = [str(QORCH), *args, f"--namespace={ns}", f"--kubeconfig={config}"]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)

    kubectl.apply(policy())
    operators.start("op")
    runtimes("cli-a", "--capabilities=code", "--capacity=2")
    made = qorch("submit", "write the parser", "--requires=code", "--priority=700", "--name=c1")
    assert (made.returncode, made.stdout.strip()) == (0, "c1"), made.stderr
    spec = tmp_path / "task.yaml"
    spec.write_text(yaml.safe_dump({"goal": "from a file", "requires": ["code"], "input": {"ticket": "T-1"}}))
    from_file = qorch("submit", "-f", str(spec), "--name=c2")
    assert from_file.returncode == 0, from_file.stderr
    waited = qorch("wait", "c1", "c2", "--timeout=90")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.split() == ["c1", "Succeeded", "c2", "Succeeded"]

    table = qorch("get", "tasks").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "AGENT", "PRIORITY", "ATTEMPTS", "REASON"]
    assert table[1].split()[:5] == ["c1", "Succeeded", "cli-a", "700", "1"]
    one = json.loads(qorch("get", "task", "c1", "-o", "json").stdout)
    assert one["status"]["phase"] == "Succeeded"
    assert one["spec"]["priority"] == 700
    agents = yaml.safe_load(qorch("get", "agents", "-o", "yaml").stdout)
    assert agents["name"] == "cli-a"
    assert agents["spec"]["capacity"] == 2
    described = qorch("describe", "c2").stdout
    assert "Phase:      Succeeded" in described
    assert "Assigned:   cli-a (attempt 1" in described
    assert "Result:     " in described

    gated = qorch("submit", "ship it", "--requires=code", "--name=c3", "-f", str(_gated(tmp_path)))
    assert gated.returncode == 0, gated.stderr
    timed_out = qorch("wait", "c3", "--timeout=2")
    approved = qorch("approve", "c3", "--reason=reviewed")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith("approval.qorch.io/c3-approve-")
    assert qorch("wait", "c3", "--timeout=90").returncode == 0

    failures = {
        "kind": (qorch("get", "widgets"), 2, "error: unknown kind 'widgets': use tasks or agents"),
        "output": (qorch("get", "tasks", "-o", "xml"), 2, "error: --output must be one of table, json, yaml"),
        "missing": (qorch("get", "tasks", "nope"), 1, f"error: task 'nope' in {ns}: not found"),
        "no goal": (qorch("submit"), 2, "error: a goal is needed"),
        "range": (
            qorch("submit", "x", "--priority=5000"),
            1,
            "error: task spec: priority: Input should be less than or equal to 1000",
        ),
        "taken": (qorch("submit", "x", "--name=c1"), 1, "error: task 'c1' exists already; pick another name"),
        "no file": (qorch("submit", "-f", str(tmp_path / "none.yaml")), 2, "error: cannot read"),
        "wait missing": (qorch("wait", "nope", "--timeout=1"), 1, f"error: task 'nope' does not exist in {ns}"),
        "timeout": (timed_out, 1, "error: timed out after 2 s waiting for 1 task(s): c3=AwaitingApproval"),
        "approve missing": (qorch("approve", "nope"), 1, f"error: task 'nope' in {ns}: not found"),
        "rbac": (
            qorch("get", "tasks", config=str(qorch_kubeconfig_for("mallory"))),
            1,
            f"error: tasks in {ns}: forbidden by RBAC",
        ),
        "no cluster": (
            qorch("get", "tasks", config=str(tmp_path / "no-kubeconfig")),
            1,
            "error: no cluster to talk to",
        ),
    }
    for label, (done, code, says) in failures.items():
        assert done.returncode == code, (label, done.returncode, done.stderr)
        assert done.stderr.startswith(says), (label, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (label, done.stderr)
        assert "Traceback" not in done.stderr


def _gated(folder: Path) -> Path:
    path = folder / "gated.yaml"
    path.write_text(yaml.safe_dump({"approval": {"required": True}}))
    return path
