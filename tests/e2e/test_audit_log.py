"""Issue 14.3: the operator's decisions in the signed, hash-chained audit log, across a leader change.

Two real operator replicas, each with its own audit directory, and a real agent
runtime: tasks succeed, retry, dead-letter, wait for an approval, get rejected;
the leader is killed (-9) and the follower continues the chain from the anchor
on the Lease. Then `qorch audit verify` accepts both directories against the
anchor read from the cluster, replaying the log gives each task's final agent
and outcome as the apiserver holds them (and invariant I5 from it), and a log
cut short below the anchor is caught.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from qorch.api import constants
from qorch.audit import generate_keypair, parse_anchor, read_lines
from qorch.testing import Kubectl
from qorch.testing.invariants import audit_replay, check
from support.api import Api
from support.manifests import approval, policy, task
from support.operators import OperatorFleet
from support.pools import wait_for
from support.runtimes import Runtime

pytestmark = pytest.mark.e2e

QORCH = Path(sys.executable).parent / "qorch"
FAST = (4.0, 3.0, 1.0)  # lease duration, renew deadline, retry period
FINAL = frozenset({"Succeeded", "Failed", "DeadLettered", "Cancelled"})
NO_BACKOFF = {"maxAttempts": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0}


def holder(kubectl: Kubectl, lease: str) -> str:
    """The identity holding a leader Lease, or '' if none yet."""
    got = kubectl.run("get", "lease", lease, "-n", "qorch-system", "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return got.stdout.strip() if got.returncode == 0 else ""


def annotations(kubectl: Kubectl, lease: str) -> dict[str, str]:
    """The leader Lease's annotations."""
    return kubectl.json("get", "lease", lease, "-n", "qorch-system")["metadata"].get("annotations") or {}


def qorch_audit(*args: str) -> subprocess.CompletedProcess[str]:
    """`qorch audit ...` as a user runs it."""
    return subprocess.run([str(QORCH), "audit", *args], capture_output=True, text=True, check=False, timeout=120)


def all_final(api: Api, namespace: str, names: list[str]) -> bool:
    """Whether every named task has ended."""
    phases = api.phases(namespace)
    return all(phases.get(n) in FINAL for n in names)


