"""A real local Kubernetes control plane for development and tests.

Public surface: `ControlPlane` (start/stop etcd + kube-apiserver, mint
kubeconfigs), `find_binaries`/`build_binaries` (locate or build them), and the
`background` module behind `qorch dev cluster up|down|status`.
This package imports nothing from qorch but `qorch.api`.
"""

from qorch.devcluster._assets import AssetsNotFoundError, Binaries
from qorch.devcluster._assets import build as build_binaries
from qorch.devcluster._assets import find as find_binaries
from qorch.devcluster.controlplane import ADMIN_USER, ControlPlane, ControlPlaneError

__all__ = [
    "ADMIN_USER",
    "AssetsNotFoundError",
    "Binaries",
    "ControlPlane",
    "ControlPlaneError",
    "build_binaries",
    "find_binaries",
]
