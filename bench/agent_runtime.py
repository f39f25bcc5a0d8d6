"""Agent runtime throughput against a real local control plane, in one run.

Run:  .venv/bin/python bench/agent_runtime.py [--tasks N] [--repeat R] [--write docs/benchmarks.md]

N tasks exist; one agent claims and reports an attempt of each: two compare-and-set
status writes per attempt.
- raw: all N are assigned up front, and a client sends exactly those two merge
  patches per task (the claim, then the finish on the version the claim returned),
  `capacity` at once, nothing else;
- runtime: `qorch agent run` with a no-op async handler and the same capacity, the
  path a user takes (watch, claim, run, read back, report). This bench stands in for
  the operator, as the operator would: it keeps `capacity` tasks assigned to the agent,
  assigning the next one as soon as the watch shows one finished (one status write,
  which the raw side does not pay for).
Attempts per second from the first claim to the last finish (the runtime's own
`startedAt`/`finishedAt` stamps, this machine's clock), interleaved rounds, medians.
The issue's target: the runtime sustains ≥ 200 attempts/s; the ratio to raw is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

import report
from measure import bounded, cpu_seconds, progress
from qorch.api import crd, protocol
from qorch.controller.kube import KubeApi, Resource, load_config
from qorch.devcluster import ControlPlane

BEGIN, END = "<!-- agent-runtime-bench:begin -->", "<!-- agent-runtime-bench:end -->"
TASKS = Resource("qorch.io", "v1alpha1", "tasks")
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
MERGE = "application/merge-patch+json"
TARGET = 200.0  # attempts/s
HANDLERS = """
from qorch.agent import Handlers

handlers = Handlers()


@handlers.on("code")
async def noop(task):
    return "ok"
"""
Row = tuple[str, str, str, str]


def _stamp(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


async def create_tasks(kube: KubeApi, ns: str, agent: str, count: int) -> list[dict[str, Any]]:
    """`count` tasks requiring `code`, as created."""
    bodies = [
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": f"{agent}-{i}"},
            "spec": {"goal": f"task {i}", "requires": ["code"]},
        }
        for i in range(count)
    ]
    return list(await bounded([kube.call("POST", TASKS.path(ns), body=b) for b in bodies], 32))


async def assign(kube: KubeApi, ns: str, agent: str, task: dict[str, Any]) -> None:
    """What the operator writes: Assigned to `agent` as attempt 1, compare-and-set."""
    status = {"phase": "Assigned", "assignment": {"agent": agent, "attempt": 1, "epoch": 1}}
    await kube.call(
        "PATCH",
        TASKS.path(ns, task["metadata"]["name"], "status"),
        body={"metadata": {"resourceVersion": task["metadata"]["resourceVersion"]}, "status": status},
        content_type=MERGE,
    )


async def feed(kube: KubeApi, ns: str, agent: str, tasks: list[dict[str, Any]], capacity: int, total: int) -> None:
    """Keep `capacity` of `tasks` assigned to `agent` until `total` tasks have finished."""
    waiting = list(reversed(tasks))
    finished: set[str] = set()
    listed = await kube.call("GET", TASKS.path(ns), query={"limit": 1})
    writes: set[asyncio.Task[None]] = set()

    def next_one() -> None:
        if waiting:
            write = asyncio.create_task(assign(kube, ns, agent, waiting.pop()))
            writes.add(write)
            write.add_done_callback(writes.discard)

    for _ in range(capacity):
        next_one()
    query = {"watch": True, "resourceVersion": listed["metadata"]["resourceVersion"], "timeoutSeconds": 600}
    async with kube.stream(TASKS.path(ns), query=query, timeout=660) as events:
        async for event in events:
            body = event.get("object") or {}
            name = (body.get("metadata") or {}).get("name")
            execution = (body.get("status") or {}).get("execution") or {}
            if name and execution.get("finishedAt") and name not in finished:
                finished.add(name)
                next_one()
                if len(finished) == total:
                    break
    await asyncio.gather(*writes)


async def list_tasks(kube: KubeApi, ns: str) -> list[dict[str, Any]]:
    """Every task of the namespace, in pages."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = await kube.call("GET", TASKS.path(ns), query={"limit": 1000, "continue": token}, timeout=60)
        items += page["items"]
        token = page["metadata"].get("continue") or None
        if token is None:
            return items


