"""The demo stack behind `qorch dev up` (`make demo`): everything a newcomer needs to look at.

The background control plane; the install of `manifests/base` (`kubectl kustomize`)
minus what only a kubelet could run (the Deployment: its pods would never start), so
the CRDs, the admission policy and the RBAC are the very objects `kubectl apply -k`
installs; the examples in namespace `qorch-demo` (with the default SchedulingPolicy);
two operator replicas (one leads, one waits) and one agent runtime (`qorch agent run`
with the demo handlers of `qorch.agent.demo`) per example Agent, which claims, runs and
reports its tasks.

The processes never run as admin. The operators use a token of the base's
ServiceAccount `qorch-operator` and the runtimes one of ServiceAccount
`qorch-demo-agent`, bound in `qorch-demo` to ClusterRole `qorch-agent` exactly as
docs/install.md tells a user to; both tokens come from the TokenRequest API. So
the demo runs under the manifests' RBAC every time: a permission they lack fails it.

Every step is idempotent, so `up` twice is harmless; `down` stops every process
`up` started, then the control plane.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qorch.api import constants, crd
from qorch.devcluster import _assets, _kubeconfig, _ports, background

__all__ = ["AGENT_SERVICE_ACCOUNT", "DEMO_NAMESPACE", "OPERATOR_SERVICE_ACCOUNT", "Stack", "down", "up"]

DEMO_NAMESPACE = "qorch-demo"
OPERATOR_SERVICE_ACCOUNT = "qorch-operator"  # manifests/base/operator-rbac.yaml
AGENT_SERVICE_ACCOUNT = "qorch-demo-agent"
_DEMO_HANDLERS = "qorch.agent.demo:handlers"
_NEEDS_A_KUBELET = {"Deployment"}  # pods that no kubelet would ever run here
_CREDENTIAL_LIFETIME = "8760h"  # a year: the demo's processes outlive any shorter token


@dataclass(frozen=True, slots=True)
class Stack:
    """What `up` started, for printing."""

    server: str
    kubeconfig: Path
    kubectl: Path
    overview: str
    metrics: list[str] = field(default_factory=list)


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


def _install_base(binaries: _assets.Binaries, kubeconfig: Path, base: Path) -> None:
    """Apply `kubectl kustomize base` without the objects that need a kubelet, and wait for the CRDs."""
    if not (base / "kustomization.yaml").is_file():
        raise RuntimeError(
            f"{base} is not the kustomize base of qorch (manifests/base); run `qorch dev up` from the qorch checkout"
        )
    rendered = yaml.safe_load_all(_kubectl(binaries, kubeconfig, "kustomize", str(base)))
    objects: list[dict[str, Any]] = [o for o in rendered if o and o.get("kind") not in _NEEDS_A_KUBELET]
    _kubectl(binaries, kubeconfig, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))
    _kubectl(
        binaries,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *[f"crd/{d.crd_name}" for d in crd.KINDS],
    )


def _token_kubeconfig(binaries: _assets.Binaries, admin: Path, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig whose only credential is a TokenRequest token of ServiceAccount `namespace/account`."""
    token = _kubectl(
        binaries, admin, "create", "token", account, f"--namespace={namespace}", f"--duration={_CREDENTIAL_LIFETIME}"
    ).strip()
    user = f"system:serviceaccount:{namespace}:{account}"
    return _kubeconfig.with_token(path, admin=admin, user=user, token=token)


