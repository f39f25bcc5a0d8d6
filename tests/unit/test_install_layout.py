"""The install tree holds together: every kustomize reference resolves, and the README's kind walkthrough is true.

No cluster and no kind here: the walkthrough's commands are parsed, and every file,
folder, flag, image, cluster name, namespace, Deployment and port they name is checked
against the repository (kind-config.yaml, the Dockerfile, the manifests).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from qorch.controller.records import PolicyRecord

ROOT = Path(__file__).parents[2]
CRDS = ROOT / "crds"
MANIFESTS = ROOT / "manifests"
KIND_CONFIG = ROOT / "kind-config.yaml"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# The flags each walkthrough command may use: real flags of kind, docker, kubectl and curl.
# A command or flag that is not here fails the test, so the table grows with the walkthrough.
KNOWN_FLAGS: dict[tuple[str, ...], set[str]] = {
    ("kind", "create", "cluster"): {"--config", "--name"},
    ("docker", "build"): {"-t", "--tag", "-f", "--file"},
    ("kind", "load", "docker-image"): {"--name"},
    ("kubectl", "apply"): {"-k", "--kustomize"},
    ("kubectl", "rollout", "status"): {"-n", "--namespace", "--timeout"},
    ("curl",): {"-s", "--silent", "-f", "--fail"},
}
FLAGS_WITH_VALUES = {"--config", "--name", "-t", "--tag", "-f", "--file", "-k", "--kustomize", "-n", "--namespace"}


def kustomization_in(folder: Path) -> Path | None:
    """The kustomization file of a folder, under any name kustomize accepts."""
    return next((folder / name for name in KUSTOMIZATION_NAMES if (folder / name).is_file()), None)


def load(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


def all_kustomizations() -> list[Path]:
    """Every kustomization of the install: crds/ and manifests/**."""
    found = [kustomization_in(CRDS)]
    found += [kustomization_in(folder) for folder in sorted({p.parent for p in MANIFESTS.rglob("*")})]
    return [path for path in found if path is not None]


def base_deployment() -> dict[str, Any]:
    """The operator's Deployment in manifests/base."""
    deployment: dict[str, Any] = load(MANIFESTS / "base" / "deployment.yaml")
    return deployment


def image() -> str:
    """The image the manifests run."""
    return str(base_deployment()["spec"]["template"]["spec"]["containers"][0]["image"])


def walkthrough() -> list[list[str]]:
    """The commands of the README's "On kind" code block, each split as a shell would."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^### On kind\n.*?^```sh\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    assert match, 'README.md has no "### On kind" section with a sh code block'
    return [shlex.split(line, comments=True) for line in match[1].splitlines() if line.strip()]


def split(argv: list[str]) -> tuple[tuple[str, ...], dict[str, str], list[str]]:
    """(command words, flags with their values, positional arguments) of one command line."""
    for words in sorted(KNOWN_FLAGS, key=len, reverse=True):
        if tuple(argv[: len(words)]) == words:
            break
    else:
        pytest.fail(f"the walkthrough runs {' '.join(argv)!r}, which this test does not know: extend KNOWN_FLAGS")
    flags: dict[str, str] = {}
    positional: list[str] = []
    rest = iter(argv[len(words) :])
    for arg in rest:
        if arg.startswith("-"):
            assert arg in KNOWN_FLAGS[words], f"{' '.join(words)} has no flag {arg} (known: {KNOWN_FLAGS[words]})"
            flags[arg] = next(rest) if arg in FLAGS_WITH_VALUES else ""
        else:
            positional.append(arg)
    return words, flags, positional


def kind_config() -> dict[str, Any]:
    """kind-config.yaml."""
    config: dict[str, Any] = load(KIND_CONFIG)
    return config


def dev_node_port() -> int:
    """The NodePort the dev overlay gives the metrics Service."""
    kustomization = load(MANIFESTS / "overlays" / "dev" / "kustomization.yaml")
    for patch in kustomization.get("patches") or ():
        if (patch.get("target") or {}).get("kind") != "Service":
            continue
        for op in yaml.safe_load(patch["patch"]):
            if op["path"] == "/spec/ports/0/nodePort":
                return int(op["value"])
    pytest.fail("the dev overlay gives the metrics Service no nodePort")


def test_crds_kustomization_lists_every_crd() -> None:
    """crds/Kustomization names exactly the CRD files `qorch crds generate` writes there."""
    kustomization = kustomization_in(CRDS)
    assert kustomization is not None
    assert kustomization.name == "Kustomization", "a kustomization.yaml would be applied by `kubectl apply -f crds/`"
    assert sorted(load(kustomization)["resources"]) == sorted(p.name for p in CRDS.glob("*.yaml"))


@pytest.mark.parametrize("path", all_kustomizations(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_kustomize_reference_resolves(path: Path) -> None:
    """Each resource is a file or a folder with a kustomization; each patch file exists."""
    kustomization = load(path)
    missing = []
    for resource in kustomization.get("resources") or ():
        target = path.parent / resource
        if not (target.is_file() or (target.is_dir() and kustomization_in(target) is not None)):
            missing.append(resource)
    patches = [patch["path"] for patch in kustomization.get("patches") or () if "path" in patch]
    missing.extend(patch for patch in patches if not (path.parent / patch).is_file())
    assert not missing, f"{path.relative_to(ROOT)} names what does not exist: {missing}"


def test_kind_config_has_one_control_plane_two_workers_and_the_metrics_port() -> None:
    """One control plane and two workers; the control plane maps the dev overlay's metrics NodePort to the host."""
    nodes = kind_config()["nodes"]
    assert [node["role"] for node in nodes] == ["control-plane", "worker", "worker"]
    mappings = nodes[0]["extraPortMappings"]
    assert [m["containerPort"] for m in mappings] == [dev_node_port()]


def test_walkthrough_names_what_exists() -> None:
    """Every file, folder, flag, image, cluster name, namespace, Deployment and port of the walkthrough is real."""
    commands = walkthrough()
    with (ROOT / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert image() == f"qorch-operator:{version}"
    seen = set()
    for argv in commands:
        words, flags, positional = split(argv)
        seen.add(words)
        if words == ("kind", "create", "cluster"):
            assert (ROOT / flags["--config"]).resolve() == KIND_CONFIG
            assert "--name" not in flags or flags["--name"] == kind_config()["name"]
        elif words == ("docker", "build"):
            assert flags["-t"] == image()
            assert positional == ["."]
            assert (ROOT / positional[0] / "Dockerfile").is_file()
        elif words == ("kind", "load", "docker-image"):
            assert positional == [image()]
            assert flags["--name"] == kind_config()["name"]
        elif words == ("kubectl", "apply"):
            folder = ROOT / flags["-k"]
            assert kustomization_in(folder) is not None, f"{flags['-k']} is not a kustomization"
        elif words == ("kubectl", "rollout", "status"):
            deployment = base_deployment()
            assert flags["-n"] == deployment["metadata"]["namespace"]
            assert positional == [f"deployment/{deployment['metadata']['name']}"]
        elif words == ("curl",):
            [url] = positional
            mapping = kind_config()["nodes"][0]["extraPortMappings"][0]
            assert url == f"http://{mapping['listenAddress']}:{mapping['hostPort']}/metrics"
    assert {("kind", "create", "cluster"), ("docker", "build"), ("kind", "load", "docker-image")} <= seen
    assert ["kubectl", "apply", "-k", "manifests/overlays/dev"] in commands


def test_kind_config_header_repeats_the_walkthrough() -> None:
    """The commands in kind-config.yaml's header comment are the README's, word for word."""
    header = [
        line.removeprefix("#").strip() for line in KIND_CONFIG.read_text().splitlines() if line.startswith("#   ")
    ]
    assert header, "kind-config.yaml's header shows no commands"
    readme = [" ".join(argv) for argv in walkthrough()]
    assert header == readme[: len(header)]


def test_the_shipped_default_policy_is_what_the_operator_assumes_without_one() -> None:
    """manifests/scheduling-policy writes out exactly the defaults the operator uses when no policy exists."""
    policy = load(MANIFESTS / "scheduling-policy" / "default.yaml")
    assert policy["metadata"]["name"] == "default"
    assert PolicyRecord.of(policy) == PolicyRecord()