async def raw_round(kube: KubeApi, ns: str, agent: str, capacity: int) -> float:
    """Seconds for the claim and the finish of every task, `capacity` in flight, nothing else."""
    tasks = await list_tasks(kube, ns)

    async def attempt(task: dict[str, Any]) -> None:
        name = task["metadata"]["name"]
        attempt = protocol.AttemptId(task["metadata"]["uid"], 1)
        started = protocol.timestamp()
        path = TASKS.path(ns, name, "status")
        claim = protocol.claim_patch(
            attempt, agent=agent, resource_version=task["metadata"]["resourceVersion"], now=started
        )
        claimed = await kube.call("PATCH", path, body=claim, content_type=MERGE)
        finish = protocol.finish_patch(
            attempt,
            agent=agent,
            resource_version=claimed["metadata"]["resourceVersion"],
            started_at=started,
            result="ok",
        )
        await kube.call("PATCH", path, body=finish, content_type=MERGE)

    began = time.perf_counter()
    await bounded([attempt(t) for t in tasks], capacity)
    return time.perf_counter() - began


async def runtime_round(
    kube: KubeApi,
    plane: ControlPlane,
    work: Path,
    ns: str,
    agent: str,
    capacity: int,
    tasks: list[dict[str, Any]],
    *,
    fed: bool,
) -> tuple[float, float]:
    """(seconds from the first claim to the last finish, runtime CPU seconds) for `qorch agent run`.

    fed: `capacity` tasks assigned at a time, as the operator does. Else: a pool agent (capacity =
    every task) with every task assigned up front, like the raw client's; its writes go through the
    same 64 connections the raw client has.
    """
    if not fed:
        await bounded([assign(kube, ns, agent, t) for t in tasks], 32)
        capacity = len(tasks)
    argv = [
        sys.executable, "-m", "qorch.cli", "agent", "run", "bench_noop:handlers", f"--name={agent}",
        f"--namespace={ns}", "--capabilities=code", f"--capacity={capacity}",
        f"--kubeconfig={plane.admin_kubeconfig}",
    ]  # fmt: skip
    log = work / f"{agent}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=work, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        feeding = asyncio.create_task(feed(kube, ns, agent, tasks if fed else [], capacity, len(tasks)))
        while not feeding.done():
            await asyncio.wait([feeding], timeout=2.0)
            if proc.poll() is not None:
                feeding.cancel()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the runtime stopped ({proc.returncode}):\n{tail}")
        await feeding
        cpu = cpu_seconds(proc.pid)
        finished = [((t.get("status") or {}).get("execution") or {}) for t in await list_tasks(kube, ns)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    errors = [e for e in finished if e.get("error")]
    if errors:
        raise RuntimeError(f"{len(errors)} attempts failed, e.g. {errors[0]}")
    first = min(_stamp(e["startedAt"]) for e in finished)
    last = max(_stamp(e["finishedAt"]) for e in finished)
    return last - first, cpu


async def run(count: int, repeat: int, capacity: int) -> list[Row]:
    """Interleaved raw and runtime rounds; one row each and the ratio."""
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as plane:
        work = Path(tmp)
        (work / "bench_noop.py").write_text(HANDLERS)
        subprocess.run(
            [str(plane.binaries.kubectl), f"--kubeconfig={plane.admin_kubeconfig}", "apply", "-f", "-"],
            input="---\n".join(crd.render().values()), text=True, check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [str(plane.binaries.kubectl), f"--kubeconfig={plane.admin_kubeconfig}", "wait",
             "--for=condition=Established", "crd", "--all", "--timeout=60s"],
            check=True, capture_output=True,
        )  # fmt: skip
        await load_config(str(plane.admin_kubeconfig))
        kube = KubeApi(client.ApiClient(), connections=capacity + 8)
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        cpu: dict[str, list[float]] = {side: [] for side in SIDES}  # the runtime's, ms per attempt
        plane_ms: dict[str, list[float]] = {side: [] for side in SIDES}  # apiserver + etcd, ms per attempt
        try:
            for r in range(repeat):
                for side in SIDES:
                    ns = f"{side}-{r}"
                    await kube.call("POST", NAMESPACES.path(), body={"metadata": {"name": ns}})
                    agent = f"{side}-agent-{r}"
                    progress(f"round {r + 1}/{repeat}: {side}, {count} attempts")
                    tasks = await create_tasks(kube, ns, agent, count)
                    before = sum(cpu_seconds(pid) for pid in plane.pids)
                    if side == "raw":
                        await bounded([assign(kube, ns, agent, t) for t in tasks], 32)
                        rates[side].append(count / await raw_round(kube, ns, agent, capacity))
                    else:
                        fed = side == "fed"
                        seconds, used = await runtime_round(kube, plane, work, ns, agent, capacity, tasks, fed=fed)
                        rates[side].append(count / seconds)
                        cpu[side].append(used / count * 1000)
                    plane_ms[side].append((sum(cpu_seconds(pid) for pid in plane.pids) - before) / count * 1000)
                    progress(f"  {rates[side][-1]:.0f} attempts/s")
        finally:
            await kube.close()
    return rows(rates, cpu, plane_ms, count, repeat, capacity)


SIDES = ("raw", "pool", "fed")


def rows(
    rates: dict[str, list[float]],
    cpu: dict[str, list[float]],
    plane_ms: dict[str, list[float]],
    count: int,
    repeat: int,
    capacity: int,
) -> list[Row]:
    """The table: each side's rate, the target on the pool runtime, the ratios to the raw client."""

    def spread(values: list[float], fmt: str = "{:.0f}") -> str:
        return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

    def ratio(side: str) -> str:
        return spread([a / b for a, b in zip(rates[side], rates["raw"], strict=True)], "{:.2f}")

    def costs(side: str) -> str:
        mine = f"runtime CPU {statistics.median(cpu[side]):.2f} ms/attempt, start-up included; " if cpu[side] else ""
        return f"{mine}apiserver + etcd {statistics.median(plane_ms[side]):.1f} ms/attempt"

    pool = statistics.median(rates["pool"])
    return [
        (
            (
                f"raw client: claim + finish merge patches (compare-and-set), {capacity} in flight, {count} attempts "
                f"assigned up front, median of {repeat} ({costs('raw')}, the assignments included)"
            ),
            f"{spread(rates['raw'])} attempts/s",
            "reported",
            "—",
        ),
        (
            (
                f"`qorch agent run`, no-op async handler, a pool agent (capacity {count}), the same {count} attempts "
                f"assigned up front, its {capacity} connections; first claim → last finish ({costs('pool')})"
            ),
            f"{spread(rates['pool'])} attempts/s; ÷ raw {ratio('pool')}",
            f"≥ {TARGET:.0f}/s",
            "met" if pool >= TARGET else "MISSED",
        ),
        (
            (
                f"`qorch agent run`, capacity {capacity}, fed {capacity} at a time as the operator does "
                f"(one more write per attempt, the assignment, inside the window) ({costs('fed')})"
            ),
            f"{spread(rates['fed'])} attempts/s; ÷ raw {ratio('fed')}",
            "reported",
            "—",
        ),
    ]


def main() -> None:
    """Run the bench; print the table, or write it into docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    began = time.perf_counter()
    rows = asyncio.run(run(args.tasks, args.repeat, args.capacity))
    command = " ".join(["bench/agent_runtime.py", *sys.argv[1:]])
    caption = (
        f"Command: `.venv/bin/python {command}` ({dt.datetime.now(dt.UTC).date()}, "
        f"{time.perf_counter() - began:.0f} s in all, one local kube-apiserver + etcd on the same "
        f"{os.cpu_count()} cores as the runtime and this client)."
    )
    text = report.render(BEGIN, END, caption, rows)
    if args.write:
        report.write_section(args.write, BEGIN, END, "Agent runtime (issue: agents, SDK and CLI)", text)
    print(text)


if __name__ == "__main__":
    main()
