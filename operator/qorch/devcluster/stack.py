"""The demo stack behind `qorch dev up` (`make demo`): everything a newcomer needs to look at.

The background control plane, the CRDs, the admission policies, the examples
in namespace `qorch-demo` (with the default SchedulingPolicy), two operator
replicas (one leads, one waits) and one agent runtime (`qorch agent run` with the
demo handlers of `qorch.agent.demo`) per example Agent, which claims, runs and
reports its tasks. Every step is idempotent, so `up` twice is
harmless; `down` stops every process `up` started, then the control plane.
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

from qorch.api import constants, crd
from qorch.devcluster import _assets, _ports, background

__all__ = ["DEMO_NAMESPACE", "Stack", "down", "up"]

DEMO_NAMESPACE = "qorch-demo"
_DEMO_HANDLERS = "qorch.agent.demo:handlers"


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


def _processes_file() -> Path:
    return background.state_dir() / "processes.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_processes(kubeconfig: Path, agents: list[str]) -> dict[str, dict[str, int | str]]:
    """Two operator replicas and an agent runtime per Agent, detached, logging into the state dir."""
    recorded: dict[str, dict[str, int | str]] = {}
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads(_processes_file().read_text())
    if recorded and all(_alive(int(p["pid"])) for p in recorded.values()):
        return recorded
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
                f"--kubeconfig={kubeconfig}",
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
                f"--kubeconfig={kubeconfig}",
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


def up(examples: Path | None = None, policies: Path | None = None) -> Stack:
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
    system = _kubectl(
        binaries, kubeconfig, "create", "namespace", constants.OPERATOR_NAMESPACE, "--dry-run=client", "-o", "yaml"
    )
    _kubectl(binaries, kubeconfig, "apply", "-f", "-", stdin=system)
    if policies is not None and policies.is_dir():
        _kubectl(binaries, kubeconfig, "apply", "-k", str(policies))
    if examples is not None and examples.is_dir():
        _kubectl(binaries, kubeconfig, "apply", "-n", DEMO_NAMESPACE, "-f", str(examples))
    agents = _kubectl(
        binaries, kubeconfig, "get", "agents", "-n", DEMO_NAMESPACE, "-o", "jsonpath={.items[*].metadata.name}"
    ).split()
    processes = _start_processes(kubeconfig, agents)
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
