"""qorch against Kueue as admission peers on the same local apiserver, interleaved and repeated.

Run:  .venv/bin/python bench/vs_kueue.py [--quick] [--repeat 3] [--stream-rate 40] [--write docs/benchmarks.md]
Profile the operator (cProfile, one file per run; slower, so not for the table):
      QORCH_BENCH_PROFILE=/tmp/prof .venv/bin/python bench/vs_kueue.py --quick --repeat 1

Kueue v0.17.0 (`go install`, bench/peers/build_kueue.sh) runs out of cluster as the
admin, with internal cert management off, its webhooks served on a loopback port
under a CA made here (the shipped webhook configurations, cut to Kueue's own kinds
and `batch/v1` Jobs, rewritten to `clientConfig.url`), leader election off, the
shipped controller concurrency, frameworks `batch/job` only and
`VisibilityOnDemand=false`. It admits Workloads (one pod, 1 CPU) from one LocalQueue
into one ClusterQueue whose nominal quota fits all of them. qorch admits the same
number of Tasks under a namespace quota (SchedulingPolicy `quotas[].maxConcurrentTasks`)
that fits all of them, onto N Agents with room for all.

- backlog (peers.md's method): the peer runs with its quota held (Kueue: the
  ClusterQueue at `stopPolicy: Hold`; qorch: `maxConcurrentTasks: 0`), P objects are
  created and the peer has marked each one pending (Kueue: a `QuotaReserved`
  condition; qorch: `Scheduled` with reason `OverQuota`); then one PATCH releases
  the quota (`stopPolicy: None`; `maxConcurrentTasks: P`). Throughput is P / (last
  admission seen - release returned); latency is release -> each object's admission
  (Kueue: `Admitted=True`; qorch: phase Assigned), all through one client-side watch
  per run on one clock. Kueue runs at its shipped client QPS (50/100) and unthrottled
  (5000/5000); qorch with one replica and Events unbudgeted.
- streaming: objects offered at a fixed rate to a running, released peer; create
  sent -> admission seen (Kueue's creates pass its two webhooks; the POST round
  trip is reported too).

Each round runs every configuration once, in the same order; rounds repeat, the
table gives medians and spreads. Both peers use the admin identity (system:masters,
exempt from API Priority and Fairness).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config

import report
from measure import bounded, cpu_seconds, progress
from qorch.api import crd
from qorch.controller.kube import KubeApi, Resource
from qorch.devcluster import ControlPlane, _pki, _ports
from vs_kube_scheduler import POLICIES, TASKS, Bench, Meter, Seen, median_spread, p95, stop

BEGIN, END = "<!-- vs-kueue:begin -->", "<!-- vs-kueue:end -->"
KUEUE_GROUP = "kueue.x-k8s.io"
WORKLOADS = Resource(KUEUE_GROUP, "v1beta2", "workloads")
LOCALQUEUES = Resource(KUEUE_GROUP, "v1beta2", "localqueues")
CLUSTERQUEUES = Resource(KUEUE_GROUP, "v1beta2", "clusterqueues", namespaced=False)
EVENTS = Resource("", "v1", "events")
MERGE = "application/merge-patch+json"
#: cmd/kueue/main.go reads the metrics server's certificate from here when internal cert management is off.
KUEUE_METRICS_CERTS = Path("/etc/kueue/metrics/certs")
#: The shipped controller concurrency (config/components/manager/controller_manager_config.yaml).
KUEUE_CONCURRENCY = {
    "Job.batch": 5, "Pod": 5, "Workload.kueue.x-k8s.io": 5, "LocalQueue.kueue.x-k8s.io": 1,
    "Cohort.kueue.x-k8s.io": 1, "ClusterQueue.kueue.x-k8s.io": 1, "ResourceFlavor.kueue.x-k8s.io": 1,
}  # fmt: skip
#: Seconds after the last admission before the run's Events are counted (both peers post them asynchronously).
EVENTS_SETTLE = 5.0
Row = tuple[str, str, str, str]
Predicate = Callable[[dict[str, Any]], bool]


def kueue() -> Path:
    """The kueue binary (its CRDs and webhook manifests beside it), built on first use."""
    script = Path(__file__).parent / "peers" / "build_kueue.sh"
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(script)], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind:
            return dict(c)
    return None


def workload_pending(obj: dict[str, Any]) -> bool:
    """Kueue has looked at it: a QuotaReserved condition, whatever its status."""
    return _condition(obj, "QuotaReserved") is not None


def workload_admitted(obj: dict[str, Any]) -> bool:
    """Admitted=True (quota reserved and no admission checks left)."""
    return (_condition(obj, "Admitted") or {}).get("status") == "True"


def task_pending(obj: dict[str, Any]) -> bool:
    """The operator has looked at it and parked it on the quota."""
    return (_condition(obj, "Scheduled") or {}).get("reason") == "OverQuota"


def task_admitted(obj: dict[str, Any]) -> bool:
    """Assigned (or further)."""
    return (obj.get("status") or {}).get("phase") in ("Assigned", "Running", "Succeeded")


class Watch(Seen):
    """Seen's watch with two clocks per object: first seen pending, first seen admitted."""

    def __init__(
        self, api: KubeApi, resource: Resource, namespace: str, *, pending: Predicate, admitted: Predicate
    ) -> None:
        """Watch `resource` in `namespace` once entered."""
        super().__init__(api, resource, namespace)
        self.pending_at: dict[str, float] = {}
        self._pending, self._admitted = pending, admitted

    def _see(self, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return
        now = time.perf_counter()
        if name not in self.pending_at and self._pending(obj):
            self.pending_at[name] = now
        if name not in self.at and self._admitted(obj):
            self.at[name] = now

    async def until_pending(self, count: int, within: float) -> bool:
        """Wait until `count` objects were seen pending (or admitted), at most `within` seconds."""
        deadline = time.perf_counter() + within
        while len(self.pending_at.keys() | self.at.keys()) < count and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return len(self.pending_at.keys() | self.at.keys()) >= count


@dataclass(frozen=True)
class Outcome:
    """One backlog run, timed from the release PATCH's answer."""

    rate: float  # admissions per second, release -> last
    first: float  # release -> first admission, s
    p50: float  # release -> admission, s
    p95: float
    done: int
    server_ms: float  # apiserver + etcd CPU per admission, ms
    peer_ms: float  # the peer's own CPU per admission, ms
    events: float  # Events written from the release to EVENTS_SETTLE after the last admission, per admission
    setup: float  # peer start to all P seen pending, s (creates included)
    startup: float = math.nan  # peer start to its /readyz answering 200, s
    timed_out: bool = False


def _outcome(
    watch: Watch, released: float, server: float, peer: float, events: int, setup: float, startup: float
) -> Outcome:
    lat = sorted(t - released for t in watch.at.values())
    if len(lat) < 2:
        return Outcome(
            0.0, math.nan, math.nan, math.nan, len(lat), math.nan, math.nan, math.nan, setup, startup, timed_out=True
        )
    per = 1000.0 / len(lat)
    return Outcome(
        len(lat) / lat[-1], lat[0], statistics.median(lat), p95(lat), len(lat), server * per, peer * per,
        events / len(lat), setup, startup,
    )  # fmt: skip


@dataclass
class KueueSetup:
    """Kueue's CRDs, webhooks and certificates, installed once per control plane."""

    binary: Path
    webhook_port: int
    cert_dir: Path
    reasons: Counter[str] = field(default_factory=Counter)


def install_kueue(bench: Bench, binary: Path, kubectl: list[str]) -> KueueSetup:
    """CRDs (bases only, no conversion patches), webhook configurations on a loopback URL, serving certificates."""
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(binary.parent / "crd")], check=True, capture_output=True
    )
    established = ["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]
    subprocess.run([*kubectl, *established], check=True, capture_output=True)
    flavor = {"apiVersion": f"{KUEUE_GROUP}/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "default"}}
    # Before the webhooks exist: Kueue (which serves them) runs only during its own runs.
    subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump(flavor), text=True, check=True,
                   capture_output=True)  # fmt: skip
    ca = _pki.CertificateAuthority("kueue-webhook-ca")
    serving = ca.serving(["127.0.0.1", "localhost"])
    cert_dir = bench.work / "kueue-certs"
    cert_dir.mkdir()
    (cert_dir / "tls.crt").write_bytes(serving.cert_pem)
    (cert_dir / "tls.key").write_bytes(serving.key_pem)
    if not (KUEUE_METRICS_CERTS / "tls.crt").exists():  # hard-coded in cmd/kueue/main.go
        KUEUE_METRICS_CERTS.mkdir(parents=True, exist_ok=True)
        (KUEUE_METRICS_CERTS / "tls.crt").write_bytes(serving.cert_pem)
        (KUEUE_METRICS_CERTS / "tls.key").write_bytes(serving.key_pem)
    port = _ports.free_port()
    bundle = base64.b64encode(ca.cert_pem).decode()
    docs = []
    for doc in yaml.safe_load_all((binary.parent / "webhook" / "manifests.yaml").read_text()):
        if not doc:
            continue
        kept = [w for w in doc["webhooks"] if {g for r in w["rules"] for g in r["apiGroups"]} <= {KUEUE_GROUP, "batch"}]
        for hook in kept:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
        doc["metadata"] = {"name": f"kueue-{doc['kind'].lower()}"}
        doc["webhooks"] = kept
        docs.append(doc)
    subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump_all(docs), text=True, check=True,
                   capture_output=True)  # fmt: skip
    return KueueSetup(binary, port, cert_dir)


