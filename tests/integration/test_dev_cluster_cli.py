"""`qorch dev cluster up|status|kubeconfig|down` drives a background control plane."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from qorch.devcluster import ControlPlane

pytestmark = pytest.mark.integration


def _qorch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qorch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_up_status_kubeconfig_down(tmp_path: Path, qorch_control_plane: ControlPlane) -> None:
    """The background control plane answers kubectl, reports its state, and stops cleanly."""
    env = dict(
        os.environ,
        QORCH_CACHE_DIR=str(tmp_path),
        QORCH_K8S_ASSETS=str(qorch_control_plane.binaries.folder),
    )
    assert _qorch(env, "dev", "cluster", "status").returncode == 1

    up = _qorch(env, "dev", "cluster", "up")
    assert up.returncode == 0, up.stderr
    kubeconfig = tmp_path / "dev" / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout

    status = _qorch(env, "dev", "cluster", "status", "-o", "json")
    assert status.returncode == 0
    state = json.loads(status.stdout)
    assert state["up"] is True
    assert _qorch(env, "dev", "cluster", "kubeconfig").stdout.strip() == str(kubeconfig)

    kubectl = str(qorch_control_plane.binaries.kubectl)
    got = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "get", "ns", "default", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert got.stdout.strip() == "namespace/default"

    # A second `up` is idempotent: same server.
    again = _qorch(env, "dev", "cluster", "up")
    assert state["server"] in again.stdout

    down = _qorch(env, "dev", "cluster", "down")
    assert down.returncode == 0
    assert "stopped" in down.stdout
    deadline = time.monotonic() + 10
    pids = [state["supervisor_pid"], *state["pids"]]
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)
    assert not kubeconfig.exists()
    assert list((tmp_path / "dev" / "runs").iterdir()) == []
    assert _qorch(env, "dev", "cluster", "status").returncode == 1
    no_cluster = _qorch(env, "dev", "cluster", "kubeconfig")
    assert no_cluster.returncode == 1
    assert "qorch dev cluster up" in no_cluster.stderr


def test_dev_up_installs_crds_policy_and_examples(tmp_path: Path, qorch_control_plane: ControlPlane) -> None:
    """`qorch dev up` (the README's main job) leaves CRDs, the policy and the examples in place."""
    env = dict(os.environ, QORCH_CACHE_DIR=str(tmp_path), QORCH_K8S_ASSETS=str(qorch_control_plane.binaries.folder))
    examples = Path(__file__).parents[2] / "examples"
    try:
        up = _qorch(env, "dev", "up", "--examples", str(examples))
        assert up.returncode == 0, up.stderr
        assert "schedulingpolicy.qorch.io/default" in up.stdout
        assert "task.qorch.io/fetch-sales-data" in up.stdout
        assert f"export KUBECONFIG={tmp_path / 'dev' / 'kubeconfig'}" in up.stdout
        again = _qorch(env, "dev", "up", "--examples", str(examples))
        assert again.returncode == 0, again.stderr
        urls = re.findall(r"operator metrics: (\S+)", up.stdout)
        assert len(urls) == 2
        deadline = time.monotonic() + 60
        leaders = 0.0
        while time.monotonic() < deadline and leaders != 1:
            leaders = sum(_metric(url, "qorch_leader") for url in urls)
            time.sleep(1)
        assert leaders == 1  # two replicas, one leads
        # The demo DAG runs to the end on real agent runtimes with the demo handlers.
        kubeconfig = tmp_path / "dev" / "kubeconfig"
        kubectl = [str(qorch_control_plane.binaries.kubectl), f"--kubeconfig={kubeconfig}", "-n", "qorch-demo"]
        dag = ("fetch-sales-data", "clean-sales-data", "forecast-sales", "write-sales-report", "publish-sales-report")
        deadline = time.monotonic() + 120
        results: dict[str, str] = {}
        while time.monotonic() < deadline and len(results) < len(dag):
            listed = subprocess.run(
                [*kubectl, "get", "tasks", "-o", "json"], capture_output=True, text=True, check=True
            )
            results = {
                t["metadata"]["name"]: (t["status"].get("execution") or {}).get("result", "")
                for t in json.loads(listed.stdout)["items"]
                if t["metadata"]["name"] in dag and (t.get("status") or {}).get("phase") == "Succeeded"
            }
            time.sleep(1)
        assert sorted(results) == sorted(dag), results
        assert all(r.startswith("demo: ") for r in results.values()), results
        processes = json.loads((tmp_path / "dev" / "processes.json").read_text())
        pids = [p["pid"] for p in processes.values()]
        _assert_runs_under_service_account_tokens(kubectl[:2], tmp_path / "dev", processes)
    finally:
        down = _qorch(env, "dev", "down")
    assert down.stdout.strip() == "stopped"
    assert _qorch(env, "dev", "cluster", "status").returncode == 1
    assert not [p for p in pids if _running(p)]


def _assert_runs_under_service_account_tokens(
    kubectl: list[str], state: Path, processes: dict[str, dict[str, int]]
) -> None:
    """The base is installed but its Deployment, and every process `up` started runs with a ServiceAccount token."""
    listed = subprocess.run(
        [*kubectl, "get", "serviceaccount,deployment,clusterrole", "-A", "-l", "app.kubernetes.io/part-of=qorch",
         "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name} {end}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert set(listed.stdout.split()) == {
        "ServiceAccount/qorch-operator",
        "ClusterRole/qorch-operator",
        "ClusterRole/qorch-operator-metrics-auth",
        "ClusterRole/qorch-agent",
    }, listed.stdout  # no Deployment: no kubelet would run its pods
    users = {"operator": "system:serviceaccount:qorch-system:qorch-operator",
             "agent": "system:serviceaccount:qorch-demo:qorch-demo-agent"}  # fmt: skip
    for who, user in users.items():
        config = state / f"{who}.kubeconfig"
        assert set(yaml.safe_load(config.read_text())["users"][0]["user"]) == {"token"}
        whoami = subprocess.run(
            [kubectl[0], f"--kubeconfig={config}", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert whoami.stdout == user
    for name, process in processes.items():
        argv = Path(f"/proc/{process['pid']}/cmdline").read_bytes().decode().split("\0")
        who = "operator" if name.startswith("operator") else "agent"
        assert f"--kubeconfig={state / f'{who}.kubeconfig'}" in argv, (name, argv)
    holder = subprocess.run(
        [*kubectl, "get", "lease", "qorch-operator", "-n", "qorch-system", "-o", "jsonpath={.spec.holderIdentity}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert holder.stdout in {"dev-operator-1", "dev-operator-2"}


def _metric(url: str, name: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - an http URL qorch printed
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(v) for v in re.findall(rf"^{name} (\S+)$", text, re.MULTILINE))


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
