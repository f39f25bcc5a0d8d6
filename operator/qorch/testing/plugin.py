"""pytest fixtures backed by a real local control plane.

Fixtures:
- ``qorch_control_plane`` (session): a started `ControlPlane`.
- ``qorch_kubeconfig_for`` (session): ``(user, groups=()) -> Path``.
- ``qorch_namespace``: a fresh namespace for one test.
- ``kubectl``: a `Kubectl` as admin, defaulting to that namespace.
- ``qorch_crds`` (session): the qorch CRDs installed and Established.

When the binaries are missing the fixture fails (never skips) with the
message that says how to get them: a silently skipped integration tier
would look green while testing nothing.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import pytest

from qorch.api import crd
from qorch.devcluster import AssetsNotFoundError, ControlPlane
from qorch.testing.kubectl import Kubectl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

__all__ = [
    "kubectl",
    "qorch_control_plane",
    "qorch_crds",
    "qorch_kubeconfig_for",
    "qorch_namespace",
]


@pytest.fixture(scope="session")
def qorch_control_plane() -> Iterator[ControlPlane]:
    """A real etcd + kube-apiserver for the whole test session."""
    try:
        plane = ControlPlane()
        plane.binaries  # noqa: B018 - resolve now, to fail with a clear message
    except AssetsNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    with plane:
        yield plane


@pytest.fixture(scope="session")
def qorch_kubeconfig_for(qorch_control_plane: ControlPlane) -> Callable[..., Path]:
    """Mint kubeconfigs for arbitrary users and groups (not admin)."""

    def mint(user: str, groups: Sequence[str] = ()) -> Path:
        return qorch_control_plane.kubeconfig_for(user, groups)

    return mint


def _namespace_for(nodeid: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", nodeid.rsplit("::", 1)[-1].lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha1(nodeid.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"t-{slug}-{digest}"


@pytest.fixture
def qorch_namespace(qorch_control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace made for this test; deleted (without waiting) afterwards."""
    admin = Kubectl(qorch_control_plane.binaries.kubectl, qorch_control_plane.admin_kubeconfig)
    name = _namespace_for(request.node.nodeid)
    admin("create", "namespace", name)
    yield name
    admin.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kubectl(qorch_control_plane: ControlPlane, qorch_namespace: str) -> Kubectl:
    """Admin `kubectl`, defaulting to this test's namespace."""
    return Kubectl(
        qorch_control_plane.binaries.kubectl,
        qorch_control_plane.admin_kubeconfig,
        namespace=qorch_namespace,
    )


@pytest.fixture(scope="session")
def qorch_crds(qorch_control_plane: ControlPlane) -> list[str]:
    """Install the qorch CRDs (generated from qorch.api) and wait until they are Established."""
    admin = Kubectl(qorch_control_plane.binaries.kubectl, qorch_control_plane.admin_kubeconfig)
    admin.apply("---\n".join(crd.render().values()))
    names = [f"crd/{d.crd_name}" for d in crd.KINDS]
    admin("wait", "--for=condition=Established", *names, "--timeout=60s")
    return [d.crd_name for d in crd.KINDS]
