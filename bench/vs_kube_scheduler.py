"""qorch against kube-scheduler on the same local apiserver, in one run, interleaved and repeated.

Run:  .venv/bin/python bench/vs_kube_scheduler.py [--quick] [--write docs/benchmarks.md]

kube-scheduler v1.36.3 is built from the same k8s.io/kubernetes module as the
control plane (bench/peers/build_kube_scheduler.sh). It binds P pods onto N fake
Nodes (Ready, untainted, `pods` allocatable sized like the agents' slots); qorch
assigns P Tasks onto N Agents with the same number of slots. For each N:

- backlog: the P objects exist before the scheduler starts; one client-side
  watch records when each is bound (spec.nodeName) or assigned (phase
  Assigned). Throughput is (P-1) / (last - first decision seen); start-up
  (process start to first decision) is reported apart. kube-scheduler runs at
  its default client QPS (50/100) and unthrottled (5000/5000), with adaptive and
  100% node scoring; qorch with one replica and Events unbudgeted, so both sides
  write one decision and one Event per object.
- streaming: objects offered at a fixed rate to a running scheduler; p95 of
  create -> decision seen, same watch, same client clock.

Runs are interleaved (each configuration once per round) and repeated; the
table gives medians and spreads. Both sides use the admin identity
(system:masters, which API Priority and Fairness exempts).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from kubernetes_asyncio import client, config

import report
from measure import bounded, cpu_seconds, progress
from qorch.api import crd
from qorch.controller.kube import ApiError, KubeApi, Resource
from qorch.devcluster import ControlPlane, _ports

BEGIN, END = "<!-- vs-kube-scheduler:begin -->", "<!-- vs-kube-scheduler:end -->"
PODS = Resource("", "v1", "pods")
NODES = Resource("", "v1", "nodes", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
TASKS = Resource("qorch.io", "v1alpha1", "tasks")
AGENTS = Resource("qorch.io", "v1alpha1", "agents")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
POLICIES = Resource("qorch.io", "v1alpha1", "schedulingpolicies", namespaced=False)
Row = tuple[str, str, str, str]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kube_scheduler() -> Path:
    """The kube-scheduler binary, built on first use."""
    script = Path(__file__).parent / "peers" / "build_kube_scheduler.sh"
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(script)], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class Bench:
    """One control plane and the objects both peers work on."""

    plane: ControlPlane
    api: KubeApi
    work: Path
    nodes: int = 0

    async def namespace(self, name: str) -> None:
        """Create a namespace (fine if it exists)."""
        try:
            await self.api.call("POST", NAMESPACES.path(), body={"metadata": {"name": name}})
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def grow_nodes(self, count: int, pods: int) -> None:
        """Fake Nodes up to `count`: Ready, untainted, `pods` allocatable (no kubelet; binding needs none)."""

        async def node(i: int) -> None:
            name = f"node-{i}"
            await self.api.call(
                "POST", NODES.path(), body={"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}
            )
            resources = {"cpu": "1000", "memory": "4096Gi", "pods": str(pods)}
            status = {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake",
                                "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
            }  # fmt: skip
            patch = "application/merge-patch+json"
            await self.api.call("PATCH", NODES.path(None, name, "status"), body={"status": status}, content_type=patch)
            # TaintNodesByCondition tainted it not-ready on create; no controller-manager is here to lift it.
            await self.api.call("PATCH", NODES.path(None, name), body={"spec": {"taints": None}}, content_type=patch)

        await bounded([node(i) for i in range(self.nodes, count)])
        self.nodes = count

    async def agents(self, namespace: str, count: int, capacity: int) -> None:
        """Agents with the nodes' slots, and Leases valid for an hour."""
        await self.namespace(namespace)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await bounded(
            [
                self.api.call("POST", AGENTS.path(namespace), body={
                    "apiVersion": "qorch.io/v1alpha1", "kind": "Agent", "metadata": {"name": f"agent-{i}"},
                    "spec": {"capabilities": ["code"], "capacity": capacity}})
                for i in range(count)
            ]
            + [
                self.api.call("POST", LEASES.path(namespace), body={
                    "metadata": {"name": f"qorch-agent-agent-{i}"},
                    "spec": {"holderIdentity": f"agent-{i}", "leaseDurationSeconds": 3600, "renewTime": now}})
                for i in range(count)
            ]
        )  # fmt: skip

    async def pods(self, namespace: str, names: list[str]) -> None:
        """Pending pods with small requests."""
        await bounded(
            [
                self.api.call("POST", PODS.path(namespace), body={
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                        "name": "c", "image": "pause", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}})
                for name in names
            ]
        )  # fmt: skip

    async def tasks(self, namespace: str, names: list[str]) -> None:
        """Queued tasks any agent can run."""
        await bounded(
            [
                self.api.call("POST", TASKS.path(namespace), body={
                    "apiVersion": "qorch.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
                    "spec": {"goal": name, "requires": ["code"]}})
                for name in names
            ]
        )  # fmt: skip

    async def clear(self, resource: Resource, namespace: str) -> None:
        """Delete every object of a kind in a namespace at once (pods without waiting for a kubelet)."""
        await self.api.call("DELETE", resource.path(namespace), query={"gracePeriodSeconds": 0}, timeout=120)
        for _ in range(600):
            if not (await self.api.call("GET", resource.path(namespace), query={"limit": 1}))["items"]:
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{resource.plural} in {namespace} still present after 5 minutes")


