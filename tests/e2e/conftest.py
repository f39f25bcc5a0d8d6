"""e2e fixtures: CRDs installed, the operator namespace, operator, agent-pool and runtime processes, a fault proxy."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from qorch.testing.faultproxy import FaultProxy
from support.api import Api
from support.operators import OperatorFleet
from support.pools import PoolFleet
from support.runtimes import Runtime


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


@pytest.fixture
def pools(qorch_control_plane: ControlPlane, qorch_namespace: str, tmp_path: Path) -> Iterator[PoolFleet]:
    """Simulated agent pools (real processes following the agent protocol) in this test's namespace."""
    fleet = PoolFleet(qorch_control_plane.admin_kubeconfig, tmp_path, qorch_namespace)
    yield fleet
    fleet.stop_all()


@pytest.fixture(scope="session")
def api(qorch_control_plane: ControlPlane) -> Api:
    """A fast synchronous reader, as admin."""
    return Api(qorch_control_plane.admin_kubeconfig)


@pytest.fixture
def proxy(qorch_control_plane: ControlPlane) -> Iterator[FaultProxy]:
    """A fault proxy in front of the apiserver; `proxy.kubeconfig(path)` points a process at it."""
    with FaultProxy(qorch_control_plane.admin_kubeconfig) as started:
        yield started


@pytest.fixture
def runtimes(
    qorch_control_plane: ControlPlane, qorch_namespace: str, tmp_path: Path
) -> Iterator[Callable[..., Runtime]]:
    """Start `qorch agent run` processes in this test's namespace; all are stopped at teardown."""
    started: list[Runtime] = []

    def start(name: str, *extra: str, **options: str) -> Runtime:
        runtime = Runtime(tmp_path, qorch_control_plane.admin_kubeconfig, qorch_namespace, name, *extra, **options)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        if runtime.popen.poll() is None:
            runtime.stop(signal.SIGKILL)