def _bind_demo_agents(binaries: _assets.Binaries, kubeconfig: Path) -> None:
    """ServiceAccount qorch-demo-agent, bound in qorch-demo as docs/install.md says (idempotent)."""
    subject = f"--serviceaccount={DEMO_NAMESPACE}:{AGENT_SERVICE_ACCOUNT}"
    for args in (
        ("serviceaccount", AGENT_SERVICE_ACCOUNT),
        ("rolebinding", "qorch-agent", "--clusterrole=qorch-agent", subject),
    ):
        body = _kubectl(binaries, kubeconfig, "create", *args, "-n", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml")
        _kubectl(binaries, kubeconfig, "apply", "-f", "-", stdin=body)


def operator_kubeconfig() -> Path:
    """Where `up` writes the operators' ServiceAccount-token kubeconfig."""
    return background.state_dir() / "operator.kubeconfig"


def agent_kubeconfig() -> Path:
    """Where `up` writes the agent runtimes' ServiceAccount-token kubeconfig."""
    return background.state_dir() / "agent.kubeconfig"


def _processes_file() -> Path:
    return background.state_dir() / "processes.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _recorded() -> dict[str, dict[str, int | str]]:
    """The processes `up` started, as recorded ({} when none)."""
    with contextlib.suppress(OSError, ValueError):
        recorded: dict[str, dict[str, int | str]] = json.loads(_processes_file().read_text())
        return recorded
    return {}


def _processes_running() -> bool:
    """Whether every process `up` recorded still runs (then `up` keeps them, and their tokens)."""
    recorded = _recorded()
    return bool(recorded) and all(_alive(int(p["pid"])) for p in recorded.values())


def _start_processes(operator: Path, agent_config: Path, agents: list[str]) -> dict[str, dict[str, int | str]]:
    """Two operator replicas and an agent runtime per Agent, detached, logging into the state dir.

    `operator` and `agent_config` are the kubeconfigs (ServiceAccount tokens) they run with.
    """
    if _processes_running():
        return _recorded()
    _stop_processes()
    logs = background.state_dir()
    started: dict[str, dict[str, int | str]] = {}
    commands = {}
    for replica in ("operator-1", "operator-2"):
        metrics, health = _ports.free_port(), _ports.free_port()
        commands[replica] = (
            [
                "operator",
                "run",
                f"--kubeconfig={operator}",
                f"--metrics-port={metrics}",
                f"--health-port={health}",
                f"--identity=dev-{replica}",
            ],
            metrics,
        )
    for agent in agents:
        commands[f"agent-{agent}"] = (
            [
                "agent",
                "run",
                _DEMO_HANDLERS,
                f"--name={agent}",
                f"--namespace={DEMO_NAMESPACE}",
                f"--kubeconfig={agent_config}",
            ],
            0,
        )
    for name, (args, metrics) in commands.items():
        with (logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "qorch.cli", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started[name] = {"pid": proc.pid, "metrics": metrics}
    _processes_file().write_text(json.dumps(started))
    return started


def _stop_processes() -> bool:
    try:
        recorded = json.loads(_processes_file().read_text())
    except (OSError, ValueError):
        return False
    pids = [int(p["pid"]) for p in recorded.values()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
        for pid in pids:  # reap our own children, if we started them in this process
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _processes_file().unlink(missing_ok=True)
    return bool(pids)


def up(examples: Path | None = None, policies: Path | None = None, base: Path | None = None) -> Stack:
    """Bring the demo stack up (idempotent) and return how to reach it.

    `base` is the kustomize base (default `manifests/` beside `policies`, else
    `manifests/base` in the working directory); it includes the admission policies, so
    `policies` is applied on its own only when it is another folder.
    """
    binaries = _assets.build()
    state = background.up()
    kubeconfig = Path(str(state.kubeconfig))
    if base is None:
        base = policies.parent / "base" if policies is not None else Path("manifests/base")
    _install_base(binaries, kubeconfig, base)
    namespace = _kubectl(binaries, kubeconfig, "create", "namespace", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml")
    _kubectl(binaries, kubeconfig, "apply", "-f", "-", stdin=namespace)
    _bind_demo_agents(binaries, kubeconfig)
    if policies is not None and policies.is_dir() and policies.resolve() != (base.parent / "policies").resolve():
        _kubectl(binaries, kubeconfig, "apply", "-k", str(policies))
    if examples is not None and examples.is_dir():
        _kubectl(binaries, kubeconfig, "apply", "-n", DEMO_NAMESPACE, "-f", str(examples))
    agents = _kubectl(
        binaries, kubeconfig, "get", "agents", "-n", DEMO_NAMESPACE, "-o", "jsonpath={.items[*].metadata.name}"
    ).split()
    operator = operator_kubeconfig()
    agent_config = agent_kubeconfig()
    if not (_processes_running() and operator.exists() and agent_config.exists()):
        _token_kubeconfig(binaries, kubeconfig, constants.OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, operator)
        _token_kubeconfig(binaries, kubeconfig, DEMO_NAMESPACE, AGENT_SERVICE_ACCOUNT, agent_config)
    processes = _start_processes(operator, agent_config, agents)
    time.sleep(3)  # let the leader take its first decisions before showing the overview
    overview = _kubectl(binaries, kubeconfig, "get", "qorch", "-A")
    metrics = [f"http://127.0.0.1:{p['metrics']}/metrics" for p in processes.values() if int(p["metrics"])]
    return Stack(
        server=str(state.server), kubeconfig=kubeconfig, kubectl=binaries.kubectl, overview=overview, metrics=metrics
    )


def down() -> bool:
    """Stop everything `up` started; return whether anything was running."""
    stopped = _stop_processes()
    return background.down() or stopped
