"""Missing binaries produce a message that says what to install or set."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qorch.devcluster import _assets


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No asset variables, and an empty cache dir under tmp_path."""
    for var in ("QORCH_K8S_ASSETS", "KUBEBUILDER_ASSETS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QORCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _fake_binaries(folder: Path, names: tuple[str, ...] = ("kube-apiserver", "etcd", "kubectl")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_no_go_and_no_binaries_names_go_and_the_variables(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Go or prebuilt binaries the error names Go and both asset variables."""
    monkeypatch.setenv("PATH", str(clean_env / "empty-bin"))
    with pytest.raises(_assets.AssetsNotFoundError) as err:
        _assets.build()
    message = str(err.value)
    assert "Go" in message
    assert "QORCH_K8S_ASSETS" in message
    assert "KUBEBUILDER_ASSETS" in message


def test_go_present_but_not_built_says_how_to_build(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With Go but no cache, find() tells the user the build command."""
    bindir = clean_env / "bin"
    _fake_binaries(bindir, ("go",))
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(_assets.AssetsNotFoundError, match="qorch dev cluster build"):
        _assets.find()


def test_an_incomplete_assets_folder_names_what_is_missing(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QORCH_K8S_ASSETS pointing at a folder without etcd says etcd is missing there."""
    folder = clean_env / "assets"
    _fake_binaries(folder, ("kube-apiserver", "kubectl"))
    monkeypatch.setenv("QORCH_K8S_ASSETS", str(folder))
    with pytest.raises(_assets.AssetsNotFoundError, match=r"QORCH_K8S_ASSETS=.* does not hold etcd"):
        _assets.find()


@pytest.mark.parametrize("var", ["QORCH_K8S_ASSETS", "KUBEBUILDER_ASSETS"])
def test_prebuilt_assets_win_over_the_cache(clean_env: Path, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    """A complete prebuilt folder is used as is, with no Go needed."""
    folder = clean_env / "envtest"
    _fake_binaries(folder)
    monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("PATH", str(clean_env / "empty-bin"))
    found = _assets.build()
    assert found.kube_apiserver == folder / "kube-apiserver"
    assert found.folder == folder


@pytest.mark.usefixtures("clean_env")
def test_the_cache_is_used_when_complete() -> None:
    """Binaries already in the versioned cache folder are found without building."""
    folder = Path(os.environ["QORCH_CACHE_DIR"]) / f"k8s-v{_assets.k8s_version()}"
    _fake_binaries(folder)
    assert _assets.find().etcd == folder / "etcd"
