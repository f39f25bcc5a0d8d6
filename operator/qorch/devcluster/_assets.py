"""Finding (or building) the kube-apiserver, etcd and kubectl binaries.

Lookup order, first hit wins:
1. ``QORCH_K8S_ASSETS``: a folder with prebuilt binaries;
2. ``KUBEBUILDER_ASSETS``: the same, as envtest users already have it;
3. the build cache, ``$QORCH_CACHE_DIR/k8s-v<version>`` (default
   ``~/.cache/qorch``), filled by ``build.sh`` from the Go module proxy.

This module never downloads a prebuilt binary: there is no trusted place to
fetch one from on every machine, while the Go module proxy is checksummed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_K8S_VERSION",
    "AssetsNotFoundError",
    "Binaries",
    "build",
    "cache_root",
    "find",
]

DEFAULT_K8S_VERSION = "1.36.3"
_NAMES = ("kube-apiserver", "etcd", "kubectl")
BUILD_SCRIPT = Path(__file__).with_name("build.sh")


class AssetsNotFoundError(RuntimeError):
    """No binaries were found and none can be built; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Binaries:
    """Paths of the three control-plane binaries."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path

    @property
    def folder(self) -> Path:
        """The folder holding kubectl, for putting on PATH."""
        return self.kubectl.parent


def k8s_version() -> str:
    """The Kubernetes version to build or look for."""
    return os.environ.get("QORCH_K8S_VERSION", DEFAULT_K8S_VERSION)


def cache_root() -> Path:
    """Where qorch keeps built binaries and dev-cluster state."""
    if explicit := os.environ.get("QORCH_CACHE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "qorch"


def _complete(folder: Path) -> Binaries | None:
    paths = [folder / name for name in _NAMES]
    if all(p.is_file() and os.access(p, os.X_OK) for p in paths):
        return Binaries(*paths)
    return None


def find() -> Binaries:
    """Return prebuilt binaries, or raise with instructions to get them."""
    for var in ("QORCH_K8S_ASSETS", "KUBEBUILDER_ASSETS"):
        if value := os.environ.get(var):
            found = _complete(Path(value))
            if found is None:
                missing = [n for n in _NAMES if not (Path(value) / n).is_file()]
                raise AssetsNotFoundError(
                    f"{var}={value} does not hold {', '.join(missing)}. Point it at a folder "
                    f"with kube-apiserver, etcd and kubectl, or unset it to use the qorch build "
                    f"cache ({cache_root()})."
                )
            return found
    cached = _complete(cache_root() / f"k8s-v{k8s_version()}")
    if cached is not None:
        return cached
    if shutil.which("go") is None:
        raise AssetsNotFoundError(
            "No Kubernetes control-plane binaries found and Go is not installed. Either install "
            "Go >= 1.25 (then run `qorch dev cluster build` or `make controlplane`), or set "
            "QORCH_K8S_ASSETS (or KUBEBUILDER_ASSETS) to a folder holding kube-apiserver, etcd "
            "and kubectl, e.g. the one `setup-envtest use -p path` prints."
        )
    raise AssetsNotFoundError(
        f"Kubernetes v{k8s_version()} binaries are not built yet. Run `qorch dev cluster build` "
        f"(or `make controlplane`); the first build takes several minutes and is cached in "
        f"{cache_root()}."
    )


def build() -> Binaries:
    """Return prebuilt or cached binaries, building them with the packaged script if needed."""
    try:
        return find()
    except AssetsNotFoundError:
        if shutil.which("go") is None or os.environ.get("QORCH_K8S_ASSETS") or os.environ.get("KUBEBUILDER_ASSETS"):
            raise
    env = dict(os.environ, QORCH_CACHE_DIR=str(cache_root()), QORCH_K8S_VERSION=k8s_version())
    subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(BUILD_SCRIPT)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return find()
