"""Soak (issue 15 item 3): steady load with faults drawn at random, bounded in time and in fault count.

Run:  .venv/bin/python bench/soak.py --profile short|long [--seed N] [--write docs/reliability.md]

On a real local control plane (`qorch.devcluster.ControlPlane`), in one namespace:
- two `qorch operator run` replicas under Lease leader election (lease 4 s, renew deadline 3 s), each
  restarted when it exits as a Deployment would (`tests/support/operators.py`), both talking to the
  apiserver through a loopback fault proxy (`qorch.testing.faultproxy`);
- three `qorch agent run` runtimes (capacity 3, the logging handlers of `tests/support/runtimes.py`,
  2 s per call; `rt-2` also through the proxy) and two simulated pools (`qorch dev agents`) serving two
  Agents of capacity 2 each, 1-3 s per attempt; every agent's Lease lasts 4 s;
- tasks submitted at a steady rate (10 attempts allowed, 1-2 s backoff); final tasks are retired
  (their last body kept for the check, then deleted, as a TTL controller would) so the working set is steady.

Every `gap` seconds on average (exponential), a fault is drawn with the profile's weights from those
whose target is free, with a seeded RNG (the seed is printed and written):
kill -9 the leader (restarted 1 s later), SIGSTOP the leader past its lease then SIGCONT (a zombie),
kill -9 an agent process (restarted), SIGSTOP an agent for 1-2 s (within its Lease) or 7 s (past it: a
zombie whose late finish must not land), cordon then uncordon an agent, delete a task and create it
again under the same name, a burst of creates and deletes, apiserver restart, and through the proxy:
connection resets, 503s, lost answers, hung writes, a 410 on watches, every watch severed, the
leader Lease's requests hung past the renew deadline.

The run ends at the profile's fault count or time bound, whichever first; then faults are undone,
load stops, the namespace drains, and `qorch.testing.invariants.check` (I1-I4, with the handlers'
and pools' records of completed attempts) runs over every incarnation, retired or live, beside a
`CapacitySampler` that read the API during the whole run.
Counted: lost (created, not deleted on purpose, and not Succeeded after the drain, or Succeeded with
no completed attempt on record) and doubled (an attempt claimed or completed twice, or two successful
completions of one task incarnation); both must be 0. A handler call finished by a process that was then
killed or hung past its Lease, whose attempt the operator had already ended as lost, is a *fenced* re-run
(the protocol's "a zombie's late finish never lands"; the task ran again as a new attempt): counted apart.
Operator memory: VmRSS of both replicas every second; the peak, and per process incarnation the slope
from the first third's median to the last third's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the e2e support: operator replicas, pools, runtimes

from kubernetes_asyncio import client  # noqa: E402

import report  # noqa: E402
from measure import progress  # noqa: E402
from qorch.api import crd  # noqa: E402
from qorch.controller.kube import ApiError, KubeApi, KubeError, Resource, load_config  # noqa: E402
from qorch.devcluster import ControlPlane  # noqa: E402
from qorch.testing.faultproxy import Fault, FaultProxy  # noqa: E402
from qorch.testing.invariants import FINAL_PHASES, ApiReader, CapacitySampler, Violation, check_bodies  # noqa: E402
from support.manifests import agents as agent_bodies  # noqa: E402
from support.operators import OperatorFleet, OperatorProcess  # noqa: E402
from support.pools import Pool, PoolFleet  # noqa: E402
from support.runtimes import Runtime  # noqa: E402
from workflows import AGENTS, NAMESPACES, POLICIES, TASKS, list_all  # noqa: E402

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
LEASES = Resource("coordination.k8s.io", "v1", "leases")
LEASE = "soak-operator"
TIMINGS = (4.0, 3.0, 1.0)  # operator lease duration, renew deadline, retry period
AGENT_LEASE_S = 4
RETRY = {"maxAttempts": 10, "backoffSeconds": 1, "maxBackoffSeconds": 2}
RUNTIMES = ("rt-0", "rt-1", "rt-2")
PROXIED_RUNTIMES = ("rt-2",)
POOLS = ("pa", "pb")
MERGE = "application/merge-patch+json"
WORK_S = "2"  # seconds a runtime's handler sleeps: enough work in flight for the faults to hit
POOL_WORK = "1.0,3.0"
Row = tuple[str, str, str, str]
FENCED = (
    "fenced re-runs (a handler finished after its process was killed or hung past its Lease; the operator had "
    "ended that attempt, its report did not land, the task ran again)"
)


@dataclass(frozen=True)
class Profile:
    """How long, how many faults, how often, how much load."""

    name: str
    seconds: float  # the bound on the faulty phase
    faults: int  # stop injecting after this many
    gap: float  # mean seconds between faults (exponential)
    rate: float  # tasks submitted per second
    drain: float  # seconds allowed for the drain
    sampler: float  # CapacitySampler interval
    weights: dict[str, float]


EXPENSIVE = {"leader-kill": 3, "leader-zombie": 3, "apiserver-restart": 1, "net-lease-hang": 1}
CHEAP = {
    "agent-kill": 4, "agent-hang": 3, "agent-zombie": 2, "cordon": 3, "recreate": 4, "burst": 2,
    "net-reset": 2, "net-503": 2, "net-lost": 2, "net-hang": 1, "net-gone": 2, "net-sever": 1,
}  # fmt: skip
PROFILES = {
    "short": Profile("short", 90, 40, 1.5, 3.0, 60, 0.25, {**CHEAP, **EXPENSIVE}),
    # Expensive faults (each restarts an operator or the apiserver) ten times rarer, so that processes
    # live long enough for a memory trend; cheap faults about every second.
    # Load 1 task/s (bursts add about 2/s at this fault rate), so the agents keep up between faults.
    "long": Profile(
        "long", 1800, 1000, 0.6, 1.0, 300, 0.5, {**CHEAP, "burst": 1, **{k: v / 10 for k, v in EXPENSIVE.items()}}
    ),
}


@dataclass
class Incarnation:
    """One Task object: a name, and which time that name was created."""

    name: str
    inc: int
    uid: str = ""
    body: dict[str, Any] | None = None  # its last body: final when retired, or as deleted
    deleted: bool = False  # deleted on purpose (recreate, burst) before it ended

    @property
    def label(self) -> str:
        """`name~inc`: what the check calls it, so two incarnations of a name are two tasks."""
        return f"{self.name}~{self.inc}"


@dataclass
class Outcome:
    """What the soak measured."""

    seed: int
    profile: str
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    submitted: int = 0
    completed: int = 0
    dead_lettered: int = 0
    deleted: int = 0
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    fenced: int = 0
    unrecorded: int = 0  # Succeeded on a pool killed (kill -9) between its report and its record
    endings: Counter[str] = field(default_factory=Counter)  # attempts' endings in the tasks' histories
    violations: list[Violation] = field(default_factory=list)
    sampler_samples: int = 0
    sampler_peak: dict[str, int] = field(default_factory=dict)
    rss: list[tuple[float, str, int, float]] = field(default_factory=list)  # (t, replica, pid, MiB)
    operator_restarts: int = 0
    operator_exits: Counter[int] = field(default_factory=Counter)  # exit codes (-9: our kill -9; 3: stepped down)
    crashes: list[str] = field(default_factory=list)  # agent processes that exited on their own
    drained: bool = False
    unfinished: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """0 lost, 0 doubled, every invariant held, the drain finished."""
        return not self.lost and not self.doubled and not self.violations and self.drained


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def trend(samples: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(first third's median MiB, last third's median MiB, slope in MiB/min between their middles)."""
    third = len(samples) // 3
    first, last = samples[:third], samples[-third:]
    a, b = statistics.median(m for _, m in first), statistics.median(m for _, m in last)
    span = statistics.median(t for t, _ in last) - statistics.median(t for t, _ in first)
    return a, b, (b - a) / span * 60 if span > 0 else 0.0


