"""Operator benchmark against a real local control plane, in one run.

Run:  .venv/bin/python bench/e2e.py [--quick] [--write docs/benchmarks.md]

1. backlog: N tasks exist before the operator starts; time until all are assigned, and
   assignment throughput (first to last write) ÷ a raw client sending the same status
   patches at the same concurrency, in the same run;
2. latency: tasks offered at 50/s; create→assigned measured by the client (send time to
   the watch event that shows phase Assigned), p50/p95;
3. memory: operator peak RSS (VmHWM) with A agents and T tasks, all scheduled.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch

import report
from qorch.api import crd
from qorch.devcluster import ControlPlane, _ports

BEGIN, END = "<!-- e2e-bench:begin -->", "<!-- e2e-bench:end -->"
GROUP, VERSION = "qorch.io", "v1alpha1"
CONCURRENCY = 16  # the operator's default write concurrency
Row = tuple[str, str, str, str]


def progress(message: str) -> None:
    """Say what the bench is doing (stderr), so a slow stage is visible."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _bounded(coros: list[Any], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with gate:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def seed(api: client.ApiClient, ns: str, agents: int, capacity: int, tasks: int, prefix: str = "t") -> None:
    """Namespace, policy, agents with fresh Leases, and tasks, created concurrently."""
    core, objects, leases = client.CoreV1Api(api), client.CustomObjectsApi(api), client.CoordinationV1Api(api)
    for name in (ns, "qorch-system"):
        try:
            await core.create_namespace({"metadata": {"name": name}})
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
    skills = ["code", "review", "write", "data"]
    await _bounded(
        [
            objects.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                "agents",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Agent",
                    "metadata": {"name": f"agent-{i}"},
                    "spec": {
                        "capabilities": [skills[i % 4], skills[(i + 1) % 4]],
                        "capacity": capacity,
                        "clearance": "secret",
                    },
                },
            )
            for i in range(agents)
        ],
        32,
    )
    await _bounded(
        [
            leases.create_namespaced_lease(
                ns,
                {
                    "metadata": {"name": f"qorch-agent-agent-{i}"},
                    "spec": {"holderIdentity": f"agent-{i}", "leaseDurationSeconds": 3600, "renewTime": _now()},
                },
            )
            for i in range(agents)
        ],
        32,
    )
    await create_tasks(api, ns, tasks, prefix)


async def create_tasks(api: client.ApiClient, ns: str, count: int, prefix: str) -> None:
    """`count` schedulable tasks named prefix-i."""
    objects = client.CustomObjectsApi(api)
    skills = ["code", "review", "write", "data"]
    await _bounded(
        [
            objects.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                "tasks",
                task_body(f"{prefix}-{i}", f"task {i}", skills[i % 4], (i * 37) % 1000),
            )
            for i in range(count)
        ],
        32,
    )


