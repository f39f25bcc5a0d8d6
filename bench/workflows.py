"""Failures under load (issue 13's acceptance), against a real local control plane, in one run.

Run:  .venv/bin/python bench/workflows.py [--tasks N] [--repeat R] [--write docs/benchmarks.md]

One operator process and three `qorch agent run` processes (capacity 8 each, a handler
that sleeps 0.2 s) run N tasks, in two interleaved kinds of round:
- clean: every attempt succeeds;
- faulty: on good-1 and good-2 an attempt fails with probability 0.2 (drawn from the
  task's name and attempt, so both kinds of round see the same draws); `bad` fails
  every attempt. Retries: at most 6 attempts, backoff 1 s doubling to 4 s with jitter.
  Breakers as the policy's defaults: open after 5 consecutive failures, a 30 s cool-down,
  then one probe (so `bad` is probed again every 30 s, and a good agent that fails 5 in a
  row, which 20% failures make likely over hundreds of attempts, is out for 30 s).
Measured per round: the time from the first task's creation to the last task's final
status (both stamped by the apiserver and the operator on this machine), the failed
share of attempts, the bad agent's attempts and where its breaker opened, and the
handler's log of every attempt that finished, to count lost and doubled tasks.
The limit: faulty <= 1.5 x (clean + B), B being the backoff the unluckiest task could
wait in the faulty round (the full, un-jittered delays of its failed attempts).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

import report
from measure import bounded, progress
from qorch.api import crd
from qorch.controller.kube import KubeApi, Resource, load_config
from qorch.devcluster import ControlPlane

BEGIN, END = "<!-- workflows-bench:begin -->", "<!-- workflows-bench:end -->"
TASKS = Resource("qorch.io", "v1alpha1", "tasks")
AGENTS = Resource("qorch.io", "v1alpha1", "agents")
POLICIES = Resource("qorch.io", "v1alpha1", "schedulingpolicies", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
FINAL = frozenset({"Succeeded", "Failed", "DeadLettered", "Cancelled"})
AGENT_NAMES = ("good-1", "good-2", "bad")
CAPACITY = 8
WORK_S = 0.2
FAIL_RATE = 0.2
THRESHOLD = 5  # the policy's default, as Envoy's consecutive-5xx outlier detection
COOLDOWN_S = 30  # the default too: a good agent unlucky enough to fail 5 in a row is back after it
RETRY = {"maxAttempts": 6, "backoffSeconds": 1, "maxBackoffSeconds": 4}
LIMIT = 1.5
HANDLERS = """
import asyncio, json, os, random
from qorch.agent import Handlers

handlers = Handlers()


@handlers.on("code")
async def work(task):
    await asyncio.sleep(float(os.environ["WORK_S"]))
    draw = random.Random(f"{task.name}/{task.attempt}").random()
    if os.environ["FAULTY"] == "1" and (task.agent == "bad" or draw < float(os.environ["FAIL_RATE"])):
        raise RuntimeError(f"{task.agent} failed attempt {task.attempt}")
    with open(os.environ["FINISHED_LOG"], "a") as out:
        out.write(json.dumps({"task": task.name, "attempt": task.attempt, "agent": task.agent}) + "\\n")
    return "ok"
"""
Row = tuple[str, str, str, str]


@dataclass
class Round:
    """What one round measured."""

    seconds: float
    attempts: int
    failed: int
    succeeded: int
    dead_lettered: int
    other: int
    lost: int  # Succeeded with no finished handler call, or not final at all
    doubled: int  # more than one finished handler call for one task
    bad_attempts: int
    bad_opened_at: int  # consecutive failures when the bad agent's breaker opened (0: never)
    backoff_s: float  # B: the full backoff of the unluckiest task's failed attempts


EVENTS = Resource("", "v1", "events")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stamp(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def backoff_of(failures: int) -> float:
    """The full (un-jittered) backoff after `failures` failed attempts in a row."""
    return sum(
        min(float(RETRY["maxBackoffSeconds"]), RETRY["backoffSeconds"] * 2.0 ** (i - 1)) for i in range(1, failures + 1)
    )


async def list_all(kube: KubeApi, resource: Resource, ns: str) -> list[dict[str, Any]]:
    """Every object of the namespace, in pages."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = await kube.call("GET", resource.path(ns), query={"limit": 1000, "continue": token}, timeout=60)
        items += page["items"]
        token = page["metadata"].get("continue") or None
        if token is None:
            return items


