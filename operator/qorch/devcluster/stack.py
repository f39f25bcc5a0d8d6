"""The demo stack behind `qorch dev up` (`make demo`): everything a newcomer needs to look at.

Today: the background control plane, the CRDs, the default SchedulingPolicy
and the examples in namespace `qorch-demo`. The operator replicas and the demo
agent pool join it as they land. Every step is idempotent, so `up` twice is
harmless.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from qorch.api import crd
from qorch.devcluster import _assets, background

__all__ = ["DEMO_NAMESPACE", "Stack", "down", "up"]

DEMO_NAMESPACE = "qorch-demo"


@dataclass(frozen=True, slots=True)
class Stack:
    """What `up` started, for printing."""

    server: str
    kubeconfig: Path
    kubectl: Path
    overview: str


def _kubectl(binaries: _assets.Binaries, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(binaries.kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def up(examples: Path | None = None) -> Stack:
    """Bring the demo stack up (idempotent) and return how to reach it."""
    binaries = _assets.build()
    state = background.up()
    kubeconfig = Path(str(state.kubeconfig))
    _kubectl(binaries, kubeconfig, "apply", "--server-side", "-f", "-", stdin="---\n".join(crd.render().values()))
    _kubectl(
        binaries,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *[f"crd/{d.crd_name}" for d in crd.KINDS],
    )
    namespace = _kubectl(binaries, kubeconfig, "create", "namespace", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml")
    _kubectl(binaries, kubeconfig, "apply", "-f", "-", stdin=namespace)
    if examples is not None and examples.is_dir():
        _kubectl(binaries, kubeconfig, "apply", "-n", DEMO_NAMESPACE, "-f", str(examples))
    overview = _kubectl(binaries, kubeconfig, "get", "qorch", "-A")
    return Stack(server=str(state.server), kubeconfig=kubeconfig, kubectl=binaries.kubectl, overview=overview)


def down() -> bool:
    """Stop everything `up` started; return whether anything was running."""
    return background.down()