def task_body(name: str, goal: str, skill: str, priority: int) -> dict[str, Any]:
    """A schedulable Task needing one skill."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"goal": goal, "requires": [skill], "priority": priority},
    }


def metric(port: int, name: str) -> float:
    """Sum of one Prometheus metric of the operator (0 if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def start_operator(kubeconfig: Path, workdir: Path, port: int, namespace: str) -> subprocess.Popen[bytes]:
    """One operator replica on the given metrics port."""
    log = (workdir / f"operator-{port}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qorch.cli",
            "operator",
            "run",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--metrics-port={port}",
            "--health-port=0",
            f"--identity=bench-{port}",
            f"--lease-name=bench-{namespace}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_assigned(port: int, target: int, timeout: float) -> tuple[float, float, float]:
    """(seconds from now to the first write, to the last write, final count), by polling metrics."""
    start = time.monotonic()
    first = last = -1.0
    count = 0.0
    while time.monotonic() - start < timeout:
        count = metric(port, "qorch_assignments_total")
        if count > 0 and first < 0:
            first = time.monotonic() - start
        if count >= target:
            last = time.monotonic() - start
            break
        time.sleep(0.2)
    return first, last, count


def leader_after(log: Path, started_wall: float) -> float:
    """Seconds from the operator's start until its log says it became leader."""
    for line in log.read_text(errors="replace").splitlines():
        if "became leader" in line:
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            return stamp - started_wall
    return float("nan")


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


async def raw_patches(api: client.ApiClient, ns: str, count: int, prefix: str) -> float:
    """Seconds a raw client needs to send `count` assignment-shaped CAS status patches at CONCURRENCY."""
    objects: Any = client.CustomObjectsApi(api)
    listed = await objects.list_namespaced_custom_object(GROUP, VERSION, ns, "tasks")
    targets = [t for t in listed["items"] if t["metadata"]["name"].startswith(prefix + "-")][:count]

    async def patch(task: dict[str, Any]) -> None:
        body = {
            "metadata": {"resourceVersion": task["metadata"]["resourceVersion"]},
            "status": {
                "phase": "Assigned",
                "assignment": {
                    "agent": "agent-0",
                    "epoch": 0,
                    "assignedAt": _now()[:19] + "Z",
                    "score": 0.9,
                    "probability": 0.5,
                    "strategy": "quantum",
                },
                "conditions": [
                    {
                        "type": "Scheduled",
                        "status": "True",
                        "reason": "Scheduled",
                        "message": "raw",
                        "lastTransitionTime": _now()[:19] + "Z",
                        "observedGeneration": 1,
                    }
                ],
                "observedGeneration": 1,
            },
        }
        await objects.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            ns,
            "tasks",
            task["metadata"]["name"],
            body,
            field_manager="bench-raw",
            _content_type="application/merge-patch+json",
        )

    started = time.perf_counter()
    await _bounded([patch(t) for t in targets], CONCURRENCY)
    return time.perf_counter() - started


async def latency_run(api: client.ApiClient, ns: str, rate: float, seconds: float) -> list[float]:
    """Offer tasks at `rate`/s; return create→assigned latencies seen through a watch."""
    objects: Any = client.CustomObjectsApi(api)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    total = int(rate * seconds)

    async def watcher() -> None:
        w = watch.Watch()
        async with w.stream(
            objects.list_namespaced_custom_object, GROUP, VERSION, ns, "tasks", timeout_seconds=int(seconds) + 60
        ) as stream:
            async for event in stream:
                obj = event["object"]
                name = obj["metadata"]["name"]
                if name in sent and name not in seen and (obj.get("status") or {}).get("phase") == "Assigned":
                    seen[name] = time.perf_counter()
                    if len(seen) >= total:
                        return

    watching = asyncio.create_task(watcher())
    await asyncio.sleep(1.0)
    for i in range(total):
        name = f"live-{i}"
        sent[name] = time.perf_counter()
        asyncio.create_task(
            objects.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                "tasks",
                task_body(name, "live", "code", 500),
            )
        )
        await asyncio.sleep(1.0 / rate)
    try:
        await asyncio.wait_for(watching, 60)
    except TimeoutError:
        watching.cancel()
    return [seen[n] - sent[n] for n in sent if n in seen]


async def run(quick: bool, stages: set[str]) -> list[Row]:
    rows: list[Row] = []
    backlog = 2_000 if quick else 10_000
    mem_agents, mem_tasks = (1_000, 10_000) if quick else (10_000, 100_000)
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as plane:
        work = Path(tmp)
        kubectl = str(plane.binaries.kubectl)
        subprocess.run(
            [kubectl, f"--kubeconfig={plane.admin_kubeconfig}", "apply", "-f", "-"],
            input="---\n".join(crd.render().values()),
            text=True,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                kubectl,
                f"--kubeconfig={plane.admin_kubeconfig}",
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ],
            check=True,
            capture_output=True,
        )
        await config.load_kube_config(config_file=str(plane.admin_kubeconfig))
        api = client.ApiClient()
        api.configuration.connection_pool_maxsize = 64
        # Leases are written once at seeding; a long grace keeps seeded agents Ready for the whole run.
        await client.CustomObjectsApi(api).create_cluster_custom_object(
            GROUP,
            VERSION,
            "schedulingpolicies",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SchedulingPolicy",
                "metadata": {"name": "default"},
                "spec": {"agentGraceSeconds": 3600},
            },
        )

        # 1. Backlog and throughput against a raw client.
        if "backlog" in stages:
            rows += await backlog_stage(api, plane, work, backlog)
        # 2. Latency at 50 tasks/s offered.
        if "latency" in stages:
            rows += await latency_stage(api, plane, work, quick)
        # 3. Memory with many agents and tasks.
        if "memory" in stages:
            rows += await memory_stage(api, plane, work, mem_agents, mem_tasks)
        await api.close()
    return rows