def start(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """A child process writing to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)


async def one_round(kube: KubeApi, plane: ControlPlane, work: Path, ns: str, count: int, *, faulty: bool) -> Round:
    """One round in its own namespace, with its own operator and agents."""
    await kube.call("POST", NAMESPACES.path(), body={"metadata": {"name": ns}})
    finished_log = work / f"{ns}-finished.jsonl"
    env = {**os.environ, "WORK_S": str(WORK_S), "FAULTY": "1" if faulty else "0", "FAIL_RATE": str(FAIL_RATE),
           "FINISHED_LOG": str(finished_log)}  # fmt: skip
    kubeconfig = f"--kubeconfig={plane.admin_kubeconfig}"
    operator = start(
        [sys.executable, "-m", "qorch.cli", "operator", "run", kubeconfig, f"--namespace={ns}",
         f"--metrics-port={free_port()}", "--health-port=0", f"--identity=bench-{ns}",
         f"--lease-name=bench-{ns}"],
        work / f"{ns}-operator.log",
    )  # fmt: skip
    agents = [
        start(
            [
                sys.executable,
                "-m",
                "qorch.cli",
                "agent",
                "run",
                "bench_workflows:handlers",
                f"--name={name}",
                f"--namespace={ns}",
                "--capabilities=code",
                f"--capacity={CAPACITY}",
                kubeconfig,
            ],
            work / f"{ns}-{name}.log",
            env=env,
            cwd=work,
        )
        for name in AGENT_NAMES
    ]
    try:
        while sum((a.get("status") or {}).get("phase") == "Ready" for a in await list_all(kube, AGENTS, ns)) < 3:  # noqa: ASYNC110 - polling the apiserver
            await asyncio.sleep(0.5)
        bodies = [
            {"apiVersion": "qorch.io/v1alpha1", "kind": "Task", "metadata": {"name": f"t{i}"},
             "spec": {"goal": f"task {i}", "requires": ["code"], "retry": RETRY}}
            for i in range(count)
        ]  # fmt: skip
        await bounded([kube.call("POST", TASKS.path(ns), body=b) for b in bodies], 32)
        deadline = time.monotonic() + 300
        while True:
            tasks = await list_all(kube, TASKS, ns)
            if all((t.get("status") or {}).get("phase") in FINAL for t in tasks) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        events = await list_all(kube, EVENTS, ns)
    finally:
        for proc in [*agents, operator]:
            proc.send_signal(signal.SIGTERM)
        for proc in [*agents, operator]:
            proc.wait(timeout=60)
    calls: Counter[str] = Counter()
    if finished_log.exists():
        calls = Counter(json.loads(line)["task"] for line in finished_log.read_text().splitlines() if line.strip())
    phases = Counter((t.get("status") or {}).get("phase") for t in tasks)
    created = min(_stamp(t["metadata"]["creationTimestamp"]) for t in tasks)
    ended = max(
        _stamp(c["lastTransitionTime"])
        for t in tasks
        for c in (t.get("status") or {}).get("conditions") or ()
        if c["type"] == "Scheduled"
    )
    attempts = sum(int((t.get("status") or {}).get("attempts", 0)) for t in tasks)
    succeeded = phases.get("Succeeded", 0)
    names = {t["metadata"]["name"]: (t.get("status") or {}).get("phase") for t in tasks}
    lost = sum(1 for n, p in names.items() if p not in FINAL or (p == "Succeeded" and calls[n] == 0))
    doubled = sum(1 for n in names if calls[n] > 1)
    worst = max(
        int((t.get("status") or {}).get("attempts", 0)) - (names[t["metadata"]["name"]] == "Succeeded") for t in tasks
    )
    bad_attempts = sum(
        1
        for t in tasks
        for h in (t.get("status") or {}).get("history") or ()
        if h.get("agent") == "bad" and h.get("reason") == "Started"
    )
    opened = 0
    for event in events:  # "N consecutive failed attempts: no new work for ..."
        found = re.match(r"(\d+) consecutive", event.get("message", ""))
        if event.get("reason") == "BreakerOpen" and event["involvedObject"]["name"] == "bad" and found:
            opened = int(found.group(1)) if not opened else min(opened, int(found.group(1)))
    return Round(
        seconds=ended - created,
        attempts=attempts,
        failed=attempts - succeeded,
        succeeded=succeeded,
        dead_lettered=phases.get("DeadLettered", 0),
        other=len(tasks) - succeeded - phases.get("DeadLettered", 0),
        lost=lost,
        doubled=doubled,
        bad_attempts=bad_attempts,
        bad_opened_at=opened,
        backoff_s=backoff_of(worst),
    )


async def run(count: int, repeat: int) -> dict[str, list[Round]]:
    """Interleaved clean and faulty rounds."""
    rounds: dict[str, list[Round]] = {"clean": [], "faulty": []}
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as plane:
        work = Path(tmp)
        (work / "bench_workflows.py").write_text(HANDLERS)
        kubectl = [str(plane.binaries.kubectl), f"--kubeconfig={plane.admin_kubeconfig}"]
        subprocess.run([*kubectl, "apply", "-f", "-"], input="---\n".join(crd.render().values()), text=True,
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"],
                       check=True, capture_output=True)  # fmt: skip
        await load_config(str(plane.admin_kubeconfig))
        kube = KubeApi(client.ApiClient(), connections=40)
        try:
            await kube.call("POST", NAMESPACES.path(), body={"metadata": {"name": "qorch-system"}})
            policy = {"apiVersion": "qorch.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "default"},
                      "spec": {"breaker": {"failureThreshold": THRESHOLD, "cooldownSeconds": COOLDOWN_S}}}  # fmt: skip
            await kube.call("POST", POLICIES.path(), body=policy)
            for r in range(repeat):
                for kind in ("clean", "faulty"):
                    progress(f"round {r + 1}/{repeat}: {kind}, {count} tasks")
                    done = await one_round(kube, plane, work, f"{kind}-{r}", count, faulty=kind == "faulty")
                    rounds[kind].append(done)
                    progress(f"  {done}")
        finally:
            await kube.close()
    return rounds


def rows(rounds: dict[str, list[Round]], count: int) -> list[Row]:
    """The table: completion times, the limit, the failure share, the breaker, lost and doubled."""
    clean, faulty = rounds["clean"], rounds["faulty"]
    ratios = [f.seconds / (c.seconds + f.backoff_s) for c, f in zip(clean, faulty, strict=True)]
    ratio = statistics.median(ratios)
    failed_share = statistics.median(f.failed / f.attempts for f in faulty)
    ended_ok = all(f.other == 0 for f in faulty) and all(c.other == 0 for c in clean)
    lost = sum(r.lost for r in clean + faulty)
    doubled = sum(r.doubled for r in clean + faulty)
    opened = [f.bad_opened_at for f in faulty]

    def spread(values: list[float], fmt: str = "{:.1f}") -> str:
        return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

    return [
        (
            f"clean: {count} tasks, 3 agents × {CAPACITY} slots, {WORK_S:g} s handler; first create → last final",
            f"{spread([c.seconds for c in clean])} s",
            "reported",
            "—",
        ),
        (
            (
                f"faulty: the same, good agents fail {FAIL_RATE:.0%} of attempts, `bad` fails all; failed share of "
                f"attempts {failed_share:.0%}; B = full backoff of the unluckiest task "
                f"{spread([f.backoff_s for f in faulty])} s"
            ),
            f"{spread([f.seconds for f in faulty])} s; ÷ (clean + B) {spread(ratios, '{:.2f}')}",
            f"≤ {LIMIT:g}",
            "met" if ratio <= LIMIT else "MISSED",
        ),
        (
            "faulty: every task Succeeded or DeadLettered",
            (
                f"{statistics.median(f.succeeded for f in faulty):.0f} Succeeded, "
                f"{statistics.median(f.dead_lettered for f in faulty):.0f} DeadLettered, "
                f"{sum(f.other for f in faulty)} other"
            ),
            "0 other",
            "met" if ended_ok else "MISSED",
        ),
        (
            f"faulty: `bad`'s breaker (threshold {THRESHOLD}) opened at consecutive failure n; its attempts in all",
            f"n = {', '.join(str(o) for o in opened)}; attempts {', '.join(str(f.bad_attempts) for f in faulty)}",
            f"n = {THRESHOLD}",
            "met" if all(o == THRESHOLD for o in opened) else "MISSED",
        ),
        (
            "lost / run twice (handler finishes per Succeeded task, every round)",
            f"{lost} / {doubled}",
            "0 / 0",
            "met" if lost == 0 and doubled == 0 else "MISSED",
        ),
    ]


def main() -> None:
    """Run the bench; print the table, or write it into docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    began = time.perf_counter()
    rounds = asyncio.run(run(args.tasks, args.repeat))
    command = " ".join(["bench/workflows.py", *sys.argv[1:]])
    caption = (
        f"Command: `.venv/bin/python {command}` ({dt.datetime.now(dt.UTC).date()}, "
        f"{time.perf_counter() - began:.0f} s in all, one local kube-apiserver + etcd, the operator and three "
        f"agent runtimes on the same {os.cpu_count()} cores; medians of {args.repeat} interleaved pairs)."
    )
    text = report.render(BEGIN, END, caption, rows(rounds, args.tasks))
    if args.write:
        report.write_section(args.write, BEGIN, END, "Failures under load (issue: workflow semantics)", text)
    print(text)


if __name__ == "__main__":
    main()
