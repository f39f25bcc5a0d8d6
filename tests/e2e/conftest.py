"""e2e fixtures: CRDs installed, the operator namespace, and operator processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from support.operators import OperatorFleet


@pytest.fixture
def operators(
    qorch_control_plane: ControlPlane, qorch_crds: list[str], qorch_namespace: str, tmp_path: Path
) -> Iterator[OperatorFleet]:
    """Operator replicas scoped to this test's namespace, stopped afterwards."""
    admin = Kubectl(qorch_control_plane.binaries.kubectl, qorch_control_plane.admin_kubeconfig)
    if admin.run("get", "namespace", "qorch-system", check=False).returncode != 0:
        admin("create", "namespace", "qorch-system")
    fleet = OperatorFleet(qorch_control_plane.admin_kubeconfig, tmp_path, qorch_namespace)
    yield fleet
    fleet.stop_all()
    del qorch_crds
