"""The CLI on a cluster qorch is not installed in yet: one line that says what to install or start.

A control plane of its own (the session's has the CRDs): first no qorch API at
all, then the CRDs but no operator, so a wait ends saying the operator is missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qorch.api import crd
from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl

pytestmark = pytest.mark.e2e

QORCH = Path(sys.executable).parent / "qorch"


def test_no_crds_and_no_operator_are_named_with_the_fix(tmp_path: Path) -> None:
    """`get`, `submit` without CRDs; `wait` without an operator: one line each, with what to do."""
    with ControlPlane(base_dir=tmp_path) as plane:

        def qorch(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [str(QORCH), *args, "--namespace=default", f"--kubeconfig={plane.admin_kubeconfig}"]
            return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)

        for done in (qorch("get", "tasks"), qorch("submit", "hello", "--name=h1"), qorch("top")):
            assert done.returncode == 1, done
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert "this cluster has no qorch API (the CRDs are not installed)" in done.stderr
            assert "kubectl apply -k manifests/overlays/dev" in done.stderr

        admin = Kubectl(plane.binaries.kubectl, plane.admin_kubeconfig)
        admin.apply("---\n".join(crd.render().values()))
        admin("wait", "--for=condition=Established", *[f"crd/{d.crd_name}" for d in crd.KINDS], "--timeout=60s")
        assert qorch("submit", "hello", "--name=h1").returncode == 0
        waited = qorch("wait", "h1", "--timeout=2")
        assert waited.returncode == 1
        assert waited.stderr.strip() == (
            "error: timed out after 2 s waiting for 1 task(s): h1=new; no status was ever written on them: "
            "is the qorch operator running? (kubectl -n qorch-system get lease qorch-operator)"
        )
