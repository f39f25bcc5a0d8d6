"""The CLI's views through the installed binary: `get -w`, `dag show`, `describe`'s DAG lines, `top`, `wait`'s bar.

Piped output is plain text (asserted line by line); on a terminal (a real
pseudo-terminal here) `top` redraws and `wait` draws a progress bar.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from support.api import Api
from support.manifests import policy, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

QORCH = Path(sys.executable).parent / "qorch"


def in_terminal(argv: list[str], timeout: float = 60) -> str:
    """Run `argv` with stdout and stderr on a pseudo-terminal; everything it drew."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=follower, stdout=follower, stderr=follower, env={**os.environ, "COLUMNS": "120"}
    )
    os.close(follower)
    drawn = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            drawn += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(leader)
    assert proc.returncode == 0, drawn.decode(errors="replace")
    return drawn.decode(errors="replace")


def test_views_of_tasks_agents_and_the_dag(
    kubectl: Kubectl,
    operators: OperatorFleet,
    runtimes: Callable[..., Runtime],
    qorch_control_plane: ControlPlane,
    api: Api,
) -> None:
    """A chain a -> b -> c, a task waiting on a missing one and a two-task cycle, seen every way the CLI shows them."""
    ns = kubectl.namespace
    config = f"--kubeconfig={qorch_control_plane.admin_kubeconfig}"

    def qorch(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(QORCH), *args, f"--namespace={ns}", config]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)

    kubectl.apply(policy())
    operators.start("op")
    runtimes("viewer", "--capabilities=code", "--capacity=2")
    watching = subprocess.Popen(
        [str(QORCH), "get", "tasks", "-w", f"--namespace={ns}", config], stdout=subprocess.PIPE, text=True
    )
    bodies = [
        task("a", input={"sleep": "1"}),
        task("b", dependsOn=["a"]),
        task("c", dependsOn=["b"]),
        task("d", dependsOn=["ghost"]),
        task("loop-1", dependsOn=["loop-2"]),
        task("loop-2", dependsOn=["loop-1"]),
    ]
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(bodies))
    waited = in_terminal([str(QORCH), "wait", "a", "b", "c", "--timeout=90", f"--namespace={ns}", config])
    assert "3/3" in waited, waited  # the bar reached the end
    assert "Succeeded 3" in waited, waited

    # get -w: a header, then a line per change, the last one for c saying Succeeded.
    seen: list[str] = []
    assert watching.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(line.split()[:2] == ["c", "Succeeded"] for line in seen[1:]):
        seen.append(watching.stdout.readline().rstrip("\n"))
    watching.terminate()
    watching.wait(timeout=10)
    assert seen[0].split() == ["NAME", "PHASE", "AGENT", "PRIORITY", "ATTEMPTS", "REASON"]
    assert [line.split()[:3] for line in seen if line.startswith("c ")][-1] == ["c", "Succeeded", "viewer"]
    assert {line.split()[0] for line in seen[1:]} >= {"a", "b", "c"}

    check_dag(qorch, ns, api)
    check_top(qorch, ns, api, config)


Qorch = Callable[..., subprocess.CompletedProcess[str]]


def check_dag(qorch: Qorch, ns: str, api: Api) -> None:
    """`dag show` as text and JSON, a cycle cut and named, a missing dependency, `describe`'s DAG lines."""
    shown = qorch("dag", "show", "b")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "b (Succeeded)", "needs:", "└── a (Succeeded)", "needed by:", "└── c (Succeeded)",
    ]  # fmt: skip
    tree = json.loads(qorch("dag", "show", "c", "-o", "json").stdout)
    assert tree == {
        "name": "c", "phase": "Succeeded",
        "needs": [{"name": "b", "phase": "Succeeded", "needs": [{"name": "a", "phase": "Succeeded"}]}],
    }  # fmt: skip
    wait_for(lambda: api.phases(ns).get("loop-1") == "Blocked", 30, what="the cycle to be held")
    cycle = qorch("dag", "show", "loop-1").stdout.splitlines()
    assert cycle[:4] == ["loop-1 (Blocked)", "needs:", "└── loop-2 (Blocked)", "    └── loop-1 (Blocked)  ← cycle"], (
        cycle
    )
    assert qorch("dag", "show", "d").stdout.splitlines()[:3] == ["d (Blocked)", "needs:", "└── ghost (missing)"]
    missing = qorch("dag", "show", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: task 'nope' in {ns}: not found (check the name and the namespace)"
    described = qorch("describe", "b").stdout
    assert "Needs:      a (Succeeded)" in described
    assert "Needed by:  c (Succeeded)" in described
    as_json = json.loads(qorch("describe", "b", "-o", "json").stdout)
    assert as_json["dag"] == {"needs": ["a (Succeeded)"], "neededBy": ["c (Succeeded)"]}
    assert as_json["status"]["phase"] == "Succeeded"
    assert yaml.safe_load(qorch("describe", "b", "-o", "yaml").stdout)["name"] == "b"


def check_top(qorch: Qorch, ns: str, api: Api, config: str) -> None:
    """`top` as JSON (equal to the apiserver's counts), as plain text, and live on a terminal."""

    # top: one snapshot when piped or as JSON, equal to what the apiserver holds.
    def published() -> dict | None:
        snap = json.loads(qorch("top", "-o", "json").stdout)
        return snap if snap["scheduler"]["observables"] else None

    snap = wait_for(published, 30, what="the operator to publish its observables")
    phases = Counter(t["status"]["phase"] for t in api.tasks(ns))
    assert snap["tasks"]["byPhase"] == dict(phases)
    assert snap["tasks"]["total"] == 6
    assert snap["agents"] == [{"name": "viewer", "phase": "Ready", "active": 0, "capacity": 2, "breaker": "Closed"}]
    assert snap["scheduler"]["leader"] == "op"
    assert 0.0 <= snap["scheduler"]["observables"]["coherence"] <= 1.0
    text = qorch("top").stdout.splitlines()
    assert text[0] == f"namespace {ns}: 6 tasks, 0 waiting, 0 active"
    assert text[2].startswith("scheduler: ")
    assert text[3].split() == ["AGENT", "PHASE", "ACTIVE", "LOAD", "BREAKER"]
    assert text[4].split()[:3] == ["viewer", "Ready", "0/2"]
    live = in_terminal([str(QORCH), "top", "-n", "2", "--interval", "0.2", f"--namespace={ns}", config])
    assert "qorch top" in live
    assert "viewer" in live
