"""What one request costs the apiserver: the reason qorch's write path is bounded where it is.

Run:  .venv/bin/python bench/apiserver_cost.py [--requests 3000] [--pprof] [--write docs/benchmarks.md]

On its own local control plane, N requests of each kind at concurrency 16, and
the CPU seconds kube-apiserver and etcd used meanwhile (from /proc), per request:

- qorch's assignment: the JSON patch the operator's writer sends to a Task's
  /status (compare-and-set), the same shape as in production;
- a minimal status merge patch of a Task (one field);
- a core/v1 Event (what both qorch and kube-scheduler post per decision);
- a Pod binding (what kube-scheduler writes per decision).

With --pprof the apiserver runs with profiling on and a CPU profile is taken
during the assignment patches; `go tool pprof` then groups it by package.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client, config

import report
from measure import bounded, cpu_seconds
from qorch.api import crd
from qorch.controller import documents
from qorch.controller.kube import KubeApi, Resource
from qorch.controller.records import TaskRecord
from qorch.controller.writer import JSON_PATCH
from qorch.devcluster import ControlPlane
from qorch.scheduler.result import Candidate

if TYPE_CHECKING:
    from collections.abc import Callable

BEGIN, END = "<!-- apiserver-cost:begin -->", "<!-- apiserver-cost:end -->"
TASKS = Resource("qorch.io", "v1alpha1", "tasks")
PODS = Resource("", "v1", "pods")
NODES = Resource("", "v1", "nodes", namespaced=False)
EVENTS = Resource("", "v1", "events")
NS = "cost"
CONCURRENCY = 16


async def measure(
    plane: ControlPlane, label: str, count: int, request: Callable[[int], Any]
) -> tuple[str, float, float]:
    """(label, requests/s, apiserver+etcd CPU ms per request)."""
    before = sum(cpu_seconds(pid) for pid in plane.pids)
    started = time.perf_counter()
    await bounded([request(i) for i in range(count)], CONCURRENCY)
    elapsed = time.perf_counter() - started
    used = sum(cpu_seconds(pid) for pid in plane.pids) - before
    return label, count / elapsed, 1000 * used / count


async def run(plane: ControlPlane, count: int, pprof: Path | None) -> list[tuple[str, float, float]]:
    """Seed, then time each kind of request."""
    await config.load_kube_config(config_file=str(plane.admin_kubeconfig))
    api_client = client.ApiClient()
    api = KubeApi(api_client, connections=CONCURRENCY + 8)
    await api.call("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
    task = {"apiVersion": "qorch.io/v1alpha1", "kind": "Task", "spec": {"goal": "g", "requires": ["code"]}}
    await bounded(
        [api.call("POST", TASKS.path(NS), body={**task, "metadata": {"name": f"t-{i}"}}) for i in range(count)],
        CONCURRENCY,
    )
    await api.call("POST", NODES.path(), body={"metadata": {"name": "node-0"}})
    await bounded([
        api.call("POST", PODS.path(NS), body={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p-{i}"},
                                              "spec": {"containers": [{"name": "c", "image": "pause"}]}})
        for i in range(count)
    ], CONCURRENCY)  # fmt: skip
    tasks = (await api.call("GET", TASKS.path(NS), timeout=120))["items"]
    candidates = [Candidate(f"agent-{k}", 0.9, 0.3) for k in range(3)]

    def assignment(i: int) -> Any:
        record = TaskRecord.of(tasks[i])
        now = time.time()
        change = documents.assigned(agent="agent-0", attempt=1, epoch=1, when=now, score=0.9, probability=0.5,
                                    strategy="quantum", candidates=candidates)  # fmt: skip
        ops = [{"op": "replace", "path": "/metadata/resourceVersion", "value": record.resource_version}]
        body = ops + documents.render(change, record, now)
        return api.call("PATCH", TASKS.path(NS, record.name, "status"), body=body, content_type=JSON_PATCH)

    results = []
    profile: list[bytes] = []
    if pprof is not None:
        kubectl = [str(plane.binaries.kubectl), f"--kubeconfig={plane.admin_kubeconfig}"]
        grab = threading.Thread(
            target=lambda: profile.append(
                subprocess.run(
                    [*kubectl, "get", "--raw", "/debug/pprof/profile?seconds=5"], capture_output=True, check=False
                ).stdout
            )
        )
        grab.start()  # fmt: skip
    results.append(await measure(plane, "qorch's assignment: JSON patch of a Task's /status", count, assignment))
    if pprof is not None:
        grab.join()
        await asyncio.to_thread(pprof.write_bytes, profile[0] if profile else b"")
    tasks = (await api.call("GET", TASKS.path(NS), timeout=120))["items"]

    def one_field(i: int) -> Any:
        meta = tasks[i]["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": {"phase": "Running"}}
        return api.call(
            "PATCH", TASKS.path(NS, meta["name"], "status"), body=body, content_type="application/merge-patch+json"
        )

    results.append(await measure(plane, "a one-field merge patch of a Task's /status", count, one_field))

    def event(i: int) -> Any:
        involved = {"kind": "Task", "name": f"t-{i}", "namespace": NS}
        body = {"metadata": {"name": f"e-{i}"}, "involvedObject": involved, "reason": "Scheduled",
                "message": "assigned", "type": "Normal", "source": {"component": "bench"}}  # fmt: skip
        return api.call("POST", EVENTS.path(NS), body=body)

    def binding(i: int) -> Any:
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": f"p-{i}"},
                "target": {"apiVersion": "v1", "kind": "Node", "name": "node-0"}}  # fmt: skip
        return api.call("POST", PODS.path(NS, f"p-{i}", "binding"), body=body)

    results.append(await measure(plane, "a core/v1 Event", count, event))
    results.append(await measure(plane, "a Pod binding (what kube-scheduler writes)", count, binding))
    await api.close()
    await api_client.close()
    return results


def pprof_summary(binary: Path, profile: Path) -> list[tuple[str, float]]:
    """Share of apiserver CPU by area, from `go tool pprof -top -cum` (inclusive)."""
    areas = {
        "decode objects and patches": r"runtime/serializer/versioning.\(\*codec\).Decode$",
        "apply the patch": r"handlers.\(\*patcher\).applyPatch$",
        "schema coercion (unstructured)": r"unstructuredSchemaCoercer\).apply$",
        "validation (schema + CEL)": r"statusStrategy.ValidateUpdate$",
        "managedFields": r"managedfields/internal.\(\*FieldManager\).Update$",
        "authentication": r"filters.withAuthentication.func1$",
        "etcd read-modify-write": r"etcd3.\(\*store\).GuaranteedUpdate$",
        "watch: decode from etcd": r"etcd3.\(\*watchChan\).transform$",
        "garbage collection": r"runtime.gcBgMarkWorker$",
    }
    argv = [shutil.which("go") or "go", "tool", "pprof", "-top", "-cum", "-nodecount=2000", str(binary), str(profile)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    rows = []
    for label, pattern in areas.items():
        found = next((line for line in out.splitlines() if re.search(pattern, line)), None)
        if found is not None:
            rows.append((label, float(found.split()[4].rstrip("%"))))
    return rows


def main() -> None:
    """Measure and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--pprof", action="store_true")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    extra = ["--profiling=true"] if args.pprof else []
    with tempfile.TemporaryDirectory() as tmp, ControlPlane(apiserver_args=extra) as plane:
        kubectl = [str(plane.binaries.kubectl), f"--kubeconfig={plane.admin_kubeconfig}"]
        subprocess.run([*kubectl, "apply", "-f", "-"], input="---\n".join(crd.render().values()), text=True,
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all"], check=True,
                       capture_output=True)  # fmt: skip
        profile = Path(tmp) / "apiserver.pprof" if args.pprof else None
        results = asyncio.run(run(plane, args.requests, profile))
        areas = pprof_summary(plane.binaries.kube_apiserver, profile) if profile is not None else []
    rows = [(label, f"{rate:,.0f}/s, {ms:.2f} ms of apiserver+etcd CPU each", "reported", "—")
            for label, rate, ms in results]  # fmt: skip
    rows += [(f"apiserver CPU during the assignment patches: {label} (inclusive)", f"{share:.0f}%", "reported", "—")
             for label, share in areas]  # fmt: skip
    command = f"`.venv/bin/python bench/apiserver_cost.py{' --pprof' if args.pprof else ''} --write docs/benchmarks.md`"
    text = report.render(
        BEGIN,
        END,
        f"Command: {command} ({time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s; {args.requests:,} "
        f"requests of each kind at concurrency {CONCURRENCY}, one local kube-apiserver + etcd on 2 cores).",
        rows,
    )
    print(text)
    if args.write:
        report.write_section(args.write, BEGIN, END, "What one request costs the apiserver (kernel at scale)", text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