class Seen:
    """First time (client clock) each object of a namespace showed its decision, through one watch."""

    def __init__(self, api: KubeApi, resource: Resource, namespace: str) -> None:
        """Watch `resource` in `namespace` once entered."""
        self._api, self._resource, self._namespace = api, resource, namespace
        self.at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def decided(obj: dict[str, Any]) -> bool:
        """Bound (a pod) or assigned (a Task)."""
        if obj.get("kind") == "Pod":
            return bool((obj.get("spec") or {}).get("nodeName"))
        return (obj.get("status") or {}).get("phase") in ("Assigned", "Running", "Succeeded")

    def _see(self, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if name and name not in self.at and self.decided(obj):
            self.at[name] = time.perf_counter()

    async def _list(self) -> str:
        listed = await self._api.call("GET", self._resource.path(self._namespace), timeout=120)
        for item in listed["items"]:
            self._see({**item, "kind": "Pod" if self._resource is PODS else "Task"})
        return str(listed["metadata"]["resourceVersion"])

    async def _run(self) -> None:
        """Watch, resuming where it stopped: the apiserver closes a watcher that falls behind a flood."""
        version = await self._list()
        while True:
            query = {"watch": True, "resourceVersion": version, "allowWatchBookmarks": True, "timeoutSeconds": 3600}
            try:
                async with self._api.stream(self._resource.path(self._namespace), query=query, timeout=3700) as events:
                    async for event in events:
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            version = await self._list()  # 410 Gone: list again
                            break
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._see(obj)
            except ApiError:
                version = await self._list()

    async def __aenter__(self) -> Self:
        """Start watching (after listing what exists)."""
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.5)
        return self

    async def __aexit__(self, *_: object) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()

    async def until(self, count: int, within: float) -> bool:
        """Wait for `count` decisions, at most `within` seconds."""
        deadline = time.perf_counter() + within
        while len(self.at) < count and time.perf_counter() < deadline:  # noqa: ASYNC110 - a poll of a counter
            await asyncio.sleep(0.1)
        return len(self.at) >= count


@dataclass(frozen=True)
class Outcome:
    """One backlog run."""

    rate: float  # decisions per second, first to last
    startup: float  # process start to first decision, seconds
    done: int
    server_ms: float = math.nan  # apiserver + etcd CPU per decision, ms
    peer_ms: float = math.nan  # the scheduler's own CPU per decision, ms


def _outcome(seen: Seen, started: float, server: float = math.nan, peer: float = math.nan) -> Outcome:
    times = sorted(seen.at.values())
    if len(times) < 2:
        return Outcome(0.0, math.nan, len(times))
    per = 1000.0 / len(times)
    return Outcome((len(times) - 1) / (times[-1] - times[0]), times[0] - started, len(times), server * per, peer * per)


