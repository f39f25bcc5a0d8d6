"""The embedded default, and the deprecated `orchestrator` module pip-installed into a fresh virtualenv.

With no kubeconfig, start() brings up its own control plane and operator; both leave nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest

from qorch import UnifiedQuantumOrchestrator
from qorch.devcluster import _assets

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_under(folder: Path) -> list[str]:
    """Command lines of live processes that mention `folder` (the control plane's temp dir is in it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmdline:
                found.append(cmdline)
    return found


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with no ~/.kube/config, no $KUBECONFIG, the built binaries, and a temp dir of the test's own."""
    monkeypatch.setenv("QORCH_CACHE_DIR", str(_assets.cache_root()))  # before HOME moves
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    return temp


def test_start_without_a_kubeconfig_runs_everything_in_process_and_stop_leaves_nothing(no_cluster: Path) -> None:
    """Control plane + in-process operator: agents served, a goal run, observables published; then all gone."""

    async def scenario() -> tuple[dict[str, Any], Any, list[int], UnifiedQuantumOrchestrator]:
        orchestrator = UnifiedQuantumOrchestrator(max_agents=10)
        started = time.monotonic()
        await orchestrator.start()
        assert orchestrator.cluster is not None
        pids = list(orchestrator.cluster.pids)
        for i in range(3):
            await orchestrator.register_agent(f"agent-{i}", {"general"})
        view = await orchestrator.run_goal("hello from the embedded default", timeout=60)
        deadline = time.monotonic() + 15
        while orchestrator.get_system_status()["quantum"]["global_coherence"] is None:
            assert time.monotonic() < deadline, "the embedded operator never published its observables"
            await asyncio.sleep(0.2)
        status = orchestrator.get_system_status()
        await orchestrator.stop()
        await orchestrator.stop()  # twice is harmless
        assert time.monotonic() - started < 60
        return status, view, pids, orchestrator

    status, view, pids, orchestrator = asyncio.run(scenario())
    assert view.phase == "Succeeded"
    assert view.status.execution is not None
    assert view.status.execution.result == "hello from the embedded default"  # the default handler: echo
    assert status["embedded"] is True
    assert status["leader"] is not None
    assert status["leader"].startswith("embedded-")
    assert status["agents"]["by_phase"] == {"Ready": 3}
    assert 0.0 <= status["quantum"]["global_coherence"] <= 1.0
    assert len(pids) == 2
    assert not [pid for pid in pids if _alive(pid)], "etcd or kube-apiserver outlived stop()"
    assert _processes_under(no_cluster) == []
    assert list(no_cluster.glob("qorch-devcluster-*")) == [], "the control plane's temp dir was left behind"
    assert orchestrator.cluster is None


SNIPPET = """
import asyncio
import json

from qorch import UnifiedQuantumOrchestrator


async def main():
    orchestrator = UnifiedQuantumOrchestrator(max_agents=1_000_000)
    await orchestrator.start()
    for i in range(1000):
        await orchestrator.register_agent(f"test-agent-{i}", {"general"})
    tasks = [await orchestrator.submit_task(f"Test task {i}") for i in range(100)]
    status = orchestrator.get_system_status()
    assert status["quantum"]["global_coherence"] > 0.95
    done = await orchestrator.wait(tasks, timeout=180)
    print(json.dumps({"status": status, "phases": sorted({str(v.phase) for v in done.values()})}))
    await orchestrator.stop()


asyncio.run(main())
"""


def test_the_snippet_as_a_new_user_runs_it_with_no_cluster(no_cluster: Path, tmp_path: Path) -> None:
    """The issue's snippet, verbatim, as a script on a machine with no cluster: the embedded default serves it."""
    script = tmp_path / "snippet.py"
    script.write_text(SNIPPET)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["phases"] == ["Succeeded"]
    status = out["status"]
    assert status["embedded"] is True
    assert status["agents"]["registered"] == 1000
    assert status["quantum"]["global_coherence"] > 0.95
    assert status["quantum"]["published_by"] == status["leader"]
    assert _processes_under(no_cluster) == []


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the project's wheel pip-installed (no deps: the project venv lends them)."""
    base = tmp_path_factory.mktemp("venv")
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    venv = base / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    wheel = next(wheels.glob("qorch-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], check=True
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A plain path line: the project venv's packages come after the wheel's, and its .pth files
    # (the editable install of the source tree) are not read.
    (Path(purelib) / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_legacy_one_liner_in_a_fresh_virtualenv(fresh_venv: Path, no_cluster: Path) -> None:
    """`from orchestrator import build_orchestrator; orch = build_orchestrator(5)` works, warns, and cleans up.

    `run_goal_sync` on it submits a goal and waits for the handler's result, and warns too.
    """
    where = subprocess.run(
        [str(fresh_venv), "-c", "import orchestrator, qorch; print(orchestrator.__file__); print(qorch.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(str(fresh_venv.parents[1]) in path for path in where), f"not the installed wheel: {where}"
    one_liner = (
        "from orchestrator import build_orchestrator, run_goal_sync; orch = build_orchestrator(5); "
        "print(run_goal_sync('say hello', orchestrator=orch)); "
        "print(orch.get_system_status()['agents'])"
    )
    done = subprocess.run(
        [str(fresh_venv), "-c", one_liner],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DeprecationWarning: orchestrator.build_orchestrator is deprecated" in done.stderr
    assert "DeprecationWarning: orchestrator.run_goal_sync is deprecated" in done.stderr
    ran = eval(done.stdout.strip().splitlines()[-2])  # noqa: S307 - our own dict's repr
    assert ran["phase"] == "Succeeded", ran
    assert "say hello" in ran["result"], ran
    agents = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - our own dict's repr
    assert agents["registered"] == 5
    assert agents["served"] == 5
    # The interpreter exited without close(): its exit hook stopped the embedded cluster.
    time.sleep(0.5)
    assert _processes_under(no_cluster) == []
    assert list(no_cluster.glob("qorch-devcluster-*")) == []
