"""charts/qorch without helm: its CRDs are the generated ones, its versions the package's, its values files parse.

That the chart renders the very objects of manifests/ is tests/integration/test_helm_install.py
(it needs the helm and kubectl binaries).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from qorch.api import crd

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "qorch"


def load(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


def test_the_charts_crds_are_the_generated_crds_byte_for_byte() -> None:
    """charts/qorch/crds/ holds exactly crds/'s files, unchanged: `make crds` writes both from qorch.api."""
    ours = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    assert sorted(ours) == sorted(source)
    stale = [name for name in source if ours[name] != source[name]]
    assert not stale, f"charts/qorch/crds/ differs from crds/ in {stale}: run `make crds`"
    assert {name: text.encode() for name, text in crd.render().items()} == ours


def test_the_chart_versions_are_the_packages() -> None:
    """version and appVersion are the package's version, so the default image is the one the Dockerfile builds."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    chart = load(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "qorch"
    assert chart["version"] == chart["appVersion"] == version
    deployment = load(ROOT / "manifests" / "base" / "deployment.yaml")
    values = load(CHART / "values.yaml")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{values['image']['repository']}:{chart['appVersion']}"
    assert values["image"]["tag"] == ""


def test_every_values_file_parses_and_sets_only_known_keys() -> None:
    """values-dev.yaml and values-production.yaml override keys that values.yaml declares, nothing else."""
    defaults = load(CHART / "values.yaml")

    def unknown(overrides: dict[str, Any], known: dict[str, Any], at: str = "") -> list[str]:
        found = []
        for key, value in overrides.items():
            if key not in known:
                found.append(at + key)
            elif isinstance(value, dict) and isinstance(known[key], dict) and known[key]:
                found += unknown(value, known[key], f"{at}{key}.")
        return found

    for name in ("values-dev.yaml", "values-production.yaml"):
        overrides = load(CHART / name)
        assert isinstance(overrides, dict), name
        assert not unknown(overrides, defaults), f"{name} sets keys values.yaml lacks: {unknown(overrides, defaults)}"