class Meter:
    """CPU of the control plane over a run."""

    def __init__(self, plane: ControlPlane) -> None:
        """Start counting."""
        self._plane = plane
        self._before = sum(cpu_seconds(pid) for pid in plane.pids)

    def server(self) -> float:
        """CPU seconds of the apiserver and etcd since the start."""
        return sum(cpu_seconds(pid) for pid in self._plane.pids) - self._before


def start_kube_scheduler(
    bench: Bench, binary: Path, *, qps: int, percentage: int | None, tag: str
) -> subprocess.Popen[bytes]:
    """kube-scheduler with its own configuration file, as the admin."""
    config_file = bench.work / f"kube-scheduler-{tag}.yaml"
    burst = 100 if qps == 50 else qps
    lines = [
        "apiVersion: kubescheduler.config.k8s.io/v1",
        "kind: KubeSchedulerConfiguration",
        "leaderElection: {leaderElect: false}",
        f"clientConnection: {{kubeconfig: {bench.plane.admin_kubeconfig}, qps: {qps}, burst: {burst}}}",
    ]
    if percentage is not None:
        lines.append(f"percentageOfNodesToScore: {percentage}")
    config_file.write_text("\n".join(lines) + "\n")
    log = (bench.work / f"kube-scheduler-{tag}.log").open("wb")
    return subprocess.Popen(
        [str(binary), f"--config={config_file}", "--bind-address=127.0.0.1", f"--secure-port={_ports.free_port()}",
         "-v=1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def start_operator(bench: Bench, namespace: str, tag: str) -> subprocess.Popen[bytes]:
    """One qorch replica, Events unbudgeted (one per decision, like kube-scheduler)."""
    log = (bench.work / f"qorch-{tag}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "qorch.cli", "operator", "run", f"--kubeconfig={bench.plane.admin_kubeconfig}",
         f"--namespace={namespace}", "--metrics-port=0", "--health-port=0", f"--identity=bench-{tag}",
         f"--lease-name=bench-{tag}", "--events-per-second=100000"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a peer or operator process; kill it if it has not exited in 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def kube_scheduler_backlog(
    bench: Bench, binary: Path, *, pods: int, qps: int, percentage: int | None, tag: str
) -> Outcome:
    """P pending pods, then kube-scheduler starts; until all are bound."""
    namespace = f"ks-{tag}"
    await bench.namespace(namespace)
    names = [f"p-{i}" for i in range(pods)]
    await bench.pods(namespace, names)
    async with Seen(bench.api, PODS, namespace) as seen:
        meter = Meter(bench.plane)
        started = time.perf_counter()
        process = start_kube_scheduler(bench, binary, qps=qps, percentage=percentage, tag=tag)
        finished = await seen.until(pods, within=max(120.0, 3.0 * pods / 40))
        server, peer = meter.server(), cpu_seconds(process.pid)
        stop(process)
    outcome = _outcome(seen, started, server, peer)
    progress(
        f"  kube-scheduler {tag}: {outcome.done}/{pods} bound, {outcome.rate:.0f}/s, "
        f"start-up {outcome.startup:.1f}s, cpu/decision: server {outcome.server_ms:.2f} ms, "
        f"scheduler {outcome.peer_ms:.2f} ms{'' if finished else ' (timed out)'}"
    )
    await bench.clear(PODS, namespace)
    return outcome


async def qorch_backlog(bench: Bench, *, agents_ns: str, tasks: int, tag: str) -> Outcome:
    """P queued Tasks, then one operator replica starts; until all are assigned."""
    names = [f"t-{tag}-{i}" for i in range(tasks)]
    await bench.tasks(agents_ns, names)
    async with Seen(bench.api, TASKS, agents_ns) as seen:
        meter = Meter(bench.plane)
        started = time.perf_counter()
        process = start_operator(bench, agents_ns, tag)
        finished = await seen.until(tasks, within=max(120.0, 3.0 * tasks / 40))
        server, peer = meter.server(), cpu_seconds(process.pid)
        stop(process)
    outcome = _outcome(seen, started, server, peer)
    progress(f"  qorch {tag}: {outcome.done}/{tasks} assigned, {outcome.rate:.0f}/s, start-up {outcome.startup:.1f}s, "
             f"cpu/decision: server {outcome.server_ms:.2f} ms, operator {outcome.peer_ms:.2f} ms"
             f"{'' if finished else ' (timed out)'}")  # fmt: skip
    await bench.clear(TASKS, agents_ns)
    return outcome


async def streaming(bench: Bench, kind: str, namespace: str, *, rate: float, seconds: float) -> list[float]:
    """Offer objects at `rate`/s to a running scheduler; create -> decision seen, in seconds."""
    total = int(rate * seconds)
    sent: dict[str, float] = {}
    resource = PODS if kind == "pod" else TASKS
    async with Seen(bench.api, resource, namespace) as seen:
        creating = []
        for i in range(total):
            name = f"s-{i}"
            sent[name] = time.perf_counter()
            maker = bench.pods if kind == "pod" else bench.tasks
            creating.append(asyncio.create_task(maker(namespace, [name])))
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*creating)
        await seen.until(total, within=60)
    latencies = [seen.at[n] - sent[n] for n in sent if n in seen.at]
    await bench.clear(resource, namespace)
    return latencies


def p95(values: list[float]) -> float:
    """95th percentile (nan when empty)."""
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else math.nan


def median_spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """`median (min-max)`."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


async def run(quick: bool, repeat: int) -> list[Row]:
    binary = kube_scheduler()
    sizes = [100] if quick else [100, 500]
    backlog = 2_000 if quick else 10_000
    slow_backlog = 1_000 if quick else 2_000  # at QPS 50 one run of 10,000 would take over 3 minutes
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as plane:
        work = Path(tmp)
        kubectl = [str(plane.binaries.kubectl), f"--kubeconfig={plane.admin_kubeconfig}"]
        manifests = "---\n".join(crd.render().values())
        subprocess.run([*kubectl, "apply", "-f", "-"], input=manifests, text=True, check=True, capture_output=True)
        established = ["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]
        subprocess.run([*kubectl, *established], check=True, capture_output=True)
        await config.load_kube_config(config_file=str(plane.admin_kubeconfig))
        api_client = client.ApiClient()
        api = KubeApi(api_client, connections=64)
        bench = Bench(plane, api, work)
        await bench.namespace("qorch-system")
        policy = {"apiVersion": "qorch.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "default"}}
        spec = {"agentGraceSeconds": 3600, "claimTimeoutSeconds": 3600}  # the seeded agents never claim
        await api.call("POST", POLICIES.path(), body={**policy, "spec": spec})
        for nodes in sizes:
            slots = max(40, math.ceil(1.2 * backlog / nodes))
            progress(f"N = {nodes}: nodes and agents with {slots} slots each")
            await bench.grow_nodes(nodes, slots)
            agents_ns = f"agents-{nodes}"
            await bench.agents(agents_ns, nodes, slots)
            results: dict[str, list[Outcome]] = {k: [] for k in ("ks-qps50", "ks-adaptive", "ks-100", "qorch")}
            for round_ in range(repeat):
                progress(f"N = {nodes}, round {round_ + 1} of {repeat}")
                tag = f"{nodes}-{round_}"
                results["ks-adaptive"].append(
                    await kube_scheduler_backlog(
                        bench, binary, pods=backlog, qps=5000, percentage=None, tag=f"adaptive-{tag}"
                    )
                )
                results["qorch"].append(await qorch_backlog(bench, agents_ns=agents_ns, tasks=backlog, tag=tag))
                results["ks-100"].append(
                    await kube_scheduler_backlog(
                        bench, binary, pods=backlog, qps=5000, percentage=100, tag=f"all-{tag}"
                    )
                )
                results["ks-qps50"].append(await kube_scheduler_backlog(
                    bench, binary, pods=slow_backlog, qps=50, percentage=None, tag=f"qps50-{tag}"))  # fmt: skip
            ours = [o.rate for o in results["qorch"]]
            for key, label, count in (
                ("ks-adaptive", "kube-scheduler, QPS 5000/5000, adaptive scoring", backlog),
                ("ks-100", "kube-scheduler, QPS 5000/5000, percentageOfNodesToScore 100", backlog),
                ("ks-qps50", "kube-scheduler, default QPS 50/100, adaptive scoring", slow_backlog),
            ):
                theirs = [o.rate for o in results[key]]
                ratio = statistics.median(ours) / statistics.median(theirs)
                costs = (
                    f"start-up {statistics.median([o.startup for o in results[key]]):.1f} s; CPU per decision: "
                    f"apiserver+etcd {statistics.median([o.server_ms for o in results[key]]):.2f} ms, "
                    f"kube-scheduler {statistics.median([o.peer_ms for o in results[key]]):.2f} ms"
                )
                rows.append((
                    f"N = {nodes}: backlog of {count:,} pods — {label} ({costs})",
                    f"{median_spread(theirs)} pods/s",
                    "qorch ≥ 1.0×" if key == "ks-adaptive" else "reported",
                    f"qorch {ratio:.2f}×",
                ))  # fmt: skip
            costs = (
                f"start-up incl. Lease {statistics.median([o.startup for o in results['qorch']]):.1f} s; "
                f"CPU per decision: apiserver+etcd "
                f"{statistics.median([o.server_ms for o in results['qorch']]):.2f} ms, "
                f"operator {statistics.median([o.peer_ms for o in results['qorch']]):.2f} ms"
            )
            rows.append((
                f"N = {nodes}: backlog of {backlog:,} Tasks — qorch, one replica, Events unbudgeted ({costs})",
                f"{median_spread(ours)} tasks/s",
                "≥ 1.0× kube-scheduler unthrottled",
                "met" if statistics.median(ours) >= statistics.median([o.rate for o in results["ks-adaptive"]])
                else "MISSED",
            ))  # fmt: skip
        # Streaming, at the largest N: a rate both sustain, offered to running schedulers.
        nodes = sizes[-1]
        progress(f"streaming at N = {nodes}")
        rate, seconds = 40.0, 10.0 if quick else 20.0
        ks_ns, q_ns = "ks-stream", f"agents-{nodes}"
        await bench.namespace(ks_ns)
        scheduler = start_kube_scheduler(bench, binary, qps=5000, percentage=None, tag="stream")
        operator = start_operator(bench, q_ns, "stream")
        await asyncio.sleep(10)
        ks_lat = await streaming(bench, "pod", ks_ns, rate=rate, seconds=seconds)
        q_lat = await streaming(bench, "task", q_ns, rate=rate, seconds=seconds)
        stop(scheduler)
        stop(operator)
        rows.append((
            (f"N = {nodes}: streaming {rate:.0f}/s for {seconds:.0f} s, create → bound "
             "(kube-scheduler, QPS 5000, adaptive)"),
            f"p50 {statistics.median(ks_lat) * 1000:.0f} ms, p95 {p95(ks_lat) * 1000:.0f} ms ({len(ks_lat)} pods)",
            "reported", "—",
        ))  # fmt: skip
        rows.append((
            f"N = {nodes}: streaming {rate:.0f}/s for {seconds:.0f} s, create → assigned (qorch)",
            f"p50 {statistics.median(q_lat) * 1000:.0f} ms, p95 {p95(q_lat) * 1000:.0f} ms ({len(q_lat)} tasks)",
            "p95 ≤ kube-scheduler's", "met" if p95(q_lat) <= p95(ks_lat) else "MISSED",
        ))  # fmt: skip
        await api.close()
        await api_client.close()
    return rows


def main() -> None:
    """Run and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = asyncio.run(run(args.quick, 1 if args.quick else args.repeat))
    load = os.getloadavg()
    command = (
        f"`.venv/bin/python bench/vs_kube_scheduler.py{' --quick' if args.quick else ''} --write docs/benchmarks.md`"
    )
    text = report.render(
        BEGIN,
        END,
        f"Command: {command} ({time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s in all; one local "
        f"kube-apiserver + etcd on the same 2 cores as both peers and this client; load average at the end "
        f"{load[0]:.1f}; both peers as the admin user, exempt from API Priority and Fairness).",
        rows,
    )
    print(text)
    if args.write:
        report.write_section(args.write, BEGIN, END, "Head-to-head: qorch vs kube-scheduler (kernel at scale)", text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