def start_kueue(bench: Bench, setup: KueueSetup, *, qps: int, tag: str) -> tuple[subprocess.Popen[bytes], int]:
    """Kueue out of cluster with its own configuration file, as the admin; its health port."""
    health = _ports.free_port()
    burst = 100 if qps == 50 else qps
    cfg = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": "kueue-system",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
        "metrics": {"bindAddress": f"127.0.0.1:{_ports.free_port()}"},
        "webhook": {"host": "127.0.0.1", "port": setup.webhook_port, "certDir": str(setup.cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "controller": {"groupKindConcurrency": KUEUE_CONCURRENCY},
        "clientConnection": {"qps": qps, "burst": burst},
        "integrations": {"frameworks": ["batch/job"]},
    }
    config_file = bench.work / f"kueue-{tag}.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    log = (bench.work / f"kueue-{tag}.log").open("wb")
    process = subprocess.Popen(
        [str(setup.binary), f"--config={config_file}", "--feature-gates=VisibilityOnDemand=false",
         f"--visibility-server-port={_ports.free_port()}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(bench.plane.admin_kubeconfig)},
    )  # fmt: skip
    return process, health


async def ready(process: subprocess.Popen[bytes], url: str, within: float = 60.0) -> float:
    """Poll a readiness URL until it answers 200; seconds it took."""
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        if process.poll() is not None:
            raise RuntimeError(f"peer exited with {process.returncode} before {url} was ready")
        try:
            with await asyncio.to_thread(urllib.request.urlopen, url, timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {within:.0f} s")


def start_operator(
    bench: Bench, namespace: str, tag: str, metrics_port: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    """One qorch replica, Events unbudgeted; its health port."""
    health = _ports.free_port()
    log = (bench.work / f"qorch-{tag}.log").open("wb")
    profile = os.environ.get("QORCH_BENCH_PROFILE")  # a folder: the operator runs under cProfile (slower)
    under = ["-m", "cProfile", "-o", str(Path(profile) / f"qorch-{tag}.prof")] if profile else []
    process = subprocess.Popen(
        [sys.executable, *under, "-m", "qorch.cli", "operator", "run", f"--kubeconfig={bench.plane.admin_kubeconfig}",
         f"--namespace={namespace}", f"--metrics-port={metrics_port}", f"--health-port={health}",
         f"--identity=bench-{tag}", f"--lease-name=bench-{tag}", "--events-per-second=100000"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process, health


async def workloads(api: KubeApi, namespace: str, names: list[str], queue: str, limit: int = 32) -> list[float]:
    """Workloads of one pod asking 1 CPU, in `queue`; each create's round trip, seconds."""

    async def one(name: str) -> float:
        started = time.perf_counter()
        await api.call("POST", WORKLOADS.path(namespace), body={
            "apiVersion": f"{KUEUE_GROUP}/v1beta2", "kind": "Workload", "metadata": {"name": name},
            "spec": {"queueName": queue, "podSets": [{"name": "main", "count": 1, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{
                    "name": "c", "image": "pause", "resources": {"requests": {"cpu": "1"}}}]}}}]}})  # fmt: skip
        return time.perf_counter() - started

    return list(await bounded([one(n) for n in names], limit))


async def timed_tasks(api: KubeApi, namespace: str, names: list[str], limit: int = 32) -> list[float]:
    """Queued Tasks any agent can run; each create's round trip, seconds."""

    async def one(name: str) -> float:
        started = time.perf_counter()
        await api.call("POST", TASKS.path(namespace), body={
            "apiVersion": "qorch.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"goal": name, "requires": ["code"]}})  # fmt: skip
        return time.perf_counter() - started

    return list(await bounded([one(n) for n in names], limit))


async def count_events(api: KubeApi, namespace: str) -> Counter[str]:
    """Events of a namespace by reason."""
    listed = await api.call("GET", EVENTS.path(namespace), timeout=120)
    return Counter(str(e.get("reason")) for e in listed["items"])


async def settled_events(api: KubeApi, namespace: str, within: float = 120.0) -> Counter[str]:
    """The namespace's Events once their number stops growing (both peers post Events behind their writes).

    Called before the release, so that Events of the held phase are not written (and paid for) inside the
    timed window.
    """
    deadline = time.perf_counter() + within
    last = await count_events(api, namespace)
    while time.perf_counter() < deadline:
        await asyncio.sleep(2.0)
        now = await count_events(api, namespace)
        if now == last:
            return now
        last = now
    progress(f"  (Events in {namespace} still growing after {within:.0f} s)")
    return last


async def kueue_queues(api: KubeApi, namespace: str, *, quota: int, hold: bool) -> str:
    """A ClusterQueue for this namespace only (nominal quota `quota` CPUs) and its LocalQueue; the CQ name."""
    name = f"cq-{namespace}"
    await api.call("POST", CLUSTERQUEUES.path(), body={
        "apiVersion": f"{KUEUE_GROUP}/v1beta2", "kind": "ClusterQueue", "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "stopPolicy": "Hold" if hold else "None",
            "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
                {"name": "default", "resources": [{"name": "cpu", "nominalQuota": str(quota)}]}]}]}})  # fmt: skip
    await api.call("POST", LOCALQUEUES.path(namespace), body={
        "apiVersion": f"{KUEUE_GROUP}/v1beta2", "kind": "LocalQueue", "metadata": {"name": "lq"},
        "spec": {"clusterQueue": name}})  # fmt: skip
    return name


async def kueue_cleanup(bench: Bench, namespace: str, queue: str) -> None:
    """Delete the run's Workloads and queues while Kueue still runs (it lifts their finalizers)."""
    await bench.clear(WORKLOADS, namespace)
    await bench.api.call("DELETE", LOCALQUEUES.path(namespace, "lq"))
    await bench.api.call("DELETE", CLUSTERQUEUES.path(None, queue))


async def kueue_backlog(bench: Bench, setup: KueueSetup, *, count: int, qps: int, tag: str) -> Outcome:
    """Kueue running, ClusterQueue held; P Workloads pending; release; until all are admitted."""
    namespace = f"kq-{tag}"
    await bench.namespace(namespace)
    meter_start = time.perf_counter()
    process, health = start_kueue(bench, setup, qps=qps, tag=tag)
    try:
        startup = await ready(process, f"http://127.0.0.1:{health}/readyz")
        queue = await kueue_queues(bench.api, namespace, quota=count, hold=True)
        async with Watch(bench.api, WORKLOADS, namespace, pending=workload_pending, admitted=workload_admitted) as w:
            await workloads(bench.api, namespace, [f"w-{i}" for i in range(count)], "lq")
            held = await w.until_pending(count, within=max(120.0, count / 10))
            setup_s = time.perf_counter() - meter_start
            early = len(w.at)
            events_before = await settled_events(bench.api, namespace)
            meter, peer_before = Meter(bench.plane), cpu_seconds(process.pid)
            await bench.api.call("PATCH", CLUSTERQUEUES.path(None, queue), body={"spec": {"stopPolicy": "None"}},
                                 content_type=MERGE)  # fmt: skip
            released = time.perf_counter()
            finished = await w.until(count, within=max(120.0, 3.0 * count / 40))
            server, peer = meter.server(), cpu_seconds(process.pid) - peer_before
        await asyncio.sleep(EVENTS_SETTLE)
        events = await count_events(bench.api, namespace) - events_before
        setup.reasons.update(events)
        outcome = _outcome(w, released, server, peer, sum(events.values()), setup_s, startup)
        progress(
            f"  kueue {tag}: {outcome.done}/{count} admitted, {outcome.rate:.0f}/s, first {outcome.first:.2f} s, "
            f"p50 {outcome.p50:.2f} s, p95 {outcome.p95:.2f} s, cpu/admission: server {outcome.server_ms:.2f} ms, "
            f"kueue {outcome.peer_ms:.2f} ms; events {dict(events)}; setup {setup_s:.0f} s"
            f"{'' if held else ' (not all seen pending)'}{f' ({early} admitted while held!)' if early else ''}"
            f"{'' if finished else ' (timed out)'}"
        )
        await kueue_cleanup(bench, namespace, queue)
    finally:
        stop(process)
    return outcome if finished else Outcome(**{**outcome.__dict__, "timed_out": True})


async def set_quota(api: KubeApi, namespace: str, limit: int | None) -> None:
    """The SchedulingPolicy's quota for `namespace` (none when `limit` is None)."""
    quotas = [] if limit is None else [{"namespace": namespace, "maxConcurrentTasks": limit}]
    await api.call("PATCH", POLICIES.path(None, "default"), body={"spec": {"quotas": quotas}}, content_type=MERGE)


async def qorch_backlog(bench: Bench, *, namespace: str, count: int, tag: str) -> Outcome:
    """The operator running, quota 0; P Tasks OverQuota; release; until all are assigned."""
    await set_quota(bench.api, namespace, 0)
    meter_start = time.perf_counter()
    process, health = start_operator(bench, namespace, tag)
    try:
        startup = await ready(process, f"http://127.0.0.1:{health}/readyz")
        async with Watch(bench.api, TASKS, namespace, pending=task_pending, admitted=task_admitted) as w:
            await timed_tasks(bench.api, namespace, [f"t-{tag}-{i}" for i in range(count)])
            held = await w.until_pending(count, within=max(120.0, count / 10))
            setup_s = time.perf_counter() - meter_start
            early = len(w.at)
            events_before = await settled_events(bench.api, namespace)
            meter, peer_before = Meter(bench.plane), cpu_seconds(process.pid)
            await set_quota(bench.api, namespace, count)
            released = time.perf_counter()
            finished = await w.until(count, within=max(120.0, 3.0 * count / 40))
            server, peer = meter.server(), cpu_seconds(process.pid) - peer_before
        await asyncio.sleep(EVENTS_SETTLE)
        events = await count_events(bench.api, namespace) - events_before
        outcome = _outcome(w, released, server, peer, sum(events.values()), setup_s, startup)
        progress(
            f"  qorch {tag}: {outcome.done}/{count} assigned, {outcome.rate:.0f}/s, first {outcome.first:.2f} s, "
            f"p50 {outcome.p50:.2f} s, p95 {outcome.p95:.2f} s, cpu/admission: server {outcome.server_ms:.2f} ms, "
            f"operator {outcome.peer_ms:.2f} ms; events {dict(events)}; setup {setup_s:.0f} s"
            f"{'' if held else ' (not all seen pending)'}{f' ({early} assigned while held!)' if early else ''}"
            f"{'' if finished else ' (timed out)'}"
        )
        await bench.clear(TASKS, namespace)
        await bench.api.call("DELETE", EVENTS.path(namespace), timeout=300)
    finally:
        stop(process)
    return outcome if finished else Outcome(**{**outcome.__dict__, "timed_out": True})


@dataclass(frozen=True)
class Stream:
    """One streaming run."""

    latencies: list[float]  # create sent -> admission seen, s
    creates: list[float]  # create round trips, s
    offered: int
    breakdown: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # histogram -> (mean, p95, count)


#: The operator's histograms that say where a streamed task's time goes (operator/qorch/controller/metrics.py).
#: (Not qorch_task_create_to_assigned_seconds: it starts at creationTimestamp, whole seconds.)
BREAKDOWN = (
    "qorch_scheduling_cycle_seconds",
    "qorch_decide_seconds",
    "qorch_api_write_seconds",
)


def histograms(text: str) -> dict[str, tuple[float, float, int]]:
    """Mean, p95 (the upper bound of the bucket holding it) and count of BREAKDOWN's histograms in a scrape."""
    found: dict[str, tuple[float, float, int]] = {}
    for name in BREAKDOWN:
        buckets: list[tuple[float, float]] = []
        total = count = 0.0
        for line in text.splitlines():
            if line.startswith(f"{name}_bucket{{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((math.inf if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
            elif line.startswith(f"{name}_sum"):
                total = float(line.rsplit(" ", 1)[1])
            elif line.startswith(f"{name}_count"):
                count = float(line.rsplit(" ", 1)[1])
        if count:
            upper = next((b for b, c in sorted(buckets) if c >= 0.95 * count), math.inf)
            found[name] = (total / count, upper, int(count))
    return found


async def offer(
    watch: Watch, create: Callable[[str], Any], prefix: str, *, rate: float, seconds: float
) -> tuple[dict[str, float], list[float]]:
    """Create objects at `rate`/s; when each was sent, and the round trips."""
    sent: dict[str, float] = {}
    creating = []
    for i in range(int(rate * seconds)):
        name = f"{prefix}-{i}"
        sent[name] = time.perf_counter()
        creating.append(asyncio.create_task(create(name)))
        await asyncio.sleep(1.0 / rate)
    trips = [t for batch in await asyncio.gather(*creating) for t in batch]
    await watch.until(len(sent), within=60)
    return sent, trips


async def kueue_stream(bench: Bench, setup: KueueSetup, *, rate: float, seconds: float, tag: str) -> Stream:
    """Kueue (QPS 5000) with an open ClusterQueue; Workloads at `rate`/s."""
    namespace = f"ks-{tag}"
    await bench.namespace(namespace)
    process, health = start_kueue(bench, setup, qps=5000, tag=f"stream-{tag}")
    try:
        await ready(process, f"http://127.0.0.1:{health}/readyz")
        queue = await kueue_queues(bench.api, namespace, quota=int(rate * seconds) + 1, hold=False)
        await asyncio.sleep(2)  # the ClusterQueue and LocalQueue active in Kueue's cache
        async with Watch(bench.api, WORKLOADS, namespace, pending=workload_pending, admitted=workload_admitted) as w:
            sent, trips = await offer(
                w, lambda n: workloads(bench.api, namespace, [n], "lq"), "s", rate=rate, seconds=seconds
            )
        await kueue_cleanup(bench, namespace, queue)
    finally:
        stop(process)
    return Stream([w.at[n] - sent[n] for n in sent if n in w.at], trips, len(sent))


async def qorch_stream(bench: Bench, *, namespace: str, rate: float, seconds: float, tag: str) -> Stream:
    """The operator with room in the quota; Tasks at `rate`/s."""
    await set_quota(bench.api, namespace, int(rate * seconds) + 1)
    metrics_port = _ports.free_port()
    process, health = start_operator(bench, namespace, f"stream-{tag}", metrics_port)
    breakdown: dict[str, tuple[float, float, int]] = {}
    try:
        await ready(process, f"http://127.0.0.1:{health}/readyz")
        await asyncio.sleep(2)  # the leader Lease taken, first cycle done
        async with Watch(bench.api, TASKS, namespace, pending=task_pending, admitted=task_admitted) as w:
            sent, trips = await offer(
                w, lambda n: timed_tasks(bench.api, namespace, [n]), f"s-{tag}", rate=rate, seconds=seconds
            )
        try:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with await asyncio.to_thread(urllib.request.urlopen, url, timeout=10) as answer:
                breakdown = histograms(answer.read().decode())
        except OSError as exc:
            progress(f"  (no operator metrics: {exc})")
        await bench.clear(TASKS, namespace)
        await bench.api.call("DELETE", EVENTS.path(namespace), timeout=300)
    finally:
        stop(process)
    return Stream([w.at[n] - sent[n] for n in sent if n in w.at], trips, len(sent), breakdown)


def ms(values: list[float], fmt: str = "{:.0f}") -> str:
    """A list of seconds as `median (min-max)` milliseconds."""
    return median_spread([v * 1000 for v in values], fmt)


def backlog_row(label: str, runs: list[Outcome], count: int, unit: str, target: str, verdict: str) -> Row:
    """One backlog configuration: rate, latencies, costs."""
    med = statistics.median
    stopped = sum(o.timed_out for o in runs)
    costs = (
        f"CPU per admission: apiserver+etcd {med([o.server_ms for o in runs]):.2f} ms, peer "
        f"{med([o.peer_ms for o in runs]):.2f} ms; Events per admission {med([o.events for o in runs]):.2f}; "
        f"start-up to ready {med([o.startup for o in runs]):.1f} s; "
        f"{len(runs)} runs{f', {stopped} stopped at the time limit' if stopped else ''}"
    )
    measured = (
        f"{median_spread([o.rate for o in runs])} {unit}/s; release → first {ms([o.first for o in runs])} ms, "
        f"p50 {median_spread([o.p50 for o in runs], '{:.2f}')} s, "
        f"p95 {median_spread([o.p95 for o in runs], '{:.2f}')} s"
    )
    return f"backlog of {count:,} — {label} ({costs})", measured, target, verdict


async def run(quick: bool, repeat: int, stream_rate: float) -> tuple[list[Row], list[str]]:
    binary = kueue()
    backlog = 1_000 if quick else 3_000
    slow_backlog = 500 if quick else 1_500  # at QPS 50 Kueue admits about 50/s
    agents_count = 100
    seconds = 10.0 if quick else 20.0
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as plane:
        work = Path(tmp)
        kubectl = [str(plane.binaries.kubectl), f"--kubeconfig={plane.admin_kubeconfig}"]
        manifests = "---\n".join(crd.render().values())
        subprocess.run([*kubectl, "apply", "-f", "-"], input=manifests, text=True, check=True, capture_output=True)
        await config.load_kube_config(config_file=str(plane.admin_kubeconfig))
        api_client = client.ApiClient()
        api = KubeApi(api_client, connections=64)
        bench = Bench(plane, api, work)
        setup = install_kueue(bench, binary, kubectl)
        for ns in ("qorch-system", "kueue-system"):
            await bench.namespace(ns)
        policy = {"apiVersion": "qorch.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "default"}}
        spec = {"agentGraceSeconds": 3600, "claimTimeoutSeconds": 3600}  # the seeded agents never claim
        await api.call("POST", POLICIES.path(), body={**policy, "spec": spec})
        agents_ns = "agents"
        slots = math.ceil(1.2 * max(backlog, stream_rate * seconds) / agents_count)
        await bench.agents(agents_ns, agents_count, slots)
        results: dict[str, list[Outcome]] = {k: [] for k in ("kueue", "kueue-qps50", "qorch")}
        streams: dict[str, list[Stream]] = {"kueue": [], "qorch": []}
        for round_ in range(repeat):
            progress(f"round {round_ + 1} of {repeat}")
            tag = f"r{round_}"
            results["kueue"].append(await kueue_backlog(bench, setup, count=backlog, qps=5000, tag=f"{tag}-q5000"))
            results["qorch"].append(await qorch_backlog(bench, namespace=agents_ns, count=backlog, tag=tag))
            results["kueue-qps50"].append(
                await kueue_backlog(bench, setup, count=slow_backlog, qps=50, tag=f"{tag}-q50")
            )
            if stream_rate > 0:
                streams["kueue"].append(await kueue_stream(bench, setup, rate=stream_rate, seconds=seconds, tag=tag))
                streams["qorch"].append(
                    await qorch_stream(bench, namespace=agents_ns, rate=stream_rate, seconds=seconds, tag=tag)
                )
                for side in ("kueue", "qorch"):
                    s = streams[side][-1]
                    progress(f"  stream {side} {tag}: {len(s.latencies)}/{s.offered} admitted, p50 "
                             f"{statistics.median(s.latencies) * 1000:.0f} ms, p95 {p95(s.latencies) * 1000:.0f} ms, "
                             f"create p50 {statistics.median(s.creates) * 1000:.0f} ms")  # fmt: skip
                for name, (mean, high, n) in streams["qorch"][-1].breakdown.items():
                    progress(f"    {name}: mean {mean * 1000:.1f} ms, p95 ≤ {high * 1000:.0f} ms, {n} observations")
        await api.close()
        await api_client.close()

    med = statistics.median
    ours, theirs = results["qorch"], results["kueue"]
    ratio = med([o.rate for o in ours]) / med([o.rate for o in theirs])
    rows.append(backlog_row("Kueue, client QPS 5000/5000, shipped concurrency", theirs, backlog, "workloads",
                            "qorch ≥ 1.0×", f"qorch {ratio:.2f}×"))  # fmt: skip
    slow = results["kueue-qps50"]
    rows.append(backlog_row("Kueue, shipped client QPS 50/100", slow, slow_backlog, "workloads", "reported",
                            f"qorch {med([o.rate for o in ours]) / med([o.rate for o in slow]):.2f}×"))  # fmt: skip
    met_rate = ratio >= 1.0
    met_p95 = med([o.p95 for o in ours]) <= med([o.p95 for o in theirs])
    rows.append(backlog_row(
        f"qorch, one replica, {agents_count} Agents, Events unbudgeted", ours, backlog, "tasks",
        "≥ 1.0× Kueue unthrottled, p95 ≤ Kueue's",
        f"rate {'met' if met_rate else 'MISSED'}, p95 {'met' if met_p95 else 'MISSED'}"))  # fmt: skip
    if streams["kueue"]:
        k_p95 = [p95(s.latencies) for s in streams["kueue"]]
        q_p95 = [p95(s.latencies) for s in streams["qorch"]]
        for side, label, target, verdict in (
            ("kueue", "Kueue, QPS 5000, create → Admitted", "reported", "—"),
            ("qorch", "qorch, create → Assigned", "p95 ≤ Kueue's", "met" if med(q_p95) <= med(k_p95) else "MISSED"),
        ):
            runs = streams[side]
            rows.append((
                (f"streaming {stream_rate:.0f}/s for {seconds:.0f} s — {label} ({len(runs)} runs; create round trip "
                 f"p50 {ms([statistics.median(s.creates) for s in runs])} ms)"),
                (f"p50 {ms([statistics.median(s.latencies) for s in runs])} ms, p95 "
                 f"{ms([p95(s.latencies) for s in runs])} ms ({med([len(s.latencies) for s in runs]):.0f} of "
                 f"{runs[0].offered} admitted)"),
                target, verdict,
            ))  # fmt: skip
    notes.append(f"Kueue Events by reason over all backlog runs: {dict(setup.reasons)}")
    return rows, notes


def main() -> None:
    """Run and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stream-rate", type=float, default=40.0, help="objects per second; 0 skips streaming")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows, notes = asyncio.run(run(args.quick, args.repeat, args.stream_rate))
    load = os.getloadavg()
    flags = (" --quick" if args.quick else "") + (f" --repeat {args.repeat}" if args.repeat != 3 else "")
    flags += f" --stream-rate {args.stream_rate:g}" if args.stream_rate != 40.0 else ""
    command = f"`.venv/bin/python bench/vs_kueue.py{flags} --write docs/benchmarks.md`"
    text = report.render(
        BEGIN,
        END,
        f"Command: {command} ({time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s in all; "
        f"{'QUICK PROFILE (fewer objects); ' if args.quick else ''}one local kube-apiserver + etcd on the same "
        f"{os.cpu_count()} cores as both peers and this client; load average {load_before[0]:.1f} at the start, "
        f"{load[0]:.1f} at the end; both peers as the admin user, exempt from API Priority and Fairness).",
        rows,
    )
    print(text)
    for note in notes:
        print(note)
    if args.write:
        report.write_section(args.write, BEGIN, END, "Head-to-head: qorch vs Kueue (admission)", text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