async def backlog_stage(api: client.ApiClient, plane: ControlPlane, work: Path, backlog: int) -> list[Row]:
    """Backlog time and throughput ÷ raw client."""
    rows: list[Row] = []
    progress("seeding the backlog")
    await seed(api, "backlog", agents=500, capacity=40, tasks=backlog)
    progress("seeding the raw client's tasks")
    await seed(api, "rawns", agents=1, capacity=1, tasks=backlog, prefix="raw")
    port = _ports.free_port()
    started = time.monotonic()
    started_wall = time.time()
    op = start_operator(plane.admin_kubeconfig, work, port, "backlog")
    progress("operator started on the backlog")
    _first, last, count = wait_assigned(port, backlog, timeout=300)
    backlog_s = time.monotonic() - started if last >= 0 else float("nan")
    led = leader_after(work / f"operator-{port}.log", started_wall)
    progress(f"backlog: {count:.0f} assigned, leader after {led:.1f}s, last write {last:.1f}s")
    op.terminate()
    op.wait(timeout=30)
    raw_s = await raw_patches(api, "rawns", backlog, "raw")
    progress(f"raw client: {raw_s:.1f}s")
    ours_rate = backlog / (last - led) if last > led else float("nan")  # from winning the Lease
    raw_rate = backlog / raw_s
    ratio = ours_rate / raw_rate
    rows.append(
        (
            f"assignment throughput ÷ raw client, same {backlog:,} CAS status patches at concurrency {CONCURRENCY}",
            f"{ours_rate:,.0f}/s ÷ {raw_rate:,.0f}/s = {ratio:.2f}",
            "≥ 0.8",
            "met" if ratio >= 0.8 else "MISSED",
        )
    )
    rows.append(
        (
            (
                f"time until a {backlog:,}-task backlog is fully assigned (operator start → last write, "
                f"{int(count):,} written; it led after {led:.1f} s)"
            ),
            f"{backlog_s:.1f} s",
            "reported",
            "—",
        )
    )

    return rows


async def latency_stage(api: client.ApiClient, plane: ControlPlane, work: Path, quick: bool) -> list[Row]:
    """create→assigned latency at 50 tasks/s offered."""
    rows: list[Row] = []
    await seed(api, "live", agents=200, capacity=50, tasks=0)
    port = _ports.free_port()
    op = start_operator(plane.admin_kubeconfig, work, port, "live")
    await asyncio.sleep(8)  # leader elected, caches synced
    progress("offering tasks at 50/s")
    latencies = await latency_run(api, "live", rate=50, seconds=10 if quick else 20)
    op.terminate()
    op.wait(timeout=30)
    p50 = statistics.median(latencies) * 1000
    p95 = sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000
    rows.append(
        (
            f"create→assigned at 50 tasks/s offered ({len(latencies)} tasks, client clock via watch)",
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms",
            "p95 ≤ 100 ms",
            "met" if p95 <= 100 else "MISSED",
        )
    )

    return rows


async def memory_stage(
    api: client.ApiClient, plane: ControlPlane, work: Path, mem_agents: int, mem_tasks: int
) -> list[Row]:
    """Peak operator RSS with many agents and tasks."""
    rows: list[Row] = []
    progress(f"seeding {mem_agents} agents and {mem_tasks} tasks")
    await seed(api, "big", agents=mem_agents, capacity=20, tasks=mem_tasks)
    progress("operator on the big namespace")
    port = _ports.free_port()
    op = start_operator(plane.admin_kubeconfig, work, port, "big")
    _, last_big, count_big = wait_assigned(port, mem_tasks, timeout=1800)
    rss = peak_rss_mib(op.pid)
    op.terminate()
    op.wait(timeout=30)
    rows.append(
        (
            (
                f"operator peak RSS with {mem_agents:,} Agents and {mem_tasks:,} Tasks (VmHWM; "
                f"{int(count_big):,} assigned in {last_big:.0f} s)"
            ),
            f"{rss:.0f} MiB",
            "≤ 500 MiB",
            "met" if rss <= 500 else "MISSED",
        )
    )
    return rows


def main() -> None:
    """Run and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--stages", default="backlog,latency,memory", help="comma-separated subset to run")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = asyncio.run(run(args.quick, set(args.stages.split(","))))
    stages = "" if args.stages == "backlog,latency,memory" else f" --stages {args.stages}"
    command = f"`.venv/bin/python bench/e2e.py{' --quick' if args.quick else ''}{stages} --write docs/benchmarks.md`"
    text = report.render(
        BEGIN,
        END,
        f"Command: {command} ({time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s in all, "
        "one local kube-apiserver + etcd on the same 2 cores as the operator).",
        rows,
    )
    print(text)
    if args.write:
        report.write_section(args.write, BEGIN, END, "Operator (issue: the operator)", text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