def incarnations_rss(rss: list[tuple[float, str, int, float]]) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """Samples per process incarnation (replica, pid), in time order."""
    out: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for t, replica, pid, mib in rss:
        if mib > 0:
            out.setdefault((replica, pid), []).append((t, mib))
    return out


class Soak:
    """The processes, the load, the faults and the bookkeeping of one run."""

    def __init__(self, profile: Profile, seed: int, plane: ControlPlane, work: Path) -> None:
        """Everything but the processes, which `start` launches."""
        self.profile, self.seed, self.plane, self.work = profile, seed, plane, work
        self.rng = random.Random(seed)
        self.ns = "soak"
        self.out = Outcome(seed, profile.name)
        self.proxy = FaultProxy(plane.admin_kubeconfig)
        self.kube: KubeApi | None = None
        self.reader = ApiReader(plane.admin_kubeconfig)
        self.operators = OperatorFleet(plane.admin_kubeconfig, work, self.ns)
        self.pools = PoolFleet(plane.admin_kubeconfig, work, self.ns)
        self.runtimes: dict[str, Runtime] = {}
        self.tasks: dict[str, Incarnation] = {}  # name -> its current incarnation
        self.gone: list[Incarnation] = []  # earlier incarnations, and retired ones
        self.busy: set[str] = set()  # targets a fault holds
        self.pending: set[asyncio.Task[None]] = set()
        self.submitted = 0
        self.launched = 0
        self.kills: dict[str, list[float]] = {}  # agent process -> when we sent it kill -9 (time.time())
        self.claimed_at: dict[tuple[str, int], tuple[str, float]] = {}  # (label, attempt) -> (pool, claim time)
        self.stopping = False

    # ------------------------------------------------------------------ set-up
    async def start(self) -> None:
        """Namespaces, policy, the proxy, operators, agents."""
        kubectl = [str(self.plane.binaries.kubectl), f"--kubeconfig={self.plane.admin_kubeconfig}"]
        subprocess.run([*kubectl, "apply", "-f", "-"], input="---\n".join(crd.render().values()), text=True,
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"],
                       check=True, capture_output=True)  # fmt: skip
        await load_config(str(self.plane.admin_kubeconfig))
        self.kube = KubeApi(client.ApiClient(), connections=16)
        for ns in ("qorch-system", self.ns):
            await self.call("POST", NAMESPACES.path(), body={"metadata": {"name": ns}})
        policy = {"apiVersion": "qorch.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "default"},
                  "spec": {"agentGraceSeconds": AGENT_LEASE_S, "breaker": {"failureThreshold": 5,
                                                                           "cooldownSeconds": 5}}}  # fmt: skip
        await self.call("POST", POLICIES.path(), body=policy)
        for pool in POOLS:
            for body in agent_bodies(pool, 2, 2):
                await self.call("POST", AGENTS.path(self.ns), body=body)
        self.proxy.start()
        proxied = self.proxy.kubeconfig(self.work / "proxied.kubeconfig")
        for identity in ("op-a", "op-b"):
            self.operators.start(identity, lease_name=LEASE, timings=TIMINGS, supervised=True, kubeconfig=proxied)
        for name in RUNTIMES:
            self.start_runtime(name)
        for pool in POOLS:
            self.start_pool(pool)
        while sum((a.get("status") or {}).get("phase") == "Ready" for a in await self.agents()) < 7:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        while not self.leader():  # noqa: ASYNC110 - polling the apiserver
            await asyncio.sleep(0.5)

    def start_runtime(self, name: str) -> None:
        """(Re)start one `qorch agent run`, keeping the log of the process before."""
        log = self.work / f"{name}.log"
        if log.exists():
            log.rename(self.work / f"{name}.{time.monotonic_ns()}.log")
        kubeconfig = self.work / "proxied.kubeconfig" if name in PROXIED_RUNTIMES else self.plane.admin_kubeconfig
        self.runtimes[name] = Runtime(
            self.work, kubeconfig, self.ns, name, "--capabilities=code", "--capacity=3",
            f"--lease-seconds={AGENT_LEASE_S}", "--grace-seconds=2",
        )  # fmt: skip

    def start_pool(self, name: str) -> None:
        """(Re)start one simulated pool; its record file is appended to, its old log kept."""
        log = self.work / f"pool-{name}.log"
        if log.exists():
            log.rename(self.work / f"pool-{name}.{time.monotonic_ns()}.log")
        self.pools.started = [p for p in self.pools.started if p.name != name]
        self.pools.start(name, selector=f"pool={name}", work=POOL_WORK, lease_seconds=AGENT_LEASE_S,
                         renew_seconds=1.0, poll_seconds=0.2)  # fmt: skip

    # ------------------------------------------------------------------ API
    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request, retried through transport errors and 5xx/429 (an apiserver restart); ApiError 4xx raised."""
        if self.kube is None:
            raise RuntimeError("not started")
        for attempt in range(120):
            try:
                return await self.kube.call(method, path, timeout=10, **kwargs)
            except ApiError as exc:
                if exc.status < 500 and exc.status != 429:
                    raise
            except KubeError:
                pass
            await asyncio.sleep(min(0.25 * (attempt + 1), 2.0))
        raise RuntimeError(f"{method} {path}: the apiserver did not answer for minutes")

    async def agents(self) -> list[dict[str, Any]]:
        """Every Agent of the namespace."""
        return list((await self.call("GET", AGENTS.path(self.ns)))["items"])

    def leader(self) -> str:
        """The identity holding the operators' Lease ('' if none, or unreadable)."""
        try:
            body = self.reader.get(LEASES.path("qorch-system", LEASE))
        except Exception:  # noqa: BLE001 - during an apiserver restart
            return ""
        return str((body.get("spec") or {}).get("holderIdentity") or "")

    def replica(self, identity: str) -> OperatorProcess | None:
        """The replica with this identity."""
        return next((p for p in self.operators.started if p.identity == identity), None)

    # ------------------------------------------------------------------ load
    def body(self, name: str, inc: int) -> dict[str, Any]:
        """A task: WORK_S of handler work on a runtime (a pool takes POOL_WORK)."""
        return {"apiVersion": "qorch.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
                "spec": {"goal": f"soak {name}", "requires": ["code"], "retry": RETRY,
                         "input": {"sleep": WORK_S, "inc": str(inc)}}}  # fmt: skip

    async def create(self, name: str, inc: int = 0) -> Incarnation:
        """POST a task (a retry finding it there already means the first POST landed)."""
        incarnation = Incarnation(name, inc)
        self.tasks[name] = incarnation
        try:
            created = await self.call("POST", TASKS.path(self.ns), body=self.body(name, inc))
        except ApiError as exc:
            if exc.status != 409:
                raise
            created = await self.call("GET", TASKS.path(self.ns, name))
        incarnation.uid = created["metadata"]["uid"]
        return incarnation

    async def delete(self, incarnation: Incarnation) -> bool:
        """Delete this incarnation (uid precondition), keep the body it had, wait until the name is free.

        Taken out of `tasks` first, so the retirer leaves it alone: a 404 then means our own DELETE landed.
        """
        if self.tasks.get(incarnation.name) is not incarnation:
            return False  # it ended and was retired meanwhile
        del self.tasks[incarnation.name]
        self.gone.append(incarnation)
        incarnation.deleted = True
        options = {"preconditions": {"uid": incarnation.uid}}
        with contextlib.suppress(ApiError):
            body = await self.call("DELETE", TASKS.path(self.ns, incarnation.name), body=options)
            incarnation.body = body if body.get("kind") == "Task" else incarnation.body
        for _ in range(300):
            try:
                await self.call("GET", TASKS.path(self.ns, incarnation.name))
            except ApiError:
                return True
            await asyncio.sleep(0.1)
        self.out.unfinished.append(f"{incarnation.label}: still there 30 s after its DELETE")
        return False

    async def submit(self, until: float) -> None:
        """Tasks at a steady rate until `until` (monotonic) or the stop."""
        step, due = 1 / self.profile.rate, time.monotonic()
        while not self.stopping and time.monotonic() < until:
            await self.create(f"t-{self.submitted:05d}")
            self.submitted += 1
            due += step
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def retire(self) -> None:
        """Keep the final body of each ended task, then delete it: the working set stays steady."""
        for body in await list_all(self.kube, TASKS, self.ns) if self.kube else []:
            name, phase = body["metadata"]["name"], (body.get("status") or {}).get("phase")
            current = self.tasks.get(name)
            if phase not in FINAL_PHASES or current is None or current.uid != body["metadata"]["uid"]:
                continue
            current.body = body
            del self.tasks[name]
            self.gone.append(current)
            with contextlib.suppress(ApiError):
                await self.call("DELETE", TASKS.path(self.ns, name), body={"preconditions": {"uid": current.uid}})

    async def retiring(self) -> None:
        """`retire` every few seconds, for the whole run."""
        while True:
            with contextlib.suppress(KubeError, RuntimeError):
                await self.retire()
            await asyncio.sleep(3)

    async def kubelet(self) -> None:
        """An agent process that exited on its own (not by a fault) is noted, then restarted as a kubelet would."""
        while True:
            await asyncio.sleep(1)
            for name in (*RUNTIMES, *POOLS):
                proc = self.process(name)
                if f"proc:{name}" in self.busy or proc.poll() is None:
                    continue
                log = self.work / (f"{name}.log" if name in self.runtimes else f"pool-{name}.log")
                last = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                self.out.crashes.append(f"{name} exited with {proc.returncode}: {''.join(last)[:200]}")
                if name in self.runtimes:
                    self.start_runtime(name)
                else:
                    self.start_pool(name)

    async def sample_rss(self) -> None:
        """Both replicas' VmRSS every second."""
        began = time.monotonic()
        while True:
            for proc in self.operators.started:
                pid = proc.popen.pid
                self.out.rss.append((time.monotonic() - began, proc.identity, pid, rss_mib(pid)))
            await asyncio.sleep(1)

    # ------------------------------------------------------------------ faults
    def targets(self, kind: str) -> list[tuple[str, ...]]:
        """The busy-keys each candidate target of `kind` would hold (empty: none free now)."""
        free = self.busy.isdisjoint
        if kind in ("leader-kill", "leader-zombie", "apiserver-restart", "net-lease-hang"):
            return [("control",)] if free({"control"}) else []
        if kind in ("agent-kill", "agent-hang", "agent-zombie"):
            down = sum(1 for key in self.busy if key.startswith("proc:"))
            return [] if down >= 2 else [(f"proc:{n}",) for n in (*RUNTIMES, *POOLS) if free({f"proc:{n}"})]
        if kind.startswith("net-"):
            return [("net",)] if free({"net"}) else []
        if kind == "cordon":
            names = [*RUNTIMES, *(f"{p}-{i}" for p in POOLS for i in range(2))]
            return [("cordon", f"agent:{n}") for n in names] if free({"cordon"}) else []
        if kind == "recreate":
            return [(f"task:{n}",) for n in sorted(self.tasks) if free({f"task:{n}"})]
        return [("burst",)] if free({"burst"}) else []

    def draw(self) -> tuple[str, tuple[str, ...]] | None:
        """A fault kind by the profile's weights, among those with a free target, and its target."""
        kinds = [k for k in sorted(self.profile.weights) if self.targets(k)]
        if not kinds:
            return None
        kind = self.rng.choices(kinds, weights=[self.profile.weights[k] for k in kinds])[0]
        return kind, self.rng.choice(self.targets(kind))

    async def inject(self, until: float) -> None:
        """Faults at random until the count or the time bound."""
        while time.monotonic() < until and self.launched < self.profile.faults:
            await asyncio.sleep(self.rng.expovariate(1 / self.profile.gap))
            drawn = self.draw()
            if drawn is None:
                continue
            kind, keys = drawn
            self.busy |= set(keys)
            self.launched += 1
            task = asyncio.create_task(self.fault(kind, keys))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def fault(self, kind: str, keys: tuple[str, ...]) -> None:
        """Run one fault to its end (restart, SIGCONT, uncordon, ...); then its targets are free again."""
        target = keys[-1].split(":", 1)[-1]
        try:
            if await getattr(self, "fault_" + kind.replace("-", "_"))(target):
                self.out.faults[kind] += 1
                with (self.work / "faults.log").open("a") as out:
                    out.write(f"{time.time():.3f} {kind} {target}\n")
            else:
                self.launched -= 1  # no target after all (no leader, say): not a fault
        except Exception as exc:  # noqa: BLE001 - a fault that could not run is reported, not fatal
            self.out.unfinished.append(f"{kind} {target}: {exc!r}")
        finally:
            self.busy -= set(keys)

    async def await_new_leader(self, old: str, within: float = 30) -> None:
        """Until someone other than `old` holds the Lease (or `within` seconds)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            who = await asyncio.to_thread(self.leader)
            if who and who != old:
                return
            await asyncio.sleep(0.2)

    async def leading(self) -> OperatorProcess | None:
        """The leading replica's process, if any leads."""
        return self.replica(await asyncio.to_thread(self.leader))

    async def fault_leader_kill(self, _: str) -> bool:
        """Kill -9 the leader; its supervisor restarts it a second later; wait for the takeover."""
        proc = await self.leading()
        if proc is None:
            return False
        os.kill(proc.popen.pid, signal.SIGKILL)
        await self.await_new_leader(proc.identity)
        return True

    async def fault_leader_zombie(self, _: str) -> bool:
        """SIGSTOP the leader past its lease, then SIGCONT: it must notice and step down."""
        proc = await self.leading()
        if proc is None:
            return False
        pid = proc.popen.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(TIMINGS[0] + 2)
        finally:
            os.kill(pid, signal.SIGCONT)
        await self.await_new_leader(proc.identity, within=5)
        return True

    async def fault_apiserver_restart(self, _: str) -> bool:
        """Stop kube-apiserver, wait, start it again (the same etcd)."""
        await asyncio.to_thread(self.plane.restart_apiserver, downtime=self.rng.uniform(0.5, 2.0))
        await asyncio.sleep(3)
        return True

    async def fault_net_lease_hang(self, _: str) -> bool:
        """Hang every request on the operators' Lease past the renew deadline: the leader steps down."""
        old = await asyncio.to_thread(self.leader)
        with self.proxy.fault(Fault("hang", path=f"/leases/{LEASE}", seconds=60)):
            await asyncio.sleep(TIMINGS[1] + 2)
        await self.await_new_leader(old or "-", within=15)
        return True

    def process(self, name: str) -> subprocess.Popen[bytes]:
        """The current process of a runtime or a pool."""
        if name in self.runtimes:
            return self.runtimes[name].popen
        pool: Pool = next(p for p in self.pools.started if p.name == name)
        return pool.popen

    async def fault_agent_kill(self, name: str) -> bool:
        """Kill -9 an agent process (a runtime, or a pool of two agents), restart it 0.5-2 s later."""
        proc = self.process(name)
        self.kills.setdefault(name, []).append(time.time())
        proc.kill()
        await asyncio.to_thread(proc.wait)
        await asyncio.sleep(self.rng.uniform(0.5, 2.0))
        if name in self.runtimes:
            self.start_runtime(name)
        else:
            self.start_pool(name)
        return True

    async def stop_for(self, name: str, seconds: float) -> bool:
        """SIGSTOP an agent process for `seconds`, then SIGCONT."""
        pid = self.process(name).pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return True

    async def fault_agent_hang(self, name: str) -> bool:
        """A hang shorter than the agent's Lease: nobody should notice."""
        return await self.stop_for(name, self.rng.uniform(1.0, 2.0))

    async def fault_agent_zombie(self, name: str) -> bool:
        """A hang past the agent's Lease: its attempts are lost and retried; its late finishes must not land."""
        await self.stop_for(name, AGENT_LEASE_S + 3)
        await asyncio.sleep(2)
        return True

    async def fault_cordon(self, name: str) -> bool:
        """Cordon an agent for 2-5 s (running work finishes, no new work), then uncordon it."""
        path = AGENTS.path(self.ns, name)
        await self.call("PATCH", path, body={"spec": {"cordoned": True}}, content_type=MERGE)
        try:
            await asyncio.sleep(self.rng.uniform(2.0, 5.0))
        finally:
            await self.call("PATCH", path, body={"spec": {"cordoned": False}}, content_type=MERGE)
        return True

    async def fault_recreate(self, name: str) -> bool:
        """Delete a task in flight and create it again under the same name (a new uid)."""
        old = self.tasks.get(name)
        if old is None or not old.uid:
            return False
        if not await self.delete(old):
            return False
        await self.create(name, old.inc + 1)
        return True

    async def fault_burst(self, _: str) -> bool:
        """8-15 tasks at once, then a third of them deleted (some already assigned or running)."""
        names = [f"b-{self.submitted + i:05d}" for i in range(self.rng.randint(8, 15))]
        self.submitted += len(names)
        made = await asyncio.gather(*(self.create(n) for n in names))
        await asyncio.sleep(self.rng.uniform(0.0, 1.5))
        await asyncio.gather(*(self.delete(i) for i in self.rng.sample(made, len(made) // 3)))
        return True

    async def net(self, fault: Fault, seconds: float = 3.0) -> bool:
        """One proxy fault for `seconds` (or its `times`), then removed."""
        with self.proxy.fault(fault):
            await asyncio.sleep(seconds)
        return True

    async def fault_net_reset(self, _: str) -> bool:
        """Connections reset on task writes."""
        return await self.net(Fault("reset", method="PATCH", path="/tasks/", times=self.rng.randint(3, 10)))

    async def fault_net_503(self, _: str) -> bool:
        """503s on task writes."""
        return await self.net(Fault("status", method="PATCH", path="/tasks/", times=self.rng.randint(3, 10)))

    async def fault_net_lost(self, _: str) -> bool:
        """Task writes applied, their answers lost."""
        return await self.net(Fault("lost", method="PATCH", path="/tasks/", times=self.rng.randint(3, 10)))

    async def fault_net_hang(self, _: str) -> bool:
        """A few task writes hung for 2 s, then their connections closed."""
        return await self.net(Fault("hang", method="PATCH", path="/tasks/", times=3, seconds=2))

    async def fault_net_gone(self, _: str) -> bool:
        """A 410 Gone on the next task watch."""
        self.proxy.sever("/tasks")
        return await self.net(Fault("gone", path="/tasks", watch=True, times=1))

    async def fault_net_sever(self, _: str) -> bool:
        """Every watch and request in flight through the proxy closed at once."""
        self.proxy.sever("")
        await asyncio.sleep(1)
        return True

    # ------------------------------------------------------------------ the run
    async def drain(self) -> bool:
        """No more faults or load: wait until every task ended and was retired."""
        deadline = time.monotonic() + self.profile.drain
        while self.tasks and time.monotonic() < deadline:  # noqa: ASYNC110 - the retirer empties it
            await asyncio.sleep(1)
        with contextlib.suppress(KubeError, RuntimeError):
            await self.retire()
        return not self.tasks

    async def run(self) -> Outcome:
        """Start, load with faults, drain, account."""
        await self.start()
        began = time.monotonic()
        until = began + self.profile.seconds
        background = [asyncio.create_task(c) for c in (self.retiring(), self.sample_rss(), self.kubelet())]
        with CapacitySampler(self.reader, self.ns, interval=self.profile.sampler) as sampler:
            submitter = asyncio.create_task(self.submit(until))
            await self.inject(until)
            self.stopping = True
            await submitter
            while self.pending:
                await asyncio.gather(*list(self.pending))
            self.proxy.clear()
            progress(f"{self.out.faults.total()} faults in {time.monotonic() - began:.0f} s; draining")
            self.out.drained = await self.drain()
        for task in background:
            task.cancel()
        self.out.seconds = time.monotonic() - began
        self.out.sampler_samples, self.out.sampler_peak = sampler.samples, dict(sampler.peak)
        self.out.violations += sampler.violations
        self.out.submitted = self.submitted
        self.out.operator_restarts = sum(p.restarts for p in self.operators.started)
        self.out.operator_exits = Counter(code for p in self.operators.started for code in p.exit_codes)
        await self.account()
        return self.out

    def stop(self) -> None:
        """Every process this run started, and the proxy."""
        for proc in self.operators.started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.popen.pid, signal.SIGCONT)
        self.operators.stop_all()
        self.pools.stop_all()
        for runtime in self.runtimes.values():
            if runtime.popen.poll() is None:
                runtime.popen.send_signal(signal.SIGCONT)
                runtime.stop(signal.SIGKILL)
        self.proxy.stop()

    # ------------------------------------------------------------------ the accounting
    def completions(self, everything: list[Incarnation]) -> tuple[list[dict[str, Any]], Counter[tuple[str, int]]]:
        """Every completed attempt the runtimes' handlers and the pools recorded, and starts per attempt."""
        by_uid = {i.uid: i for i in everything}
        by_inc = {(i.name, i.inc): i for i in everything}
        done: list[dict[str, Any]] = []
        starts: Counter[tuple[str, int]] = Counter()
        for runtime in self.runtimes.values():
            for event in ("called", "finished"):
                for call in runtime.handled(event):
                    incarnation = by_inc.get((call["task"], int(call["input"]["inc"])))
                    if incarnation is None:
                        self.out.unfinished.append(f"{runtime.log.stem} ran an unknown task: {call}")
                        continue
                    key = (incarnation.label, int(call["attempt"]))
                    if event == "called":
                        starts[key] += 1
                    else:
                        done.append({"task": key[0], "attempt": key[1], "agent": call["agent"], "of": incarnation})
        for record in self.pools.records():
            incarnation = by_uid.get(record["uid"])
            if incarnation is None:
                self.out.unfinished.append(f"a pool ran an unknown task: {record}")
                continue
            key = (incarnation.label, int(record["attempt"]))
            if record["event"] == "claim":
                starts[key] += 1
                self.claimed_at[key] = (str(record["agent"]).rsplit("-", 1)[0], float(record["time"]))
            elif record["event"] == "finish" and not record.get("recovered"):
                outcome = "Succeeded" if record.get("ok") else "Failed"
                done.append({"task": key[0], "attempt": key[1], "agent": record["agent"], "landed": outcome})
        return done, starts

    def classify(self, completion: dict[str, Any]) -> str:
        """Succeeded, or why this finished attempt did not count (fenced: the operator had ended it)."""
        if "landed" in completion:
            return str(completion["landed"])
        incarnation: Incarnation = completion.pop("of")
        ended = next(
            (h.get("outcome") for h in _history(incarnation.body) if h.get("attempt") == completion["attempt"]
             and h.get("outcome")), None,
        )  # fmt: skip
        if ended in (None, "Succeeded"):
            return "Deleted" if ended is None and incarnation.deleted else "Succeeded"
        self.out.fenced += 1
        return f"Fenced:{ended}"

    async def account(self) -> None:
        """Lost, doubled, fenced, and I1-I4 over every incarnation (retired bodies and what is left)."""
        for name, incarnation in list(self.tasks.items()):  # left after a failed drain
            with contextlib.suppress(ApiError):
                incarnation.body = await self.call("GET", TASKS.path(self.ns, name))
            self.out.unfinished.append(f"{incarnation.label} still {_phase(incarnation.body)!r} after the drain")
        everything = [*self.gone, *self.tasks.values()]
        done, starts = self.completions(everything)
        for completion in done:
            completion["outcome"] = self.classify(completion)
        self.out.doubled = doubled(done, starts, everything)
        # A pool writes its finish record after its report lands: kill -9 in between leaves a Succeeded
        # attempt with only a claim on record. Excused only when that pool was killed within 5 s of the claim.
        killed = {
            key
            for key, (pool, at) in self.claimed_at.items()
            if any(at <= k <= at + 5 for k in self.kills.get(pool, ()))
        }
        self.out.lost = lost(done, everything, killed)
        self.out.unrecorded = len(lost(done, everything)) - len(self.out.lost)
        kept = [i for i in everything if not i.deleted]
        phases = Counter(_phase(i.body) for i in kept)
        self.out.completed, self.out.dead_lettered = phases["Succeeded"], phases["DeadLettered"]
        self.out.deleted = sum(i.deleted for i in everything)
        bodies = [relabel(i) for i in kept if i.body]
        checked = check_bodies(
            bodies, await self.agents(), created=[i.label for i in kept],
            deleted=[i.label for i in everything if i.deleted], completions=done,
        )  # fmt: skip
        self.out.violations += checked.violations
        self.out.endings = Counter(h["outcome"] for i in everything for h in _history(i.body) if h.get("outcome"))
        evidence = [{"label": i.label, "uid": i.uid, "deleted": i.deleted, "body": i.body} for i in everything]
        (self.work / "incarnations.json").write_text(json.dumps(evidence))
        (self.work / "completions.json").write_text(json.dumps(done))


def _history(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(((body or {}).get("status") or {}).get("history") or ())


def _phase(body: dict[str, Any] | None) -> str:
    return str(((body or {}).get("status") or {}).get("phase") or "")


def relabel(incarnation: Incarnation) -> dict[str, Any]:
    """Its last body, named `name~inc`, so the check tells incarnations of one name apart."""
    body = json.loads(json.dumps(incarnation.body))
    body["metadata"]["name"] = incarnation.label
    return body


def doubled(done: list[dict[str, Any]], starts: Counter[tuple[str, int]], everything: list[Incarnation]) -> list[str]:
    """Attempts started or completed twice; incarnations with two successful completions or two Succeeded entries."""
    found = [f"{t}#{a} started {n} times" for (t, a), n in sorted(starts.items()) if n > 1]
    finished = Counter((c["task"], c["attempt"]) for c in done)
    found += [f"{t}#{a} completed {n} times" for (t, a), n in sorted(finished.items()) if n > 1]
    wins = Counter(c["task"] for c in done if c["outcome"] == "Succeeded")
    found += [f"{t} succeeded in {n} completions" for t, n in sorted(wins.items()) if n > 1]
    for incarnation in everything:
        entries = [h for h in _history(incarnation.body) if h.get("outcome") == "Succeeded"]
        if len(entries) > 1:
            found.append(f"{incarnation.label}: {len(entries)} Succeeded attempts in its history")
    return found


def lost(
    done: list[dict[str, Any]], everything: list[Incarnation], killed: set[tuple[str, int]] | None = None
) -> list[str]:
    """Created, not deleted on purpose, and not Succeeded; or Succeeded with no completed attempt on record.

    `killed`: attempts whose pool was killed right after claiming them (their finish record may be missing).
    """
    finished = {(c["task"], c["attempt"]) for c in done if c["outcome"] == "Succeeded"} | (killed or set())
    found: list[str] = []
    for incarnation in everything:
        if incarnation.deleted:
            continue
        phase = _phase(incarnation.body)
        won = [h.get("attempt") for h in _history(incarnation.body) if h.get("outcome") == "Succeeded"]
        if phase != "Succeeded":
            found.append(f"{incarnation.label}: {phase or 'never seen final'}")
        elif not any((incarnation.label, a) in finished for a in won):
            found.append(f"{incarnation.label}: Succeeded (attempt {won}) with no completed attempt on record")
    return found


# ---------------------------------------------------------------------- the report
def memory_rows(out: Outcome) -> list[Row]:
    """Peak RSS, and the trend of the longest-lived operator processes."""
    series = incarnations_rss(out.rss)
    peak = max((m for _, _, _, m in out.rss), default=0.0)
    lived = sorted(series.items(), key=lambda kv: kv[1][-1][0] - kv[1][0][0], reverse=True)
    trends = []
    for (replica, pid), samples in lived[:2]:
        if len(samples) >= 9:
            first, last, slope = trend(samples)
            span = samples[-1][0] - samples[0][0]
            trends.append(f"{replica} pid {pid}, {span:.0f} s: {first:.0f} → {last:.0f} MiB ({slope:+.2f} MiB/min)")
    return [
        (
            (
                f"operator peak RSS (both replicas, every 1 s; {len(series)} process incarnations, "
                f"{out.operator_restarts} restarts, exit codes {dict(sorted(out.operator_exits.items()))})"
            ),
            f"{peak:.0f} MiB",
            "reported",
            "—",
        ),
        (
            "operator RSS trend, longest-lived incarnations: median of the first third → last third (slope)",
            "; ".join(trends) or "too few samples",
            "reported",
            "—",
        ),
    ]


def rows(out: Outcome, profile: Profile) -> list[Row]:
    """The table."""
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(out.faults.items()))
    invariants = len(out.violations)
    sampled = f"{out.sampler_samples} samples, every {profile.sampler:g} s"
    endings = ", ".join(f"{k} {n}" for k, n in sorted(out.endings.items()))
    return [
        (f"faults injected (seed {out.seed}): {kinds}", f"{out.faults.total()}", f"{profile.faults}",
         "met" if out.faults.total() >= profile.faults else "MISSED"),
        (f"tasks submitted (steady {profile.rate:g}/s, plus bursts); Succeeded; deleted on purpose; DeadLettered",
         f"{out.submitted}; {out.completed}; {out.deleted}; {out.dead_lettered}", "reported", "—"),
        ("lost (not deleted on purpose, and not Succeeded after the drain, or Succeeded with no completion on record)",
         f"{len(out.lost)}", "0", "met" if not out.lost else "MISSED"),
        ("doubled (an attempt started or completed twice; a task incarnation succeeding twice)",
         f"{len(out.doubled)}", "0", "met" if not out.doubled else "MISSED"),
        (FENCED, f"{out.fenced}", "reported", "—"),
        (("Succeeded attempts a pool reported but could not record (kill -9 of the pool within 5 s of the claim, "
          "between its report landing and its record line)"), f"{out.unrecorded}", "reported", "—"),
        ("attempts' endings in the tasks' histories (Lost: its agent was judged dead)", endings, "reported", "—"),
        (f"invariants I1-I4 over every incarnation + CapacitySampler ({sampled})", f"{invariants} violations",
         "0", "met" if not invariants else "MISSED"),
        ("agent processes that exited on their own (restarted, as a kubelet would)", f"{len(out.crashes)}", "0",
         "met" if not out.crashes else "MISSED"),
        (f"drain after the last fault (≤ {profile.drain:g} s)", "done" if out.drained else "NOT DONE", "done",
         "met" if out.drained else "MISSED"),
        *memory_rows(out),
    ]  # fmt: skip


async def soak(profile: Profile, seed: int, work: Path) -> Outcome:
    """One soak on a fresh control plane; processes stopped at the end."""
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # the proxy's own resets are the point
    with ControlPlane() as plane:
        run = Soak(profile, seed, plane, work)
        try:
            return await run.run()
        finally:
            run.stop()
            if run.kube is not None:
                await run.kube.close()


def interrupted(*_: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so the run stops what it started."""
    raise KeyboardInterrupt


def main() -> None:
    """Run a profile; print the table, or write it into its marked section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big") % 10**6
    profile = PROFILES[args.profile]
    work = Path(tempfile.mkdtemp(prefix="qorch-soak-"))
    progress(f"soak profile {profile.name}, seed {seed}, logs in {work}")
    signal.signal(signal.SIGTERM, interrupted)  # `timeout`, say: stop every process started, as on Ctrl-C
    began = time.perf_counter()
    out = asyncio.run(soak(profile, seed, work))
    command = " ".join(["bench/soak.py", f"--profile={profile.name}", f"--seed={seed}"])
    caption = (
        f"Command: `.venv/bin/python {command}` ({dt.datetime.now(dt.UTC).date()}, "
        f"{time.perf_counter() - began:.0f} s in all, {out.seconds:.0f} s from the first fault to the end of the "
        f"drain; one local kube-apiserver + etcd, two operator replicas, three agent runtimes and two simulated "
        f"pools on the same {os.cpu_count()} cores)."
    )
    text = report.render(BEGIN, END, caption, rows(out, profile))
    if args.write:
        report.write_section(args.write, BEGIN, END, "Soak", text)
    print(text)
    for line in [
        *out.lost[:20],
        *out.doubled[:20],
        *map(str, out.violations[:20]),
        *out.unfinished[:20],
        *out.crashes[:20],
    ]:
        print(f"  {line}")
    print(f"logs: {work}")
    sys.exit(0 if out.ok else 1)


if __name__ == "__main__":
    main()