def test_the_audit_log_survives_a_leader_kill_replays_the_cluster_and_catches_a_cut(
    kubectl: Kubectl, operators: OperatorFleet, runtimes: Callable[..., Runtime], api: Api, tmp_path: Path
) -> None:
    """Decisions of two terms in two replicas' directories: one verified chain whose replay is the cluster."""
    ns = kubectl.namespace
    private, public = tmp_path / "audit.key", tmp_path / "audit.pub"
    generate_keypair(private, public)
    kubectl.apply(policy(breaker={"failureThreshold": 1, "cooldownSeconds": 1}))  # every failure moves it
    agent = runtimes("worker", "--capabilities=code", "--capacity=4")
    lease = f"audit-{ns}"[:60]
    dirs = {name: tmp_path / f"audit-{name}" for name in ("op-a", "op-b")}
    replicas = {
        name: operators.start(
            name, lease_name=lease, timings=FAST, extra=[f"--audit-log={dirs[name]}", f"--audit-key={private}"]
        )
        for name in ("op-a", "op-b")
    }
    leader = wait_for(lambda: holder(kubectl, lease), 30, what="a leader")

    # Term 1: successes, a retry that then succeeds, a dead letter, an approval, a rejection.
    first = [
        task("ok-1"),
        task("ok-2"),
        task("flaky", input={"fail_attempt": "1"}, retry=NO_BACKOFF),
        task("doomed", input={"fail": "yes"}, retry=NO_BACKOFF),
        task("gated", approval={"required": True}),
        task("refused", approval={"required": True}),
    ]
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(first))
    wait_for(lambda: api.phases(ns).get("gated") == "AwaitingApproval", 30, what="the approval gate")
    gated = kubectl.json("get", "qtask", "gated")
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all([approval("yes", "gated", of=gated),
                                                          approval("no", "refused", "Reject")]))  # fmt: skip
    names = [t["metadata"]["name"] for t in first]
    wait_for(lambda: all_final(api, ns, names), 90, what="the first term's tasks to end")
    wait_for(lambda: constants.AUDIT_ANCHOR_ANNOTATION in annotations(kubectl, lease), 10, what="an anchor")

    # The leader dies without a word; the follower continues the chain from the anchor on the Lease.
    replicas[leader].kill(signal.SIGKILL)
    follower = wait_for(lambda: (h := holder(kubectl, lease)) != leader and h, 30, what="the follower to lead")
    second = [task("ok-3"), task("ok-4"), task("doomed-2", input={"fail": "yes"}, retry=NO_BACKOFF)]
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(second))
    names += [t["metadata"]["name"] for t in second]
    wait_for(lambda: all_final(api, ns, names), 90, what="the second term's tasks to end")
    replicas[follower].kill(signal.SIGTERM)  # a clean stop: the release anchors the last entry
    assert replicas[follower].popen.returncode == 0, replicas[follower].tail()
    anchor = parse_anchor(annotations(kubectl, lease)[constants.AUDIT_ANCHOR_ANNOTATION])

    # verify: both replicas' directories, against the anchor read from the cluster.
    from_cluster = ["--lease", f"qorch-system/{lease}", f"--kubeconfig={kubectl.kubeconfig}"]
    logs = [str(d) for d in dirs.values()]
    verified = qorch_audit("verify", *logs, "--public-key", str(public), *from_cluster)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK: "), verified.stdout
    assert f"head {anchor.seq} {anchor.hash}" in verified.stdout.splitlines()[0]
    assert "in 2 segments" in verified.stdout

    assert_replay_is_the_cluster(api, ns, names, logs, public, from_cluster)
    check(api, ns, created=names, completions=agent.handled("finished"),
          replay=audit_replay(logs, [public])).assert_ok()  # fmt: skip
    assert_a_cut_is_caught(tmp_path, dirs, follower, public, from_cluster)


def assert_replay_is_the_cluster(
    api: Api, ns: str, names: list[str], logs: list[str], public: Path, from_cluster: list[str]
) -> None:
    """`qorch audit replay`: each task's final agent and outcome, as the apiserver holds them."""
    replayed = qorch_audit("replay", *logs, "--public-key", str(public), *from_cluster)
    assert replayed.returncode == 0, replayed.stderr
    outcomes = {k.split("/", 1)[1]: tuple(v) for k, v in json.loads(replayed.stdout).items() if k.startswith(f"{ns}/")}
    cluster = {t["metadata"]["name"]: t["status"] for t in api.tasks(ns)}
    assert set(outcomes) == set(cluster) == set(names)
    for name, status in cluster.items():
        agent_now = (status.get("assignment") or {}).get("agent")
        expected = {"Cancelled": "Rejected"}.get(status["phase"], status["phase"])
        assert outcomes[name] == (agent_now, expected), (name, outcomes[name], status)
    assert outcomes["doomed"] == (None, "DeadLettered")
    assert outcomes["flaky"] == ("worker", "Succeeded")
    assert outcomes["refused"][1] == "Rejected"
    kinds = {e["kind"] for d in logs for f in Path(d).glob("*.log") for e in map(json.loads, read_lines(f))}
    expected_kinds = {"leader", "assign", "start", "retry", "finish", "dead-letter", "approve", "reject", "breaker"}
    assert expected_kinds <= kinds, kinds


def assert_a_cut_is_caught(
    tmp_path: Path, dirs: dict[str, Path], follower: str, public: Path, from_cluster: list[str]
) -> None:
    """Cutting the newest segment short (below the anchor on the Lease) is caught."""
    cut = tmp_path / "cut"
    for name, directory in dirs.items():
        shutil.copytree(directory, cut / name)
    newest = max((cut / follower).glob("*.log"))
    newest.write_bytes(b"".join(line + b"\n" for line in read_lines(newest)[:-2]))
    tampered = qorch_audit("verify", str(cut / "op-a"), str(cut / "op-b"), "--public-key", str(public), *from_cluster)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "truncated below an anchor" in tampered.stdout
